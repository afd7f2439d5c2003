"""The key/value cache of generation: each layer's keys and values of the tokens so far, so that a
new token's step computes one position instead of the whole context (nanoGPT's generate has none;
Hugging Face's DynamicCache is the same idea)."""

from __future__ import annotations

import torch


class LayerCache:
    """One attention layer's keys and values (B, kv_heads, capacity, head_size), filled from the left."""

    def __init__(self, owner: KVCache):
        self.owner = owner
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys and values after the cached ones; every position's so far."""
        start, end = self.owner.length, self.owner.length + k.shape[2]
        if end > self.owner.capacity:
            raise ValueError(f"the cache holds {self.owner.capacity} positions; {end} asked")
        if self.k is None:  # allocated at the first call, in the dtype attention computes in
            shape = (k.shape[0], k.shape[1], self.owner.capacity, k.shape[3])
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """Every layer's cache; `length` positions are stored (the model advances it after each call)."""

    def __init__(self, n_layer: int, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.layers = [LayerCache(self) for _ in range(n_layer)]
