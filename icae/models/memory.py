"""The data a compressor passes around: memory slots, interleaved spans, a kept decoder state, and its outputs.

Batches are lists of variable-length samples; these containers hold them padded, with masks, so that each sample's
result equals the one computed alone.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers.utils import ModelOutput


@dataclass
class Memory:
    """The memory of a batch of contexts, right-padded along the slot axis."""

    slots: torch.Tensor  # (batch, max_slots, hidden)
    mask: torch.Tensor  # (batch, max_slots), 1 where a slot is real
    position_ids: torch.Tensor  # (batch, max_slots), ids used when position identifiers are on
    context_lengths: torch.Tensor  # (batch,), context tokens each memory summarises

    @property
    def num_slots(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def __len__(self) -> int:
        return self.slots.shape[0]

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots ``(n_i, hidden)`` and position ids ``(n_i,)`` of sample ``i``, padding removed."""
        n = int(self.mask[i].sum())
        return self.slots[i, :n], self.position_ids[i, :n]

    def without_slots(self) -> "Memory":
        """The same contexts with no slot at all: the no-memory baseline (the decoder's language-model prior)."""
        batch = len(self)
        return Memory(
            self.slots[:, :0], self.mask[:, :0], self.position_ids[:, :0], self.context_lengths.clone()
        ) if batch else self

    def select(self, indices: Sequence[int]) -> "Memory":
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.slots.device)
        n = int(self.mask[idx].sum(dim=1).max()) if len(idx) else 0
        return Memory(self.slots[idx, :n], self.mask[idx, :n], self.position_ids[idx, :n], self.context_lengths[idx])

    @classmethod
    def from_list(cls, slots: list[torch.Tensor], positions: list[torch.Tensor], lengths: list[int]) -> "Memory":
        """Right-pad per-sample slots ``(n_i, hidden)`` into one batch."""
        batch, n_max, hidden = len(slots), max(s.shape[0] for s in slots), slots[0].shape[-1]
        out = slots[0].new_zeros(batch, n_max, hidden)
        mask = torch.zeros(batch, n_max, dtype=torch.long, device=out.device)
        pos = torch.zeros(batch, n_max, dtype=torch.long, device=out.device)
        for i, (s, p) in enumerate(zip(slots, positions)):
            out[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = 1
            pos[i, : s.shape[0]] = p
        return cls(out, mask, pos, torch.tensor(lengths, dtype=torch.long, device=out.device))


@dataclass
class Span:
    """One piece of an interleaved decoder row (an agent trajectory): tokens read as they are, or a context that
    becomes memory slots (``compress``). ``loss`` marks tokens to learn (assistant turns)."""

    ids: torch.Tensor  # (n,)
    compress: bool = False
    loss: bool = False

    def __post_init__(self):
        self.ids = torch.as_tensor(self.ids, dtype=torch.long).reshape(-1)
        if self.compress and self.loss:
            raise ValueError("a compressed span cannot carry loss: its tokens are replaced by memory slots")

    @functools.cached_property
    def key(self) -> str:
        """Content hash: the same context is compressed once per call (and once per run with a cache)."""
        return hashlib.sha1(self.ids.cpu().numpy().tobytes()).hexdigest()


@dataclass
class DecoderState:
    """A decoder row's KV cache and how far it goes, to extend an agent's history turn by turn."""

    cache: object  # transformers Cache of the positions so far
    length: int = 0  # decoder positions in the cache
    virtual: int = 0  # the same history's uncompressed length (the next position id with position identifiers)


@dataclass
class CompressorOutput(ModelOutput):
    """``logits[:, i]`` predicts ``labels[:, i + 1]``; both cover the last ``logits.shape[1]`` decoder positions."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None  # (batch, n_kept, vocab)
    labels: Optional[torch.Tensor] = None  # (batch, n_kept), -100 where no loss
    mode_losses: Optional[dict] = None  # layout -> mean loss over that layout's target tokens
    num_target_tokens: Optional[torch.Tensor] = None  # scalar tensor: no host sync inside the training step
    memory: Optional[Memory] = None
    # Interleaved (span) layout only: logits[:, i] predicts targets[:, i], which lies in span target_spans[:, i].
    targets: Optional[torch.Tensor] = None  # (batch, n_kept), -100 where none
    target_spans: Optional[torch.Tensor] = None  # (batch, n_kept), -1 where none


def as_id_list(ids, attention_mask: torch.Tensor | None = None, name: str = "input",
               vocab_size: int | None = None) -> list[torch.Tensor]:
    """Normalise ids to a list of 1-D LongTensors without padding.

    Accepts a padded ``(batch, len)`` tensor with its attention mask (padding on either side), or a list of id
    sequences (one per sample). With ``vocab_size``, every id must lie in ``[0, vocab_size)``.
    """
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2 or ids.is_floating_point():
            raise ValueError(f"{name}: expected integer ids of shape (batch, length), got {ids.dtype} {tuple(ids.shape)}")
        if attention_mask is None:
            rows = list(ids)
        else:
            if attention_mask.shape != ids.shape:
                raise ValueError(f"{name}: attention_mask shape {tuple(attention_mask.shape)} != ids {tuple(ids.shape)}")
            rows = [row[m.bool()] for row, m in zip(ids, attention_mask)]
    elif isinstance(ids, (list, tuple)) and all(isinstance(r, (list, tuple, torch.Tensor)) for r in ids):
        try:
            rows = [torch.as_tensor(list(r) if not isinstance(r, torch.Tensor) else r, dtype=torch.long) for r in ids]
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{name}: every sample must be a sequence of integer token ids ({e})") from None
    else:
        kind = type(ids).__name__ if not isinstance(ids, (list, tuple)) or not ids else f"a {type(ids).__name__} of " \
            f"{type(ids[0]).__name__}"
        raise ValueError(f"{name}: expected texts, a list of token-id lists (one per sample: [[1, 2, 3]]) or a "
                         f"(batch, length) tensor, got {kind}")
    rows = [r.long().reshape(-1) for r in rows]
    if vocab_size is not None:
        bad = sorted({int(x) for r in rows for x in r[(r < 0) | (r >= vocab_size)].tolist()})
        if bad:
            raise ValueError(f"{name}: token ids {bad[:10]} are outside the vocabulary [0, {vocab_size})")
    return rows


def check_nonempty(rows: list[torch.Tensor], name: str) -> None:
    empty = [i for i, r in enumerate(rows) if r.numel() == 0]
    if not rows:
        raise ValueError(f"{name}: empty batch")
    if empty:
        raise ValueError(f"{name}: sample(s) {empty} have no tokens")
