"""The server's two caches: compressed observations by content (bounded in MB), and conversations' decoder KV caches
(bounded in number), both least-recently-used first out."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional, Sequence

import torch

from icae.models import DecoderState, Span

Signature = tuple[bool, str]  # (compressed?, content hash) of one span


def signature(spans: Sequence[Span]) -> tuple[Signature, ...]:
    return tuple((span.compress, span.key) for span in spans)


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


class SlotCache:
    """``span key -> (slots, position ids, length)`` as ``compress_spans`` reads and fills it, holding at most
    ``max_mb`` of tensors; the least recently used entries go first. Counts hits for the metrics."""

    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self.hits = 0
        self._items: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __getitem__(self, key: str):
        with self._lock:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]

    def __setitem__(self, key: str, value) -> None:
        size = _nbytes(value)
        with self._lock:
            if key in self._items:
                self.bytes -= _nbytes(self._items.pop(key))
            if size > self.max_bytes:
                return  # larger than the whole cache: not kept
            self._items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= _nbytes(old)

    def __len__(self) -> int:
        return len(self._items)


class ConversationCache:
    """Decoder states of recent conversations, keyed by the span signatures they hold. A request takes the state whose
    history is the longest prefix of its own (exclusively, while it runs) and puts the extended one back."""

    def __init__(self, max_conversations: int):
        self.max = max_conversations
        self._items: OrderedDict[tuple[Signature, ...], DecoderState] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, spans: tuple[Signature, ...]) -> tuple[int, Optional[DecoderState]]:
        """(spans covered, state) of the longest cached prefix of ``spans``, removed from the cache; (0, None) if none."""
        with self._lock:
            best = max((key for key in self._items if len(key) <= len(spans) and spans[: len(key)] == key),
                       key=len, default=None)
            if best is None:
                return 0, None
            return len(best), self._items.pop(best)

    def put(self, spans: tuple[Signature, ...], state: DecoderState) -> None:
        if self.max <= 0:
            return
        with self._lock:
            self._items[spans] = state
            self._items.move_to_end(spans)
            while len(self._items) > self.max:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
