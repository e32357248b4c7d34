"""Segment arithmetic and position identifiers for ICAE.

Pure functions on integers and 1-D tensors, so that they can be tested on hand-worked cases.

A context of L tokens is cut into ``n = ceil(L / (k * rate))`` segments of balanced length (their lengths
differ by at most one token); each segment is compressed into ``k`` memory slots, so the overall
compression rate is about ``rate`` and never above it.
"""

from __future__ import annotations

import math

import torch


def num_segments(context_length: int, mem_size: int, compression_rate: float) -> int:
    """Number of segments a context of ``context_length`` tokens is split into (at least one)."""
    if context_length <= 0:
        raise ValueError(f"context length must be positive, got {context_length}")
    max_segment_length = max(1, int(mem_size * compression_rate))
    return max(1, math.ceil(context_length / max_segment_length))


def segment_lengths(context_length: int, mem_size: int, compression_rate: float) -> list[int]:
    """Balanced segment lengths: the first ``L % n`` segments get one token more than the others."""
    n = num_segments(context_length, mem_size, compression_rate)
    base, extra = divmod(context_length, n)
    return [base + 1 if i < extra else base for i in range(n)]


def memory_position_ids(first: int, last: int, mem_size: int) -> torch.Tensor:
    """Position ids of the ``mem_size`` memory tokens of a segment whose tokens sit at ``first..last``.

    The span is cut into ``k`` equal blocks of width ``r = (last - first + 1) / k`` and each memory token
    takes the (rounded) centre of its block: ``round(linspace(first + (r-1)/2, last - (r-1)/2, k))``.
    Rounding is half-up, and ids never go below ``first`` (a segment shorter than ``k`` tokens would
    otherwise put centres before its start). Example: tokens at 1..6 and k=2 give ids [2, 5].
    """
    if last < first:
        raise ValueError(f"empty span: first={first}, last={last}")
    width = (last - first + 1) / mem_size
    start = first + (width - 1) / 2
    end = last - (width - 1) / 2
    centres = torch.linspace(start, end, mem_size, dtype=torch.float64)
    ids = torch.floor(centres + 0.5).long()  # half-up rounding
    return ids.clamp(min=first)

