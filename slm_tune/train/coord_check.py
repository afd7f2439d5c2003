"""The coordinate check (Yang et al. 2022, the standard test of a muP implementation): train a few
Adam steps at several widths, fixed depth, and record the mean absolute value of every layer's
output (the embedding, each block's attention and MLP, the logits) at each step. Under muP each
curve is flat in width; under sp the logits (and the hidden outputs, as Adam's steps add up)
grow with it. `slopes` fits each curve's log-log slope against width."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from slm_tune.config import ExperimentConfig
from slm_tune.model.gpt import GPT
from slm_tune.train.optimizer import make_optimizer, set_lr

WIDTHS = (64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class CoordCheck:
    """What to run: widths from base (its depth, heads and data), `steps` Adam steps at `lr`,
    the mean over `seeds` models; muP's base width is the smallest width."""

    base: ExperimentConfig
    widths: tuple[int, ...] = WIDTHS
    steps: int = 4
    lr: float = 1e-2
    seeds: int = 2

    def config(self, parametrization: str, width: int) -> ExperimentConfig:
        """The model at one width (raises UserError where the shape is refused)."""
        return self.base.replace(n_embd=width, parametrization=parametrization, mup_base_width=self.widths[0],
                                 dropout=0.0)


def _layer_hooks(model: GPT, record: dict[str, list[float]]) -> list:
    def keep(name: str):
        def hook(module, inputs, output):
            record.setdefault(name, []).append(float(output.detach().float().abs().mean()))
        return hook

    handles = [model.wte.register_forward_hook(keep("embedding"))]
    for i, block in enumerate(model.blocks):
        handles.append(block.attn.register_forward_hook(keep(f"attention.{i}")))
        handles.append(block.mlp.register_forward_hook(keep(f"mlp.{i}")))
    return handles


def _run_one(c: ExperimentConfig, check: CoordCheck, x: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    """One model: each layer's mean |output| at each of the first steps (step 1 is at init)."""
    torch.manual_seed(c.seed)
    model = GPT(c)
    optimizer = make_optimizer(model, c)
    record: dict[str, list[float]] = {}
    handles = _layer_hooks(model, record)
    for _ in range(check.steps):
        logits = model.output(model.hidden(x))
        record.setdefault("logits", []).append(float(logits.detach().abs().mean()))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        set_lr(optimizer, check.lr)
        optimizer.step()
    for handle in handles:
        handle.remove()
    return record


def run_coord_check(check: CoordCheck, tokens: np.ndarray,
                    progress: Callable[[str], None] | None = None) -> list[dict]:
    """Rows {parametrization, width, step, layer, mean_abs} for sp and muP at every width."""
    from slm_tune.train.evaluate import batch

    rng = np.random.default_rng(0)
    c0 = check.base
    x, y = batch(tokens, rng.integers(0, len(tokens) - c0.block_size - 1, c0.batch_size), c0.block_size)
    rows = []
    for parametrization in ("sp", "mup"):
        for width in check.widths:
            c = check.config(parametrization, width)
            runs = [_run_one(c.replace(seed=c0.seed + s), check, x, y) for s in range(check.seeds)]
            for layer in runs[0]:
                for step in range(check.steps):
                    value = float(np.mean([r[layer][step] for r in runs]))
                    rows.append({"parametrization": parametrization, "width": width, "step": step + 1,
                                 "layer": layer, "mean_abs": value})
            if progress:
                progress(f"coord check: {parametrization} at width {width} done")
    return rows


def slopes(rows: list[dict]) -> dict[tuple[str, str, int], float]:
    """(parametrization, layer, step) -> the log-log slope of mean |output| against width."""
    groups: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for r in rows:
        groups.setdefault((r["parametrization"], r["layer"], r["step"]), []).append((r["width"], r["mean_abs"]))
    return {key: float(np.polyfit(np.log([w for w, _ in pts]), np.log([v for _, v in pts]), 1)[0])
            for key, pts in groups.items()}
