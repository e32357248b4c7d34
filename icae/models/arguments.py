"""Argument checks of the public model methods (``compress``, ``compress_ids``, ``reconstruct``, ``generate``).

Each raises a ``ValueError`` or ``TypeError`` that names the argument (and the index of the bad item) before any
tensor is built, so that a mistake in a call never surfaces as an error from inside the tokenizer, the embedding or
the decoding loop.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

# SamplingParams' fields and the types a caller may give them (bool is an int to Python: refused where a count is).
_INTS = ("max_new_tokens", "top_k")
_FLOATS = ("temperature", "top_p")


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_texts(contexts: Any, name: str = "contexts") -> None:
    """A text, or a list of texts, is valid Unicode throughout; a list that mixes texts with anything else names the
    first item that is not a text. Other kinds of input (ids, tensors) are left to the id checks."""
    if isinstance(contexts, str):
        items = [(name, contexts)]
    elif isinstance(contexts, (list, tuple)) and any(isinstance(c, str) for c in contexts):
        for i, c in enumerate(contexts):
            if not isinstance(c, str):
                raise TypeError(f"{name}[{i}]: expected a text like the other items, got {type(c).__name__} "
                                f"{_show(c)}")
        items = [(f"{name}[{i}]", c) for i, c in enumerate(contexts)]
    else:
        return
    for where, text in items:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{where}: a lone surrogate {text[e.start]!r} at character {e.start} is not valid "
                             "Unicode text (decode the source with errors='replace' or 'surrogatepass' first)") from None


def check_compression_rate(rate: Any) -> None:
    """None (the model's ``mean_compression_rate``) or a positive integer."""
    if rate is None:
        return
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral):
        raise TypeError(f"compression_rate must be a positive int (or None for the model's own), got "
                        f"{type(rate).__name__} {_show(rate)}")
    if rate < 1:
        raise ValueError(f"compression_rate must be >= 1 (tokens per memory slot), got {rate}; None uses the model's "
                         "mean_compression_rate")


def check_id_rows(rows: Any, vocab_size: int, name: str = "rows") -> None:
    """``compress_ids``' input: a list of 1-D integer tensors, every id in ``[0, vocab_size)``."""
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"{name}: expected a list of 1-D token-id tensors, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, torch.Tensor) or row.dim() != 1 or row.is_floating_point() or row.is_complex() \
                or row.dtype == torch.bool:
            kind = f"{row.dtype} tensor of shape {tuple(row.shape)}" if isinstance(row, torch.Tensor) \
                else type(row).__name__
            raise TypeError(f"{name}[{i}]: expected a 1-D integer tensor of token ids, got {kind}")
        bad = row[(row < 0) | (row >= vocab_size)]
        if bad.numel():
            raise ValueError(f"{name}[{i}]: token id {int(bad[0])} is outside the vocabulary [0, {vocab_size}) "
                             f"(vocab_size {vocab_size})")


def check_sampling(sampling: dict[str, Any]) -> None:
    """The types of the sampling keywords of ``generate``/``reconstruct`` (their ranges are SamplingParams')."""
    for key in _INTS:
        value = sampling.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise TypeError(f"{key} must be an int, got {type(value).__name__} {_show(value)}")
    for key in _FLOATS:
        value = sampling.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise TypeError(f"{key} must be a number, got {type(value).__name__} {_show(value)}")
        if isinstance(value, numbers.Real) and value != value:
            raise ValueError(f"{key} must be a number, got NaN")
    if "do_sample" in sampling and not isinstance(sampling["do_sample"], bool):
        raise TypeError(f"do_sample must be True or False, got {_show(sampling['do_sample'])}")
    stops = sampling.get("stop_token_ids")
    if stops is not None:
        if isinstance(stops, (str, bytes)) or not hasattr(stops, "__iter__"):
            raise TypeError(f"stop_token_ids must be a list of token ids, got {type(stops).__name__}")
        for i, t in enumerate(stops):
            if isinstance(t, torch.Tensor) and t.numel() == 1 and not t.is_floating_point():
                continue
            if isinstance(t, bool) or not isinstance(t, numbers.Integral):
                raise TypeError(f"stop_token_ids[{i}] must be a token id (int), got {type(t).__name__} {_show(t)}")
