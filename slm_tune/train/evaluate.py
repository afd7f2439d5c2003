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


def eval_offsets(c: ExperimentConfig, n_tokens: int) -> np.ndarray:
    rng = np.random.default_rng(EVAL_SEED)
    return rng.integers(0, n_tokens - c.block_size - 1, size=(c.eval_iters, c.batch_size))


def windows_id(validation: np.ndarray, offsets: np.ndarray, block_size: int) -> str:
    """A fingerprint of the eval windows' tokens: two runs with the same id were evaluated on the
    same windows (same data, tokenizer and window shape), so their losses pair window by window."""
    rows = validation[offsets.reshape(-1)[:, None] + np.arange(block_size + 1)].astype(np.int64)
    return hashlib.sha256(rows.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean over the eval_iters batches, whole windows
    context_loss: float  # the same over the windows' second halves
    loss_se: float  # the standard error of `loss`: the batches' std (ddof 1) / sqrt(eval_iters); NaN for 1 batch
    context_loss_se: float = math.nan  # the same for `context_loss`
    window_losses: np.ndarray | None = None  # each window's mean loss (eval_iters * batch_size, float32)
    windows: str = ""  # windows_id of the windows evaluated


def standard_error(values) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else math.nan


class Evaluator:
    """Validation loss on the same eval_iters batches at every eval: over whole windows, and over
    their second halves (each prediction there sees at least half a block before it:
    val_bpb_context, what the corpus's entropy bounds), the loss's standard error from the
    spread of the batches (the evaluation's own noise), and every window's own loss (what a paired
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
        whole, late = np.stack(whole).astype(np.float64), np.stack(late).astype(np.float64)  # (eval_iters, batch)
        return EvalResult(float(whole.mean()), float(late.mean()), standard_error(whole.mean(1)),
                          standard_error(late.mean(1)), whole.reshape(-1).astype(np.float32), self.windows)
