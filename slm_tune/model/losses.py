"""The output layer and cross-entropy, fused and chunked.

Baseline's output layer is 50,257 wide: for a batch of 4,096 tokens the float32 logits alone are
820 MB, and autograd keeps them (and their softmax) for the backward pass. Here the forward pass
walks the tokens in chunks, and for each chunk computes the logits, the loss and, right away, the
gradients with respect to the hidden states and the weight; only those gradients are kept. Memory
for the logits drops to one chunk, and the softmax-and-gradient step over the logits is one fused
kernel (torch.compile, where a C++ compiler is at hand) instead of half a dozen passes over
hundreds of megabytes. The same idea as Liger Kernel's fused linear cross-entropy, on CPU.
bench/README.md has the measurements behind each choice.
"""

from __future__ import annotations

import logging

import torch
from torch.nn import functional as F

CHUNK_ELEMENTS = 1 << 25  # logits per chunk (32M): big matmuls, few float32 accumulations of grad_w
FUSE_MIN_VOCAB = 4096  # below this the logits are small and compiling is not worth its seconds

log = logging.getLogger(__name__)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def chunk_rows(n_rows: int, vocab: int) -> int:
    """Rows per chunk: the largest divisor of n_rows within the budget, so every chunk has the
    same shape (one compiled kernel, no recompiles for a ragged last chunk)."""
    target = max(1, min(n_rows, CHUNK_ELEMENTS // max(vocab, 1)))
    for rows in range(target, max(target // 2, 1) - 1, -1):
        if n_rows % rows == 0:
            return rows
    return target


def _softmax_grad_eager(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, softmax - onehot in the logits' dtype) for one chunk of logits."""
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    loss = (lse - x.gather(1, targets)).sum()
    g = x.sub_(lse).exp_()
    g.scatter_add_(1, targets, torch.full(targets.shape, -1.0, dtype=g.dtype, device=g.device))
    return loss, g.to(logits.dtype)


def _softmax_grad_fusable(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Written for inductor: one reduction pass and one elementwise pass over the logits.
    x = logits.float()
    m = x.amax(-1, keepdim=True)
    e = (x - m).exp()
    s = e.sum(-1, keepdim=True)
    loss = (m + s.log() - x.gather(1, targets)).sum()
    onehot = torch.arange(x.shape[1], device=x.device)[None, :] == targets
    return loss, (e / s - onehot.to(x.dtype)).to(logits.dtype)


class FusedSoftmaxGrad:
    """The compiled kernel, or the eager one where compiling fails (no C++ compiler, say)."""

    def __init__(self) -> None:
        self.failed = False
        self.kernel = None

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor):
        if torch.compiler.is_compiling():  # inside a compiled model: the model's compile fuses it
            return _softmax_grad_fusable(logits, targets)
        if not self.failed and logits.shape[1] >= FUSE_MIN_VOCAB:
            try:
                if self.kernel is None:
                    self.kernel = torch.compile(_softmax_grad_fusable, dynamic=False)
                return self.kernel(logits, targets)
            except Exception as e:  # inductor needs a working C++ toolchain
                self.failed = True
                log.warning("fused loss kernel unavailable (%s); using the eager one", type(e).__name__)
        return _softmax_grad_eager(logits, targets)


softmax_grad = FusedSoftmaxGrad()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype):
        n = h.shape[0]
        hc_all, w = h.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        step = chunk_rows(n, weight.shape[0])
        for s in range(0, n, step):
            hc = hc_all[s:s + step]
            loss, g = softmax_grad(hc @ w.t(), targets[s:s + step, None])
            total += loss
            grad_h[s:s + step] = ((g @ w) * (1.0 / n)).to(h.dtype)
            grad_w.add_(g.t() @ hc, alpha=1.0 / n)
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean(cross_entropy(h @ weight.T, targets)) in nats, without materialising all the logits.

    h: (N, C) hidden states; weight: (V, C); targets: (N,) token ids. Under autocast the matmuls
    run in the autocast dtype and the softmax in float32, as autocast itself would do.
    """
    dtype = _compute_dtype(h)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        with torch.autocast(h.device.type, enabled=False):
            return _LinearCrossEntropy.apply(h, weight, targets, dtype)
    return token_losses(h, weight, targets).mean()  # inference: no gradients to keep


@torch.no_grad()
def token_losses(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """cross_entropy(h @ weight.T, targets) per row in float32, in chunks of logits (inference)."""
    dtype = _compute_dtype(h)
    with torch.autocast(h.device.type, enabled=False):
        n = h.shape[0]
        hc_all, w = h.to(dtype), weight.to(dtype)
        out = torch.empty(n, dtype=torch.float32, device=h.device)
        step = chunk_rows(n, weight.shape[0])
        for s in range(0, n, step):
            logits = (hc_all[s:s + step] @ w.t()).float()
            out[s:s + step] = F.cross_entropy(logits, targets[s:s + step], reduction="none")
        return out
