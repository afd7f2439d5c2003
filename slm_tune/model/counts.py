"""Parameter and FLOP counts as functions of the config: no model and no torch needed, so the
CLI lists them instantly and a study's driver can size trials (a compute budget) without
importing torch. Tests check both against built models (parameters against the model's tensors,
FLOPs against torch's FLOP counter on a training step) for every block design."""

from __future__ import annotations

from slm_tune.config import ExperimentConfig


def _norm_params(c: ExperimentConfig, size: int) -> int:
    """A norm's weight, and its bias for a LayerNorm with biases."""
    return size * (2 if c.norm == "layernorm" and c.bias else 1)


def attention_params(c: ExperimentConfig) -> int:
    C, kv = c.n_embd, c.kv_heads * c.head_size
    weights = C * (C + 2 * kv) + C * C  # q, k and v; the output projection
    biases = (C + 2 * kv) + C if c.bias else 0
    qk_norm = 2 * _norm_params(c, c.head_size) if c.qk_norm else 0
    return weights + biases + qk_norm


def mlp_params(c: ExperimentConfig) -> int:
    C, H = c.n_embd, c.mlp_width
    up = 2 * H if c.mlp == "swiglu" else H  # swiglu has a gate beside its up projection
    return C * up + H * C + ((up + C) if c.bias else 0)


def layer_params(c: ExperimentConfig) -> int:
    return attention_params(c) + mlp_params(c) + 2 * _norm_params(c, c.n_embd)


def param_counts(c: ExperimentConfig) -> tuple[int, int]:
    """(total, non-embedding) parameters. Non-embedding leaves out the token and position
    embeddings and an untied head (the vocabulary-sized matrices), as in Kaplan et al.'s N."""
    non_embedding = c.n_layer * layer_params(c) + _norm_params(c, c.n_embd)  # + the final norm
    vocab_matrices = c.vocab_size * c.n_embd * (1 if c.tie_embeddings else 2)
    positions = c.block_size * c.n_embd if c.pos == "learned" else 0
    return non_embedding + vocab_matrices + positions, non_embedding


def matmul_params(c: ExperimentConfig) -> int:
    """The weights a token is multiplied by: every linear layer's and the head (once, tied or not).
    Embedding lookups, norms and biases are not matmuls."""
    C, kv = c.n_embd, c.kv_heads * c.head_size
    H = c.mlp_width * (2 if c.mlp == "swiglu" else 1)
    per_layer = C * (C + 2 * kv) + C * C + C * H + c.mlp_width * C
    return c.n_layer * per_layer + c.vocab_size * C


def flops_per_token(c: ExperimentConfig) -> int:
    """Training FLOPs per token (forward + backward): 6 per matmul weight plus attention's scores
    and weighted values over the whole window (the PaLM/nanoGPT estimate; torch's FLOP counter
    gives the same figure for a training step)."""
    return 6 * matmul_params(c) + 12 * c.n_layer * c.n_embd * c.block_size


def kv_cache_bytes_per_token(c: ExperimentConfig, bytes_per_value: int = 2) -> int:
    """The keys and values a generating model keeps for each token of context (bfloat16 by default):
    what grouped-query attention saves."""
    return 2 * c.n_layer * c.kv_heads * c.head_size * bytes_per_value


def tokens_per_iter(c: ExperimentConfig) -> int:
    return c.batch_size * c.block_size


def training_flops(c: ExperimentConfig) -> int:
    """FLOPs of a whole run: FLOPs per token x tokens per iteration x iterations."""
    return flops_per_token(c) * tokens_per_iter(c) * c.max_iters
