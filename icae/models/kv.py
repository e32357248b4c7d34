"""Decoder KV caches: the one constructor, and the tensor-level moves the running batch and the prefix cache make.

A cache is a transformers ``DynamicCache`` whose layers hold keys and values ``(rows, kv_heads, positions, head_dim)``.
Every cache here is built by :func:`new_cache` with full (non-sliding) layers, whatever the base's config says: a
sliding-window layer drops its oldest positions, which a kept history or a prefix cache still needs. Sliding-window
attention stays exact: the base applies its window in the attention mask, counted in columns, and every row keeps its
real positions contiguous (``icae.models.decoding``).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), each (rows, heads, positions, dim)


def new_cache() -> DynamicCache:
    """An empty cache whose layers (full, never sliding) appear as the model writes them."""
    return DynamicCache()


def tensors(cache) -> Layers:
    """The (keys, values) of every filled layer of ``cache``."""
    return [(layer.keys, layer.values) for layer in cache.layers
            if getattr(layer, "keys", None) is not None and layer.keys.numel()]


def from_tensors(layers: Layers) -> DynamicCache:
    cache = new_cache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def length(cache) -> int:
    return cache.get_seq_length() if cache is not None else 0


def left_pad(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    """``t`` padded with zeros at the start of ``dim`` to ``width``."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def row_prefix(layers: Layers, row: int, start: int, n: int) -> Layers:
    """Positions ``[start, start + n)`` of row ``row``, as one-row tensors (copies: the batch may be freed)."""
    return [(k[row : row + 1, :, start : start + n].clone(), v[row : row + 1, :, start : start + n].clone())
            for k, v in layers]


def nbytes(layers: Layers) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
