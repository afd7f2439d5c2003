"""GPT in the nanoGPT tradition: pre-LayerNorm blocks, causal SDPA attention, GELU MLP, tied head.

Parameter and FLOP counts are functions of the config (slm_tune.model.counts, no torch needed); a test
checks them against a built model.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from slm_tune.config import ExperimentConfig
from slm_tune.model.losses import linear_cross_entropy


class CausalSelfAttention(nn.Module):
    def __init__(self, c: ExperimentConfig):
        super().__init__()
        self.n_head = c.n_head
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd)
        self.dropout = c.dropout
        self.resid_dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, c: ExperimentConfig):
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd)
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, c: ExperimentConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd)
        self.mlp = MLP(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c: ExperimentConfig):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        # The head is the token embedding itself (weight tying): 12.9M of baseline's 16M
        # parameters would otherwise be spent twice.
        self.apply(self._init_weights)
        # GPT-2's scaled init: residual projections shrink with depth so the stream's variance
        # does not grow with the number of layers.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The final hidden states (B, T, C), before the output layer."""
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size={self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per token.

        The output layer and the loss are fused and chunked (slm_tune.model.losses), so the full
        (B*T, vocab) float32 logits never exist: at baseline's size that is 820 MB and most of
        an iteration's memory traffic.
        """
        return self._loss(self.hidden(idx), targets)

    def _loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not self.config.fused_loss:  # the plain path, as nanoGPT computes it
            logits = F.linear(h, self.wte.weight)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        return linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.wte.weight, targets.reshape(-1))

    @torch.no_grad()
    def eval_losses(self, idx: torch.Tensor, targets: torch.Tensor, context: int) -> tuple[float, float]:
        """Mean loss over every position, and over the positions from `context` on, from one pass.

        A window's first tokens are predicted with little or nothing before them, so the
        window-averaged loss has a floor above the corpus's entropy; the later positions are the
        ones a corpus's entropy (and a scaling law's E) describes."""
        h = self.hidden(idx)
        return self._loss(h, targets).item(), self._loss(h[:, context:], targets[:, context:]).item()

    @torch.no_grad()
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits for the last position of each sequence: (B, vocab)."""
        h = self.hidden(idx[:, -self.config.block_size:])
        return F.linear(h[:, -1, :], self.wte.weight).float()

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int | None = 50,
        generator: torch.Generator | None = None,
        stop_token: int | None = None,
    ) -> torch.Tensor:
        for _ in range(max_new_tokens):
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
