"""The optimisation: AdamW's parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from slm_tune.config import ExperimentConfig
from slm_tune.errors import UserError


def lr_at(c: ExperimentConfig, it: int) -> float:
    """Linear warmup, then cosine decay to learning_rate * min_lr_ratio at max_iters."""
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / (c.warmup_iters + 1)
    span = max(1, c.max_iters - c.warmup_iters)
    progress = min(1.0, (it - c.warmup_iters) / span)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (c.learning_rate - c.min_lr)


ADAM_EPS = 1e-8  # Adam's epsilon at the base width and depth (torch's default)


def make_optimizer(model: torch.nn.Module, c: ExperimentConfig) -> torch.optim.AdamW:
    """AdamW with one parameter group per distinct (rate scale, decay scale, epsilon) of
    `param_settings`, groups in a fixed order: first the embeddings and head, then the vectors
    outside the blocks, then the blocks' matrices (one group per fan-in ratio), then the blocks'
    vectors; a kind shares the group of an earlier one with the same settings (under sp without a
    depth parametrization: [0] every matrix, [1] every vector). The groups follow the shape only,
    never a setting PBT perturbs, so a donor's optimizer state fits (load_optimizer_state). A
    group's `lr_scale` is kept by set_lr whatever rate the schedule or PBT sets; its weight decay
    is weight_decay x its decay scale."""
    from slm_tune.model.gpt import hidden_matrices

    fan_in = {id(p): mult for p, mult in hidden_matrices(model)}
    found: dict[tuple[float, float, float], list] = {}  # settings -> [kind rank, first index, params]
    for i, (name, p) in enumerate((n, p) for n, p in model.named_parameters() if p.requires_grad):
        matrix, in_block = p.dim() >= 2, name.startswith("blocks.")
        entry = found.setdefault(param_settings(c, matrix, in_block, fan_in.get(id(p), 1.0)), [4, i, []])
        entry[0] = min(entry[0], (0 if matrix else 1) + (2 if in_block else 0))
        entry[2].append(p)
    groups = [{"params": params, "lr_scale": rate, "weight_decay": c.weight_decay * decay, "eps": eps}
              for (rate, decay, eps), (_, _, params) in sorted(found.items(), key=lambda kv: kv[1][:2])]
    return torch.optim.AdamW(groups, lr=c.learning_rate, betas=(c.beta1, c.beta2), fused=True)


def param_settings(c: ExperimentConfig, matrix: bool, in_block: bool, fan_in_mult: float = 1.0) -> tuple[float, float, float]:
    """One parameter's (rate scale, weight-decay scale, Adam's epsilon): CompleteP's table 1 and its
    eq. 40 (Dey et al. 2025, as EleutherAI's nanoGPT-mup completep branch applies them), with
    muP's width rule per matrix (Microsoft mup's MuAdamW). With m_N = width_mult, m_L = depth_mult,
    alpha the depth parametrization's (DEPTH_ALPHA) and r a block matrix's fan_in_mult (its fan-in
    over the base model's; m_N but for the MLP's down-projection, mlp_width_mult):
    - a block's matrices: rate x m_L^(alpha-1) / r, decay x r (so lr x decay is the base's x
      m_L^(alpha-1), no depth term in the decay), epsilon / m_N x m_L^-alpha;
    - a block's vectors (norm gains, biases): rate x m_L^(alpha-1), no decay, epsilon / m_N x m_L^-alpha;
    - the embeddings and head: rate, decay, epsilon / m_N; the final norm: rate, no decay, epsilon / m_N.
    Under sp without a depth parametrization every factor is 1. The epsilon outside the blocks is
    this project's choice: table 1 gives epsilon only for the residual blocks, and nanoGPT-mup
    scales one global epsilon (embeddings too, by m_L^-alpha as well) on its completep branch only."""
    eps = ADAM_EPS / c.width_mult * (c.branch_multiplier if in_block else 1.0)  # m_L^-alpha is the branch's
    if not in_block:
        return 1.0, 1.0 if matrix else 0.0, eps
    if not matrix:
        return c.depth_lr_scale, 0.0, eps
    return c.depth_lr_scale / fan_in_mult, fan_in_mult, eps


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """A checkpoint's optimizer state (moments, step counts) under this run's own group settings:
    torch's load_state_dict takes the saved groups' settings too, which are the config that saved
    them, not this run's (PBT's exploit perturbs the decay and betas)."""
    own = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(saved)
    except ValueError as e:  # another number or size of groups: the layout of an older slm-tune
        raise UserError(f"the checkpoint's optimizer state does not fit this run's parameter groups ({e}); it "
                        "was saved by an older slm-tune: start the run without resuming it") from None
    for group, settings in zip(optimizer.param_groups, own):
        group.update(settings)


def follow_new_config(c: ExperimentConfig, saved: dict[str, Any], state: dict[str, Any]) -> None:
    """Record continuing another config's weights under `c` (PBT's exploit: a trial takes a better
    trial's checkpoint with perturbed settings). The schedule follows `c` (lr_at reads it) and the
    optimizer's groups are `c`'s (load_optimizer_state); the list of changes is the weights'
    lineage (a donor's own earlier exploits come with its checkpoint)."""
    changes = {k: [saved[k], v] for k, v in c.to_dict().items()
               if k not in ("name", "description") and k in saved and saved[k] != v}
    if not changes and saved.get("name", c.name) == c.name:
        return
    state.setdefault("config_changes", []).append(
        {"iteration": state["iteration"], "trial": c.name, "from": saved.get("name"), "changes": changes})
