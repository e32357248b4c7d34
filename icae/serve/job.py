"""A request on its way through a serving engine's worker (the PyTorch engine and the llama.cpp one): kept apart from
the engine so that the renderer, which builds jobs, and the engines, which run them, both import it without a circle."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from icae.models import Span
from icae.models.decoding import SamplingParams


@dataclass
class Job:
    """One request on its way through the worker: its spans, how to sample, and where its tokens go.

    ``emit`` is called on the worker thread with ``{"delta": str}`` as text becomes final (text that may still turn
    into a stop string is held back), ``{"error": str}`` if the model fails, and None at the end (after ``finish``
    and ``stats`` are set). With ``logprobs`` (None: off; k >= 0: the k most likely alternatives too), each delta
    event also carries ``"logprobs"``: one entry per token taken since the previous event, in order,
    ``{"id": int, "token": str, "logprob": float, "top": [{"id": int, "token": str, "logprob": float}, ...]}``
    (``token``: the token decoded alone; logprobs of the model's distribution before temperature and top-p). The
    tokens of the last event may reach past a stop string the text was cut at.
    ``cancelled``: set by the app when the client is gone; the row leaves the batch at the next step.
    """

    spans: list[Span]
    transient: list[Span]
    params: SamplingParams
    stops: list[str]
    generator: Optional[torch.Generator]
    emit: Callable[[Optional[dict]], None]  # a dict per event (tokens, then the end); called on the worker thread
    prompt_tokens: int
    positions: int  # decoder positions of the prompt (slots counted, not the tokens they replace)
    logprobs: Optional[int] = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of text already emitted
    finish: Optional[str] = None  # "stop", "length", or "cancelled"
    stats: dict = field(default_factory=dict)
    pending: list[dict] = field(default_factory=list)  # logprobs of tokens not yet emitted
    started: float = 0.0
