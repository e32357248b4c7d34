"""Decoding several kept histories together: per-row KV caches stacked into one batch and split back.

Each row of a batch may continue a different conversation, with its own cached positions (``DecoderState``). To decode
them in one batch, every row's cache is left-padded to the longest, the new positions of every row are left-padded
to the longest, and an attention mask marks the real ones: ``[pad][row's cache][pad][row's new positions]``. Position
ids stay each row's own, so every row computes what it would compute alone. Afterwards each row's cache is cut back
out, without the padding and without the positions it must not keep (generated tokens, a transient think block).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from icae.models.memory import DecoderState


def empty_state(config) -> DecoderState:
    return DecoderState(DynamicCache(config=config))


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers if getattr(layer, "keys", None) is not None
            and layer.keys.numel()]


def stack(states: list[DecoderState], config, width: int) -> tuple[DynamicCache, torch.Tensor]:
    """One cache of ``len(states)`` rows, each row's positions left-padded to ``width``; and the ``(rows, width)`` mask
    of the real positions."""
    rows = len(states)
    mask = torch.zeros(rows, width, dtype=torch.long)
    cache = DynamicCache(config=config)
    filled = [_layers(s.cache) for s in states]
    template = next((f for f in filled if f), None)
    for r, s in enumerate(states):
        if s.length:
            mask[r, width - s.length:] = 1
    if template is None or width == 0:
        return cache, mask
    for i, (k0, v0) in enumerate(template):
        keys = k0.new_zeros(rows, k0.shape[1], width, k0.shape[3])
        values = v0.new_zeros(rows, v0.shape[1], width, v0.shape[3])
        for r, layers in enumerate(filled):
            if layers:
                k, v = layers[i]
                keys[r, :, width - k.shape[2]:] = k[0]
                values[r, :, width - v.shape[2]:] = v[0]
        cache.update(keys, values, i)
    return cache, mask


def split(cache: DynamicCache, row: int, keep: list[tuple[int, int]], config) -> DynamicCache:
    """Row ``row`` of a batched cache as a one-row cache holding the positions ``[a, b)`` of each range in ``keep``."""
    out = DynamicCache(config=config)
    for i, (k, v) in enumerate(_layers(cache)):
        index = torch.cat([torch.arange(a, b) for a, b in keep]).to(k.device) if keep else \
            torch.zeros(0, dtype=torch.long, device=k.device)
        out.update(k[row : row + 1, :, index].clone(), v[row : row + 1, :, index].clone(), i)
    return out
