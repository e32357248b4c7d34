"""Requests -> jobs: a chat request's messages and parameters rendered into the spans the engine decodes.

A request's messages are rendered as the trajectory recipes render them (``icae.data.trajectories``): a message of a
role in ``compress_roles`` with at least ``min_tokens_to_compress`` tokens becomes memory slots, everything else
stays tokens, and the prompt ends with the assistant's header. This runs on the caller's thread (never the worker's),
so a bad request is refused with a ``RequestError`` before it takes a place in the queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from icae.data.trajectories import from_messages, render_turns, turn_stop_ids
from icae.errors import UserError
from icae.models import Span
from icae.models.decoding import SamplingParams
from icae.models.seed import chat_frame

if TYPE_CHECKING:
    from icae.serve.engine import Job


class RequestError(UserError):
    """A request that cannot be served as asked (the server answers 400 with this message)."""

    def __init__(self, message: str, code: str = "invalid_request", param: Optional[str] = None):
        super().__init__(message)
        self.code, self.param = code, param


class Renderer:
    """Turns (messages, request parameters) into a ``Job`` for ``model``'s engine."""

    def __init__(self, model, config, default_max_tokens: int):
        self.model, self.config, self.default_max_tokens = model, config, default_max_tokens
        self.tokenizer = model.tokenizer
        self.frame = chat_frame(self.tokenizer) if model.args.layout == "seed" else None
        self.stop_ids = set(turn_stop_ids(self.tokenizer)) | (set(model.seed_stop_ids()) if self.frame else set())

    def prepare(self, messages: list[dict], max_tokens: Optional[int], temperature: float, top_p: float,
                stops: list[str], seed: Optional[int]) -> "Job":
        """Render and check a request (on the caller's thread); a RequestError says what is wrong."""
        from icae.serve.engine import Job  # engine imports this module

        trajectory = from_messages(messages, "request")
        for i, m in enumerate(trajectory["messages"]):
            if not m["content"].strip() and m["role"] != "assistant":
                raise RequestError(f"messages[{i}] ({m['role']}) has no content", param=f"messages[{i}].content")
        args = self.model.args
        seed_layout = args.layout == "seed"
        turns = render_turns(self.tokenizer, trajectory, self.config.trajectories.compress_roles,
                             args.fixed_mem_size if seed_layout else args.min_tokens_to_compress,
                             self.model.memory_length, self.frame)
        spans = [s for t in turns for s in t.spans(loss=False)]
        header, think = self.assistant_header()
        spans.append(Span(header))
        prompt_tokens = sum(s.ids.numel() for s in spans)
        positions = sum(self.model.memory_length(s.ids.numel()) if s.compress else s.ids.numel() for s in spans)
        positions += len(think)
        window = args.model_max_length
        limit = max_tokens if max_tokens is not None else min(self.default_max_tokens, window - positions)
        if positions + limit > window:
            raise RequestError(
                f"this request needs {positions} decoder positions for its prompt ({prompt_tokens} tokens before "
                f"compression) plus max_tokens {limit}, more than the model's context window of {window} positions: "
                "shorten the conversation or lower max_tokens", code="context_length_exceeded", param="messages")
        params = SamplingParams(max_new_tokens=limit, do_sample=temperature > 0, temperature=temperature or 1.0,
                                top_p=top_p, stop_token_ids=tuple(self.stop_ids))
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return Job(spans, [Span(think)] if think else [], params, stops, generator, lambda event: None,
                   prompt_tokens, positions)

    def assistant_header(self) -> tuple[list[int], list[int]]:
        """(tokens that open the assistant's turn, thinking-frame tokens fed after them and not kept in the cache)."""
        if self.frame is None:
            return self.tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"], []
        cut = len(self.frame.assistant_prefix) - self.frame.think
        return list(self.frame.assistant_prefix[:cut]), list(self.frame.assistant_prefix[cut:])
