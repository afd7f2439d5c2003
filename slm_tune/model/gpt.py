"""GPT in the nanoGPT tradition, with the block designs small models use today.

The defaults are GPT-2's (pre-LayerNorm blocks, learned positions, a GELU MLP, biases, the head tied
to the token embedding), computed exactly as before the settings existed. The config can swap in
RMSNorm, rotary positions (rope), a SwiGLU MLP, grouped-query attention (n_kv_head), an untied head,
no biases and normalised queries and keys: the Llama family's block is norm=rmsnorm, pos=rope,
mlp=swiglu, bias=false. Rope rotates the two halves of each head (the rotate-half layout of
Hugging Face's Llama), so an export needs no permutation.

Parameter and FLOP counts are functions of the config (slm_tune.model.counts, no torch needed); a test
checks them against built models.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from slm_tune.config import ExperimentConfig
from slm_tune.model.kv_cache import KVCache, LayerCache
from slm_tune.model.losses import linear_cross_entropy, token_losses

NORM_EPS = 1e-5
INIT_STD = 0.02  # GPT-2's init std of every weight


def make_norm(c: ExperimentConfig, size: int) -> nn.Module:
    if c.norm == "rmsnorm":
        return nn.RMSNorm(size, eps=NORM_EPS)
    return nn.LayerNorm(size, eps=NORM_EPS, bias=c.bias)


def rope_tables(head_size: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (length, head_size) of the angles position x theta^(-2i/head_size), each
    frequency i serving dimensions i and i + head_size/2."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, T, head_size) by position: each pair (i, i + head_size/2) as a 2-D vector."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, c: ExperimentConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_size = c.n_head, c.kv_heads, c.head_size
        kv = self.n_kv_head * self.head_size
        self.sizes = [c.n_embd, kv, kv]
        self.c_attn = nn.Linear(c.n_embd, c.n_embd + 2 * kv, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.c_attn.fan_in_mult = self.c_proj.fan_in_mult = c.width_mult  # both read n_embd features (hidden_matrices)
        self.q_norm = make_norm(c, c.head_size) if c.qk_norm else None
        self.k_norm = make_norm(c, c.head_size) if c.qk_norm else None
        self.dropout = c.dropout
        self.scale = c.attention_scale  # None: 1/sqrt(head_size)
        self.resid_dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:
        """x: (B, T, C), the T positions after the `cache`'s (if any), which they attend to as well."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.sizes, dim=2)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2) for t in (k, v))
        if self.q_norm is not None:
            q, k = self.q_norm(q.float()).to(v.dtype), self.k_norm(k.float()).to(v.dtype)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        mask = None
        if cache is not None:
            k, v = cache.extend(k, v)
            if k.shape[2] > T and T > 1:  # queries are the last T positions: causal, bottom-right aligned
                mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - T)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=k.shape[2] == T, dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head, scale=self.scale,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, c: ExperimentConfig):
        super().__init__()
        self.gated = c.mlp == "swiglu"
        hidden = c.mlp_width
        # swiglu's gate and up projections are one matmul: rows [0, hidden) gate, [hidden, 2 hidden) up
        self.c_fc = nn.Linear(c.n_embd, 2 * hidden if self.gated else hidden, bias=c.bias)
        self.c_proj = nn.Linear(hidden, c.n_embd, bias=c.bias)
        self.c_fc.fan_in_mult, self.c_proj.fan_in_mult = c.width_mult, c.mlp_width_mult  # (hidden_matrices)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, c: ExperimentConfig):
        super().__init__()
        self.ln_1 = make_norm(c, c.n_embd)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = make_norm(c, c.n_embd)
        self.mlp = MLP(c)
        self.branch = c.branch_multiplier  # a depth parametrization's residual-branch scale (1: none)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:
        if self.branch != 1.0:
            x = x + self.branch * self.attn(self.ln_1(x), rope, cache)
            return x + self.branch * self.mlp(self.ln_2(x))
        x = x + self.attn(self.ln_1(x), rope, cache)
        return x + self.mlp(self.ln_2(x))


def hidden_matrices(model: nn.Module) -> list[tuple[nn.Parameter, float]]:
    """The weight matrices inside the blocks (attention and MLP), muP's width-scaled ones, each with
    its fan-in over the same matrix's in muP's base model (`fan_in_mult`, set where the layer is
    made; Microsoft mup's infshape.width_mult; 1 under sp). The token and position embeddings and
    the head (width x vocabulary) are not hidden."""
    return [(m.weight, m.fan_in_mult) for name, m in model.named_modules()
            if name.startswith("blocks.") and isinstance(m, nn.Linear)]


