"""Decoder layouts: how memory, special tokens, prompts and targets become one left-padded decoder batch.

Decoder sequences are left-padded, so that every sequence ends at the last column and generation appends one column
for all rows; explicit position ids and an attention mask make each row's result equal to the one computed alone.

- ``decoder_inputs``: ``[memory; special token?; prompt; target]`` per row (the AE, LM and FT layouts).
- ``span_inputs``: interleaved rows of :class:`~icae.models.memory.Span` (agent trajectories): token spans embedded,
  compressed spans replaced by their slots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from icae.models.memory import Memory, Span
from icae.utils.padding import pad

if TYPE_CHECKING:
    from icae.models.base import CompressorBase

MODES = ("ae", "lm", "ft")
IGNORE = -100  # label of a position that carries no loss


def left_pad(rows: Sequence[dict[str, torch.Tensor]], fill: dict[str, int | float]) -> dict[str, torch.Tensor]:
    """Stack per-row tensors (first dim = positions) into ``(batch, width, ...)`` tensors, padded on the left with
    ``fill[key]``; adds the ``attention_mask``."""
    out = {}
    for key, value in fill.items():
        out[key], out["attention_mask"] = pad([row[key] for row in rows], value, side="left")
    return out


def _check_length(model: "CompressorBase", n: int, what: str) -> None:
    if n > model.args.model_max_length:
        raise ValueError(f"{what} of {n} positions exceeds model_max_length={model.args.model_max_length}")


def decoder_inputs(
    model: "CompressorBase",
    memory: Memory,
    mode: "str | Sequence[str]",
    prompts: list[torch.Tensor] | None = None,
    targets: list[torch.Tensor] | None = None,
    prefixes: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The left-padded decoder batch ``[before; memory; special?; after; target]`` framed by ``model.layout``
    (:meth:`~icae.models.framing.Layout.frame_row`): native, ``[memory; special?; prompt; target]``; original, the chat
    frame around ``prefix; memory; prompt``, then the target, and no special token.

    Position ids: contiguous ``0..n-1`` by default. With position identifiers (native layout), slots keep their ids; in
    the AE layout the special token takes id 0 and the reconstruction takes the original ids 1..L; in the LM/FT layouts
    the tokens after the slots continue from L+1. ``mode`` is one layout for all rows or one per row.
    Returns inputs_embeds ``(batch, T, hidden)``, attention_mask/position_ids/labels ``(batch, T)`` (labels: target ids,
    -100 elsewhere).
    """
    batch = len(memory)
    modes = [mode] * batch if isinstance(mode, str) else list(mode)
    bad = sorted({str(m) for m in modes if m not in MODES})
    if bad or len(modes) != batch:
        raise ValueError(f"mode must be one of {MODES} (one, or one per row: {batch}), got {mode!r}")
    empty = torch.zeros(0, dtype=torch.long)
    prompts = prompts if prompts is not None else [empty] * batch
    targets = targets if targets is not None else [empty] * batch
    if not (len(prompts) == len(targets) == batch):
        raise ValueError(f"batch sizes differ: memory {batch}, prompts {len(prompts)}, targets {len(targets)}")
    layout = model.layout
    if prefixes is not None and not layout.takes_prefix:
        raise ValueError(f"prefix_ids (tokens before the memory) belong to the original layout; this model's is "
                         f"{layout.name!r} (set layout: original)")
    prefixes = prefixes if prefixes is not None else [empty] * batch
    device, identifiers = model.device, model.uses_position_identifiers()
    rows = []
    for i in range(batch):
        slots, slot_pos = memory.sample(i)
        before, special, after = layout.frame_row(modes[i], prompts[i].tolist(), prefixes[i].tolist())
        parts = [model.embed(torch.tensor(before, dtype=torch.long))] if before else []
        parts.append(slots.to(model.dtype))
        token = model.special_embedding(modes[i]) if special else None
        if token is not None:
            parts.append(token.to(model.dtype))
        text = torch.cat([torch.tensor(after, dtype=torch.long, device=device), targets[i].to(device)])
        embeds = torch.cat(parts + [model.embed(text)])  # (n_i, hidden)
        n_after = embeds.shape[0] - slots.shape[0]
        if identifiers:  # only a layout that frames nothing before the slots keeps their ids (native)
            start = 0 if modes[i] == "ae" else int(memory.context_lengths[i]) + 1
            positions = torch.cat([slot_pos.to(device), torch.arange(start, start + n_after, device=device)])
        else:
            positions = torch.arange(embeds.shape[0], device=device)
        labels = torch.full((embeds.shape[0],), IGNORE, dtype=torch.long, device=device)
        if targets[i].numel():
            labels[-targets[i].numel() :] = targets[i].to(device)
        _check_length(model, embeds.shape[0], f"sample {i}: decoder input ({slots.shape[0]} memory, {n_after} "
                                              "prompt/target)")
        rows.append({"inputs_embeds": embeds, "position_ids": positions, "labels": labels})
    return left_pad(rows, {"inputs_embeds": 0.0, "position_ids": 0, "labels": IGNORE})


def span_inputs(model: "CompressorBase", rows: Sequence[Sequence[Span]], memories: dict,
                start: tuple[int, int] = (0, 0)) -> dict[str, torch.Tensor]:
    """Left-padded decoder batch of interleaved rows: token spans embedded, compressed spans replaced by slots.

    Position ids: contiguous over the decoder row by default. With position identifiers, every position keeps its place
    in the *uncompressed* row: token spans continue the count, and a compressed span of L tokens starting at position p
    gives its slots the ids spread over p..p+L-1, as in the AE layout.
    Returns inputs_embeds ``(batch, T, hidden)``, attention_mask/position_ids/labels/span_index ``(batch, T)``
    (labels: ids of ``loss`` spans, -100 elsewhere; span_index: the span each position comes from, -1 padding).
    ``start``: (decoder, uncompressed) positions already before the rows, when they extend a cached history.
    """
    device, identifiers = model.device, model.uses_position_identifiers()
    built = []
    for r, row in enumerate(rows):
        parts, pos, lab, idx = [], [], [], []
        actual, virtual = start
        for j, span in enumerate(row):
            if span.compress:
                slots, slot_pos, length = memories[span.key]
                n = slots.shape[0]
                parts.append(slots.to(model.dtype))
                pos.append(slot_pos.to(device) + virtual - 1 if identifiers
                           else torch.arange(actual, actual + n, device=device))
                lab.append(torch.full((n,), IGNORE, dtype=torch.long, device=device))
                virtual += length
            else:
                ids = span.ids.to(device)
                n = ids.numel()
                parts.append(model.embed(ids))
                first = virtual if identifiers else actual
                pos.append(torch.arange(first, first + n, device=device))
                lab.append(ids if span.loss else torch.full((n,), IGNORE, dtype=torch.long, device=device))
                virtual += n
            actual += n
            idx.append(torch.full((n,), j, dtype=torch.long, device=device))
        if actual == start[0]:
            raise ValueError(f"row {r}: no span has any token")
        _check_length(model, actual, f"row {r}: decoder input (cut the history: max_history_tokens)")
        built.append({"inputs_embeds": torch.cat(parts), "position_ids": torch.cat(pos), "labels": torch.cat(lab),
                      "span_index": torch.cat(idx)})
    return left_pad(built, {"inputs_embeds": 0.0, "position_ids": 0, "labels": IGNORE, "span_index": -1})
