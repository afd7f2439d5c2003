"""Batches of training and validation windows, and the evaluation of a model on fixed ones."""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from slm_tune.config import ExperimentConfig

EVAL_SEED = 1234  # the validation batches depend only on the data and the batch shape


def batch(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets of the windows starting at `offsets`."""
    rows = torch.from_numpy(tokens[offsets[:, None] + np.arange(block_size + 1)].astype(np.int64))
    return rows[:, :-1], rows[:, 1:]


def eval_offsets(c: ExperimentConfig, n_tokens: int) -> list[np.ndarray]:
    """The eval windows' starts, a batch of batch_size at a time: eval_iters x batch_size windows
    that share no token (drawn without replacement from the split's disjoint slots of block_size + 1
    tokens), so each window's loss is its own measurement and the standard errors need no
    correction for overlap. A validation split with fewer slots is evaluated on every slot once
    (the last batch smaller)."""
    span = c.block_size + 1
    slots = n_tokens // span
    rng = np.random.default_rng(EVAL_SEED)
    starts = rng.choice(slots, size=min(c.eval_iters * c.batch_size, slots), replace=False) * span
    return [starts[i:i + c.batch_size] for i in range(0, len(starts), c.batch_size)]


def windows_id(validation: np.ndarray, offsets: list[np.ndarray], block_size: int) -> str:
    """A fingerprint of the eval windows' tokens: two runs with the same id were evaluated on the
    same windows (same data, tokenizer and window shape), so their losses pair window by window."""
    rows = validation[np.concatenate(offsets)[:, None] + np.arange(block_size + 1)].astype(np.int64)
    return hashlib.sha256(rows.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean over the eval windows (eval_iters x batch_size, disjoint), whole windows
    context_loss: float  # the same over the windows' second halves
    loss_se: float  # the standard error of `loss`: the windows' std (ddof 1) / sqrt(windows); NaN for 1 window
    context_loss_se: float = math.nan  # the same for `context_loss`
    window_losses: np.ndarray | None = None  # each window's mean loss (float32)
    windows: str = ""  # windows_id of the windows evaluated


def standard_error(values) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else math.nan


class Evaluator:
    """Validation loss on the same disjoint windows at every eval: over whole windows, and over
    their second halves (each prediction there sees at least half a block before it:
    val_bpb_context, what the corpus's entropy bounds), the loss's standard error from the
    spread of the windows (the evaluation's own noise), and every window's own loss (what a paired
    comparison of two runs on the same windows needs). Eager: a compiled eval graph would cost a
    compile of its own for little."""

    def __init__(self, c: ExperimentConfig, validation: np.ndarray, autocast: contextlib.AbstractContextManager):
        self.block_size = c.block_size
        self.context = c.block_size // 2
        self.validation = validation
        self.offsets = eval_offsets(c, len(validation))
        self.windows = windows_id(validation, self.offsets, c.block_size)
        self.autocast = autocast

    @torch.no_grad()
    def __call__(self, model) -> EvalResult:
        model.eval()
        whole, late = [], []
        with self.autocast:
            for offsets in self.offsets:
                x, y = batch(self.validation, offsets, self.block_size)
                a, b = model.eval_losses(x, y, self.context)
                whole.append(a.numpy())
                late.append(b.numpy())
        model.train()
        whole, late = np.concatenate(whole).astype(np.float64), np.concatenate(late).astype(np.float64)  # a loss a window
        return EvalResult(float(whole.mean()), float(late.mean()), standard_error(whole), standard_error(late),
                          whole.astype(np.float32), self.windows)
