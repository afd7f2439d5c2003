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
    """AdamW with weight decay on matrices only (not on biases and norm gains), in groups of a fixed
    order: [0] matrices, [1] vectors, then under muP or a depth parametrization [2] the hidden
    matrices (model.gpt.hidden_matrices) and, where depth changes the blocks' rate, [3] the
    blocks' vectors. The hidden matrices' rate is scaled by base/width under muP and by
    depth_lr_scale under a depth parametrization (`lr_scale`, which set_lr keeps whatever the
    schedule or PBT sets), and their weight decay by the inverse, so that each matrix's decay per
    step (torch's AdamW decays by lr x weight_decay) is the base model's at every width and depth,
    as Microsoft's mup (MuAdamW) applies muP; embeddings, the head and the other vectors keep the
    rate and the decay."""
    from slm_tune.model.gpt import hidden_matrices

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scaled = {id(p) for p in hidden_matrices(model)} if c.parametrization == "mup" or c.depth_lr_scale != 1.0 else set()
    block_vectors = {id(p) for n, p in named if n.startswith("blocks.") and p.dim() < 2} if c.depth_lr_scale != 1.0 else set()
    params = [p for _, p in named]
    groups = [
        {"params": [p for p in params if p.dim() >= 2 and id(p) not in scaled], "weight_decay": c.weight_decay},
        {"params": [p for p in params if p.dim() < 2 and id(p) not in block_vectors], "weight_decay": 0.0},
    ]
    if scaled:
        groups.append({"params": [p for p in params if id(p) in scaled], "weight_decay": hidden_decay(c),
                       "lr_scale": hidden_lr_scale(c)})
    if block_vectors:
        groups.append({"params": [p for p in params if id(p) in block_vectors], "weight_decay": 0.0,
                       "lr_scale": c.depth_lr_scale})
    return torch.optim.AdamW(groups, lr=c.learning_rate, betas=(c.beta1, c.beta2), fused=True)


def hidden_lr_scale(c: ExperimentConfig) -> float:
    """The hidden matrices' rate over learning_rate: base/width (muP) x depth_lr_scale."""
    return c.depth_lr_scale / c.width_mult


def hidden_decay(c: ExperimentConfig) -> float:
    """The hidden matrices' weight decay: weight_decay / hidden_lr_scale, so lr x decay stays the base's."""
    return c.weight_decay / hidden_lr_scale(c)


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
    for i, group in enumerate(optimizer.param_groups):  # make_optimizer's order
        if i == 0:
            group["weight_decay"] = c.weight_decay
        elif i == 2:
            group["weight_decay"] = hidden_decay(c)
    state.setdefault("config_changes", []).append(
        {"iteration": state["iteration"], "trial": c.name, "from": saved.get("name"), "changes": changes})
