"""Parameter and FLOP counts as functions of the config: no model and no torch needed, so the
CLI lists them instantly and a study's driver can size trials (a compute budget) without
importing torch."""

from __future__ import annotations

from slm_tune.config import ExperimentConfig


def param_counts(c: ExperimentConfig) -> tuple[int, int]:
    """(total, non-embedding) parameters; the output head is tied to the token embedding."""
    C = c.n_embd
    per_layer = 12 * C * C + 13 * C  # qkv + proj + 4x MLP, their biases, two LayerNorms
    non_embedding = c.n_layer * per_layer + 2 * C  # + final LayerNorm
    total = non_embedding + c.vocab_size * C + c.block_size * C
    return total, non_embedding


def flops_per_token(c: ExperimentConfig) -> int:
    """Training FLOPs per token (forward + backward): 6 per weight plus attention's scores.

    The PaLM/nanoGPT estimate; the tied embedding counts once, as the output layer's matmul.
    """
    total, _ = param_counts(c)
    matmul_params = total - c.block_size * c.n_embd  # position embeddings are a lookup
    return 6 * matmul_params + 12 * c.n_layer * c.n_embd * c.block_size


def tokens_per_iter(c: ExperimentConfig) -> int:
    return c.batch_size * c.block_size


def training_flops(c: ExperimentConfig) -> int:
    """FLOPs of a whole run: FLOPs per token x tokens per iteration x iterations."""
    return flops_per_token(c) * tokens_per_iter(c) * c.max_iters
