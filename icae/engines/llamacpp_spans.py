"""Interleaved rows (agent histories) on the llama.cpp backend: observations compressed once (cached by content),
histories kept across turns as llama.cpp sequences. Mixed into :class:`icae.engines.llamacpp.LlamaCppICAE`."""

from __future__ import annotations

from typing import Sequence

import torch

from icae.models.decoding import SamplingParams
from icae.models.memory import Span


class SpanMixin:
    """``generate_spans`` and ``generate_incremental`` as :class:`icae.models.CompressorBase` has them; needs the
    host's ``compress_spans``, ``embed``, ``decode_rows`` and ``runtime``."""

    def span_row(self, row: Sequence[Span], memories: dict, start: tuple[int, int] = (0, 0)):
        """Embeddings and positions of one interleaved row after ``start`` = (decoder, uncompressed) positions, as
        :func:`icae.models.layouts.span_inputs` builds them; returns (embeds, positions, uncompressed length)."""
        from icae.models import layouts

        inputs = layouts.span_inputs(self, [row], memories, start)
        return (inputs["inputs_embeds"][0].numpy(), inputs["position_ids"][0].numpy(),
                sum(span.ids.numel() for span in row))

    def generate_spans(self, rows: Sequence[Sequence[Span]], cache: dict | None = None,
                       generator: torch.Generator | None = None, seed: int = 0, **sampling) -> tuple[list, dict]:
        memories, counts = self.compress_spans(rows, cache)
        built = [self.span_row(row, memories)[:2] for row in rows]
        if generator is not None:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return self.decode_rows(built, SamplingParams.of(**sampling), seed), counts

    def generate_incremental(self, state: "LlamaCppState | None", spans: Sequence[Span], cache: dict | None = None,
                             generator: torch.Generator | None = None, transient: Sequence[Span] = (),
                             seed: int = 0, **sampling) -> tuple[list[int], "LlamaCppState", dict]:
        """As :meth:`icae.models.CompressorBase.generate_incremental`: extend a kept history (a llama.cpp sequence)
        by ``spans`` (then ``transient``, for this call only), generate, and return the new ids with the new state.
        ``state`` stays valid: the new one shares its cached cells (``llama_memory_seq_cp``)."""
        rt = self.runtime
        memories, counts = self.compress_spans([[*spans, *transient]], cache)
        length, virtual = (state.length, state.virtual) if state else (0, 0)
        embeds, positions, _ = self.span_row([*spans, *transient], memories, (length, virtual))
        new = len(embeds) - sum(s.ids.numel() for s in transient)
        lane = rt.borrow(1)[0]
        fresh = LlamaCppState(self, lane, length + new, virtual + sum(s.ids.numel() for s in spans))
        if state is not None and length:
            rt.copy(state.lane, lane, length)
        if generator is not None:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        ids = self.decode_rows([(embeds, positions)], SamplingParams.of(**sampling), seed, [lane], [length],
                               [fresh.length])[0]
        return ids, fresh, counts


class LlamaCppState:
    """A kept decoder history: a llama.cpp sequence holding ``length`` inputs, whose uncompressed length is
    ``virtual``. Its sequence is freed when the state is released or garbage-collected."""

    def __init__(self, model, lane: int, length: int, virtual: int):
        import weakref

        self.lane, self.length, self.virtual = lane, length, virtual
        self._release = weakref.finalize(self, model.runtime.give_back, [lane])

    def release(self) -> None:
        self._release()
