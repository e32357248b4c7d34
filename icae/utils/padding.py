"""The one padding helper: variable-length rows -> one padded tensor and its attention mask."""

from __future__ import annotations

from typing import Sequence

import torch


def pad(rows: Sequence[torch.Tensor], value: int | float = 0, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``rows`` (first dim = positions, the rest equal) into ``(batch, width, ...)``, padded with ``value`` on
    ``side``; returns it with the ``(batch, width)`` attention mask (1 on real positions)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max((r.shape[0] for r in rows), default=0)
    first = rows[0]
    out = first.new_full((len(rows), width, *first.shape[1:]), value)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=first.device)
    for i, row in enumerate(rows):
        n = row.shape[0]
        where = slice(width - n, width) if side == "left" else slice(0, n)
        out[i, where] = row
        mask[i, where] = 1
    return out, mask


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists -> ``(batch, width)`` ids and attention mask (the models accept either side)."""
    return pad([torch.as_tensor(list(r), dtype=torch.long) for r in rows], pad_id, side)
