"""The optimisation: AdamW's parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from slm_tune.config import ExperimentConfig


def lr_at(c: ExperimentConfig, it: int) -> float:
    """Linear warmup, then cosine decay to learning_rate * min_lr_ratio at max_iters."""
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / (c.warmup_iters + 1)
    span = max(1, c.max_iters - c.warmup_iters)
    progress = min(1.0, (it - c.warmup_iters) / span)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (c.learning_rate - c.min_lr)


def make_optimizer(model: torch.nn.Module, c: ExperimentConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and norm gains). Under muP the
    hidden matrices (model.gpt.hidden_matrices) are a group of their own whose learning rate is
    scaled by base/width (`lr_scale`, which set_lr keeps whatever the schedule or PBT sets);
    embeddings, the head, norms and biases keep the rate."""
    from slm_tune.model.gpt import hidden_matrices

    params = [p for p in model.parameters() if p.requires_grad]
    scaled = {id(p) for p in hidden_matrices(model)} if c.parametrization == "mup" else set()
    groups = [
        {"params": [p for p in params if p.dim() >= 2 and id(p) not in scaled], "weight_decay": c.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if scaled:
        groups.append({"params": [p for p in params if id(p) in scaled], "weight_decay": c.weight_decay,
                       "lr_scale": 1.0 / c.width_mult})
    return torch.optim.AdamW(groups, lr=c.learning_rate, betas=(c.beta1, c.beta2), fused=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def follow_new_config(c: ExperimentConfig, saved: dict[str, Any], state: dict[str, Any],
                      optimizer: torch.optim.AdamW) -> None:
    """Continue another config's weights under `c` (PBT's exploit: a trial takes a better trial's
    checkpoint with perturbed settings). The schedule already follows `c` (lr_at reads it); the
    optimizer's own copies of the settings are set from it here, and the change is recorded:
    the list is the weights' lineage (a donor's own earlier exploits come with its checkpoint)."""
    changes = {k: [saved[k], v] for k, v in c.to_dict().items()
               if k not in ("name", "description") and k in saved and saved[k] != v}
    if not changes and saved.get("name", c.name) == c.name:
        return
    for group in optimizer.param_groups:
        group["betas"] = (c.beta1, c.beta2)
    for i, group in enumerate(optimizer.param_groups):
        if i == 0 or "lr_scale" in group:  # the matrices (make_optimizer)
            group["weight_decay"] = c.weight_decay
    state.setdefault("config_changes", []).append(
        {"iteration": state["iteration"], "trial": c.name, "from": saved.get("name"), "changes": changes})
