"""The server's two caches, both bounded in MB, least recently used first out: compressed observations by content
(``SlotCache``), and the decoder keys/values of served prompts in a prefix tree (``PrefixCache``)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from icae.models import Span, kv


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


Element = Union[int, tuple]  # a token id, or ("slots", span key, slots, tokens) for a compressed span


def elements(spans: Sequence[Span], memory_length) -> list[Element]:
    """What a prefix is keyed by: every token of a token span, and each compressed span as one element (its slots
    are reused whole or not at all). ``memory_length``: tokens -> the slots they become."""
    out: list[Element] = []
    for span in spans:
        n = span.ids.numel()
        out += [("slots", span.key, memory_length(n), n)] if span.compress else span.ids.tolist()
    return out


def _size(element: Element) -> tuple[int, int]:
    """(decoder positions, uncompressed positions) of one element."""
    return (1, 1) if isinstance(element, int) else (element[2], element[3])


class _Node:
    __slots__ = ("edge", "layers", "children", "parent", "used", "positions")

    def __init__(self, edge: tuple, layers: kv.Layers, parent: Optional["_Node"], used: int):
        self.edge, self.layers, self.parent, self.used = edge, layers, parent, used
        self.children: dict[Element, _Node] = {}
        self.positions = sum(_size(e)[0] for e in edge)


@dataclass
class PrefixHit:
    """The longest cached prefix of a request: how many elements, decoder and uncompressed positions it covers, and
    its keys/values (one row, ``length`` positions per layer; empty when nothing matched)."""

    elements: int = 0
    length: int = 0
    virtual: int = 0
    layers: kv.Layers = field(default_factory=list)


class PrefixCache:
    """Decoder keys/values of served prompts in a prefix tree (radix tree) over their elements (token ids and
    compressed spans), bounded in MB: any request reuses the longest prefix any earlier request computed, whether
    it extends that conversation, branches off it (an agent that drops a reply and appends a user turn), or stops
    inside it. Each node holds the keys/values of its edge's positions; the least recently used leaves go first.

    Used from the engine's worker thread; a lock keeps other threads' reads (``len``, counters) consistent.
    """

    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self.hits, self.reused = 0, 0  # requests that reused positions, and how many positions in all
        self._root = _Node((), [], None, 0)
        self._clock = 0
        self._lock = threading.Lock()

    def match(self, items: Sequence[Element], limit: int) -> PrefixHit:
        """The longest cached prefix of ``items[:limit]`` (counted as a hit when not empty)."""
        with self._lock:
            return self._match(items, limit)

    def insert(self, items: Sequence[Element], layers: kv.Layers) -> None:
        """Keep the keys/values of ``items`` (``layers``: one row, at least their positions), then evict least
        recently used leaves down to the bound."""
        if self.max_bytes <= 0:
            return  # reuse off: nothing to copy
        with self._lock:
            self._insert(items, layers)
            self._evict()

    def _match(self, items: Sequence[Element], limit: int) -> PrefixHit:
        self._clock += 1
        node, i, hit, parts = self._root, 0, PrefixHit(), []
        while i < limit:
            child = node.children.get(items[i])
            if child is None:
                break
            m = _common(child.edge, items, i, limit)
            child.used = self._clock
            n = sum(_size(e)[0] for e in child.edge[:m])
            parts.append([(k[:, :, :n], v[:, :, :n]) for k, v in child.layers])
            hit.elements += m
            hit.length += n
            hit.virtual += sum(_size(e)[1] for e in child.edge[:m])
            i += m
            if m < len(child.edge):
                break
            node = child
        if hit.length:
            hit.layers = [(torch.cat([p[j][0] for p in parts], dim=2), torch.cat([p[j][1] for p in parts], dim=2))
                          for j in range(len(parts[0]))]
            self.hits += 1
            self.reused += hit.length
        return hit

    def _insert(self, items: Sequence[Element], layers: kv.Layers) -> None:
        self._clock += 1
        node, i, start = self._root, 0, 0
        while i < len(items):
            child = node.children.get(items[i])
            if child is None:
                edge = tuple(items[i:])
                n = sum(_size(e)[0] for e in edge)
                leaf = _Node(edge, [(k[:, :, start : start + n].clone(), v[:, :, start : start + n].clone())
                                    for k, v in layers], node, self._clock)
                node.children[items[i]] = leaf
                self.bytes += kv.nbytes(leaf.layers)
                break
            m = _common(child.edge, items, i, len(items))
            if m < len(child.edge):
                child = self._split(child, m)
            child.used = self._clock
            start += child.positions
            i += m
            node = child

    def _split(self, node: _Node, m: int) -> _Node:
        """Cut ``node``'s edge after ``m`` elements: a new parent holds the first part."""
        n = sum(_size(e)[0] for e in node.edge[:m])
        head = _Node(node.edge[:m], [(k[:, :, :n].clone(), v[:, :, :n].clone()) for k, v in node.layers],
                     node.parent, node.used)
        node.parent.children[node.edge[0]] = head
        node.edge, node.parent = node.edge[m:], head
        node.layers = [(k[:, :, n:].clone(), v[:, :, n:].clone()) for k, v in node.layers]
        node.positions -= n
        head.children[node.edge[0]] = node
        return head

    def _evict(self) -> None:
        while self.bytes > self.max_bytes:
            leaves = [n for n in self._nodes() if not n.children]
            if not leaves:
                return
            old = min(leaves, key=lambda n: n.used)
            del old.parent.children[old.edge[0]]
            self.bytes -= kv.nbytes(old.layers)

    def _nodes(self):
        todo = list(self._root.children.values())
        while todo:
            node = todo.pop()
            yield node
            todo += node.children.values()

    def __len__(self) -> int:
        """Cached leaves: the conversations (or their branches) kept."""
        with self._lock:
            return sum(1 for n in self._nodes() if not n.children)


def _common(edge: tuple, items: Sequence[Element], start: int, stop: int) -> int:
    """How many elements of ``edge`` equal ``items[start:stop]`` from the start."""
    m, n = 0, min(len(edge), stop - start)
    while m < n and edge[m] == items[start + m]:
        m += 1
    return m
