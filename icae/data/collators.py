"""Collators: lists of token ids -> the padded tensors and layout a model's ``forward`` takes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``(batch, max_len)`` ids and attention mask (the models accept either side)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


@dataclass
class AutoencodingCollator:
    """Features ``{"input_ids": [...]}`` -> the AE layout: the model reproduces each context, then EOS."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        ids, mask = pad_right([f["input_ids"] for f in features], self.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask, "mode": "ae"}
