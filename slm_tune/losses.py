"""The output layer and cross-entropy, fused and chunked.

Baseline's output layer is 50,257 wide: for a batch of 4,096 tokens the float32 logits alone are
820 MB, and autograd keeps them (and their softmax) for the backward pass. Here the forward pass
walks the tokens in chunks, and for each chunk computes the logits, the loss and, right away, the
gradients with respect to the hidden states and the weight; only those gradients are kept. Memory
for the logits drops to one chunk and they are read and written a few times less. The same idea as
Liger Kernel's fused linear cross-entropy, in plain torch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CHUNK_ELEMENTS = 1 << 22  # logits per chunk (4M floats, 16 MB): large enough for efficient matmuls


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def _chunk_rows(n_rows: int, vocab: int) -> int:
    return max(64, min(n_rows, CHUNK_ELEMENTS // max(vocab, 1)))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype):
        n = h.shape[0]
        hc_all = h.to(dtype)
        w = weight.to(dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        step = _chunk_rows(n, weight.shape[0])
        for s in range(0, n, step):
            hc = hc_all[s:s + step]
            t = targets[s:s + step]
            logits = (hc @ w.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            # d(mean loss)/d(logits) = (softmax - onehot) / n, computed in place over the logits
            probs = logits.sub_(lse[:, None]).exp_()
            probs.scatter_add_(1, t[:, None], torch.full_like(lse[:, None], -1.0))
            g = probs.mul_(1.0 / n).to(dtype)
            grad_h[s:s + step] = (g @ w).to(h.dtype)
            grad_w += (g.t() @ hc).float()
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
    # Inference: no gradients to keep, just the chunked loss.
    with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
        n = h.shape[0]
        hc_all, w = h.to(dtype), weight.to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        step = _chunk_rows(n, weight.shape[0])
        for s in range(0, n, step):
            logits = (hc_all[s:s + step] @ w.t()).float()
            total += F.cross_entropy(logits, targets[s:s + step], reduction="sum")
        return total / n