class GPT(nn.Module):
    def __init__(self, c: ExperimentConfig):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd) if c.pos == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = make_norm(c, c.n_embd)
        # Tied (the default), the head is the token embedding itself: 12.9M of baseline's 16M
        # parameters would otherwise be spent twice.
        self.lm_head = None if c.tie_embeddings else nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.pos == "rope":
            cos, sin = rope_tables(c.head_size, c.block_size, c.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init: residual projections shrink with depth so the stream's variance
        # does not grow with the number of layers (under a depth parametrization, the base depth's
        # init, and the branch multiplier does that).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * c.residual_init_layers))
        # The hidden matrices' std is hidden_init_std (drawn at INIT_STD and scaled, so that the default
        # draws what it always drew); muP: each one's variance falls as its fan-in grows over the base
        # model's, and the logits are multiplied by mup_output_mult x base/width (all 1 under sp and at
        # the base width).
        self.output_mult = c.output_multiplier
        with torch.no_grad():
            for p, fan_in_mult in hidden_matrices(self):
                scale = c.hidden_init_std / INIT_STD * fan_in_mult ** -0.5
                if scale != 1.0:
                    p.mul_(scale)

    @property
    def head_weight(self) -> torch.Tensor:
        """The output layer's (vocab, n_embd) matrix: the token embedding when tied."""
        return self.wte.weight if self.lm_head is None else self.lm_head.weight

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """The hidden states the output layer reads: muP's output multiplier applied."""
        return h if self.output_mult == 1.0 else h * self.output_mult

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of hidden states (..., vocab), unfused: the output layer with muP's multiplier."""
        return F.linear(self.readout(h), self.head_weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final hidden states (B, T, C), before the output layer; with a `cache`, of the T
        positions after the cached ones (which it then holds too)."""
        start = cache.length if cache is not None else 0
        end = start + idx.shape[1]
        if end > self.config.block_size:
            raise ValueError(f"sequence of {end} tokens is longer than block_size={self.config.block_size}")
        x = self.wte(idx)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, end, device=idx.device))
        else:
            rope = (self.rope_cos[start:end], self.rope_sin[start:end])
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cache.layers[i] if cache is not None else None)
        if cache is not None:
            cache.length = end
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per token.

        The output layer and the loss are fused and chunked (slm_tune.model.losses), so the full
        (B*T, vocab) float32 logits never exist: at baseline's size that is 820 MB and most of
        an iteration's memory traffic.
        """
        return self._loss(self.hidden(idx), targets)

    def _loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = self.readout(h)
        if not self.config.fused_loss:  # the plain path, as nanoGPT computes it
            logits = F.linear(h, self.head_weight)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        return linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.head_weight, targets.reshape(-1))

    @torch.no_grad()
    def eval_losses(self, idx: torch.Tensor, targets: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each window's mean loss over every position, and over the positions from `context` on:
        two float32 (B,) tensors from one pass.

        A window's first tokens are predicted with little or nothing before them, so the
        window-averaged loss has a floor above the corpus's entropy; the later positions are the
        ones a corpus's entropy (and a scaling law's E) describes. Per window, so that two models
        evaluated on the same windows can be compared window by window (a paired difference)."""
        h = self.readout(self.hidden(idx))
        rows, width = targets.shape
        if self.config.fused_loss:
            per_token = token_losses(h.reshape(rows * width, -1), self.head_weight, targets.reshape(-1))
        else:
            logits = F.linear(h, self.head_weight).reshape(rows * width, -1).float()
            per_token = F.cross_entropy(logits, targets.reshape(-1), reduction="none")
        per_token = per_token.view(rows, width)
        return per_token.mean(1), per_token[:, context:].mean(1)

    @torch.no_grad()
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits for the last position of each sequence: (B, vocab)."""
        h = self.hidden(idx[:, -self.config.block_size:])
        return self.output(h[:, -1, :]).float()

    @torch.no_grad()
    def next_logits(self, idx: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache | None]:
        """logits(idx) from the key/value cache of idx[:, :-1] where there is one (one position
        computed), else a new cache filled from idx. Past block_size tokens of context the window
        slides and every position's keys change, so each step computes its whole window, exactly
        as logits() does (no cache)."""
        if idx.shape[1] > self.config.block_size:
            return self.logits(idx), None
        if cache is None or cache.length != idx.shape[1] - 1:
            cache = KVCache(self.config.n_layer, self.config.block_size)
            h = self.hidden(idx, cache)
        else:
            h = self.hidden(idx[:, -1:], cache)
        return self.output(h[:, -1, :]).float(), cache

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int | None = 50,
        generator: torch.Generator | None = None,
        stop_token: int | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """idx (B, T) extended by up to max_new_tokens sampled tokens (greedy at temperature 0);
        with a key/value cache unless use_cache=False (the same tokens, recomputing the context)."""
        cache = None
        for _ in range(max_new_tokens):
            if use_cache:
                logits, cache = self.next_logits(idx, cache)
            else:
                logits = self.logits(idx)
            if temperature <= 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    v, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
                    logits[logits < v[:, [-1]]] = -float("inf")
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat((idx, nxt), dim=1)
            if stop_token is not None and bool((nxt == stop_token).all()):
                break
        return idx
