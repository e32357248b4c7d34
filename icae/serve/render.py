"""Requests -> jobs: a chat request's messages and parameters rendered into the spans the engine decodes.

Two renderings, both ending with the assistant's header:

- **Without tools** (and with ``tool_choice: none``): as the trajectory recipes render a conversation
  (``icae.data.trajectories.render_turns``, ChatML turns; the base's chat frame with ``layout: original``), so a served
  conversation looks like the ones the compressor was fine-tuned on.
- **With tools**: through a chat template that renders tools (the tokenizer's when it does, else ``chat_template``,
  else the shipped ChatML template with Hermes tool calls): the template is rendered once with a marker in place of
  each message's content, and the text is cut at the markers, so each content is its own span.

Which contents become memory slots (observations): those of ``compress_roles`` (default: tool) and user messages after
the first with at least ``compress_user_min_tokens`` tokens (text-based agents send tool output as user messages;
the first user message, the task, stays text), in both cases only with at least ``min_tokens_to_compress`` tokens and
no more slots than tokens. This runs on the caller's thread (never the worker's), so a bad request is refused with a
``RequestError`` before it takes a place in the queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch

from icae.data.chat_template import TOOLS_TEMPLATE, TemplateError, is_observation, template_pieces, tools_template
from icae.data.trajectories import from_messages, render_turns
from icae.errors import UserError
from icae.models import Span
from icae.models.decoding import SamplingParams
from icae.serve.job import Job

if TYPE_CHECKING:
    from icae.serve.protocol import ChatRequest

__all__ = ["TOOLS_TEMPLATE", "Prepared", "Renderer", "RequestError", "context_error"]


class RequestError(UserError):
    """A request that cannot be served as asked (the server answers 400 with this message)."""

    def __init__(self, message: str, code: str = "invalid_request", param: Optional[str] = None):
        super().__init__(message)
        self.code, self.param = code, param


@dataclass
class Prepared:
    """A rendered request: the job for the engine, and how to read its reply."""

    job: "Job"
    tool_names: set[str] = field(default_factory=set)  # empty: the reply is text, never parsed for tool calls
    prefix: str = ""  # text the server began the reply with (tool_choice required / named): part of what is parsed
    parallel: bool = True


def context_error(window: int, positions: int, limit: int, prompt_tokens: int) -> RequestError:
    """OpenAI's wording and code, which litellm maps to ContextWindowExceededError (agents stop or summarise)."""
    return RequestError(
        f"This model's maximum context length is {window} tokens. However, you requested {positions + limit} tokens "
        f"({positions} in the messages, {limit} in the completion). Please reduce the length of the messages or "
        f"completion. (Counted in decoder positions: compressed observations count their memory slots; the messages "
        f"are {prompt_tokens} tokens before compression.)", code="context_length_exceeded", param="messages")


class Renderer:
    """Turns a chat request into a ``Job`` for ``model``'s engine (see the module's docstring)."""

    def __init__(self, model, config, default_max_tokens: Optional[int]):
        self.model, self.config, self.default_max_tokens = model, config, default_max_tokens
        self.tokenizer = model.tokenizer
        self.layout = model.layout
        self.stop_ids = set(self.layout.turn_stop_ids)
        serve = config.serve
        self.user_min_tokens, self.max_prompt_tokens = serve.compress_user_min_tokens, serve.max_prompt_tokens
        self.tools_template = tools_template(self.tokenizer, serve.chat_template)  # the trajectory loader's choice too
        # The most UTF-8 bytes one token stands for: a text of B bytes is at least B / this many tokens.
        longest = max((len(self.tokenizer.convert_tokens_to_string([t]).encode()) for t in self.tokenizer.get_vocab()),
                      default=1)
        self.max_token_bytes = max(longest, 1)

    # ------------------------------------------------------------------------------------------ entry points
    def render(self, request: "ChatRequest") -> Prepared:
        """Render and check an OpenAI request; a RequestError says what is wrong."""
        messages = [m.as_dict() for m in request.messages]
        self._check_size(messages)
        user_min = (request.compress_user_min_tokens if "compress_user_min_tokens" in request.model_fields_set
                    else self.user_min_tokens)
        mode = request.tool_mode
        tools = [t.model_dump(exclude_none=True) for t in request.tools] if mode != "none" else None
        prefix = ""
        if mode == "required":
            prefix = '<tool_call>\n{"name": "'
        elif mode == "named":
            prefix = '<tool_call>\n{"name": "' + request.tool_choice.function.name + '", "arguments": '
        spans, think = self._spans(messages, tools, user_min)
        job = self._job(spans, think + self._encode(prefix), request.limit, request.temperature, request.top_p,
                        request.stops, request.seed)
        names = {t["function"]["name"] for t in tools} if tools else set()
        return Prepared(job, names, prefix, request.parallel_tool_calls)

    def prepare(self, messages: list[dict], max_tokens: Optional[int], temperature: float, top_p: float,
                stops: list[str], seed: Optional[int]) -> "Job":
        """A job for plain messages (no tools; the server's observation rule)."""
        self._check_size(messages)
        spans, think = self._spans(messages, None, self.user_min_tokens)
        return self._job(spans, think, max_tokens, temperature, top_p, stops, seed)

    def assistant_header(self) -> tuple[list[int], list[int]]:
        """(tokens that open the assistant's turn, thinking-frame tokens fed after them and not kept in the cache)."""
        return self.layout.turn_header("assistant")

    # ------------------------------------------------------------------------------------------ rendering
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _check_size(self, messages: list[dict]) -> None:
        """Refuse a prompt over max_prompt_tokens from its size alone, before any of it is tokenised: a token stands
        for at most ``max_token_bytes`` bytes, so a content of B bytes is at least B / max_token_bytes tokens."""
        size = 0
        for m in messages:
            content = m.get("content") or ""
            size += len((content if isinstance(content, str) else "".join(p.get("text", "") for p in content)).encode())
        at_least = math.ceil(size / self.max_token_bytes)
        if at_least > self.max_prompt_tokens:
            raise RequestError(
                f"the messages' contents are {size} bytes, at least {at_least} tokens, more than this server's "
                f"max_prompt_tokens ({self.max_prompt_tokens}): send a shorter conversation",
                code="context_length_exceeded", param="messages")

    def _observation(self, role: str, n_tokens: int, user_index: int, user_min: Optional[int]) -> bool:
        """Whether a content of ``n_tokens`` tokens becomes memory slots (``user_index``: 0 for the first user message)."""
        return is_observation(role, n_tokens, user_index, self.config.trajectories.compress_roles,
                              self.layout.compress_threshold, self.model.memory_length, user_min)

    def _spans(self, messages: list[dict], tools: Optional[list[dict]], user_min: Optional[int]):
        """(spans of the prompt, ending with the assistant header; tokens fed after them and not kept)."""
        trajectory = from_messages(messages, "request")
        for i, m in enumerate(trajectory["messages"]):
            if not m["content"].strip() and m["role"] in ("system", "user"):
                raise RequestError(f"messages[{i}] ({m['role']}) has no content", param=f"messages[{i}].content")
        if tools is not None:
            return self._template_spans(messages, tools, user_min)
        turns = render_turns(self.tokenizer, trajectory, self.config.trajectories.compress_roles,
                             self.layout.compress_threshold, self.model.memory_length, self.layout)
        users = 0
        for turn in turns:
            if turn.role == "user":
                turn.compress = self._observation("user", len(turn.content), users, user_min)
                users += 1
        spans = [s for t in turns for s in t.spans(loss=False)]
        header, think = self.assistant_header()
        return spans + [Span(header)], think

    def _template_spans(self, messages: list[dict], tools: list[dict], user_min: Optional[int]):
        """The tools rendering: the pieces of ``icae.data.chat_template`` (the trajectory loader's), each encoded on its
        own, contents of observations compressed."""
        try:
            pieces, prompt = template_pieces(self.tokenizer, messages, tools, self.tools_template)
        except TemplateError as e:
            raise RequestError(str(e), param="messages") from None
        spans, users = [], 0
        for piece in pieces:
            ids = self._encode(piece.text)
            if piece.message is None:
                spans.append(Span(ids))
                continue
            role = messages[piece.message]["role"]
            spans.append(Span(ids, compress=self._observation(role, len(ids), users, user_min)))
            users += role == "user"
        header = self._encode(prompt)
        think: list[int] = []
        _, tail = self.layout.turn_header("assistant")  # a think block the template opens: fed, not kept
        if tail and header[-len(tail):] == tail:
            header, think = header[:-len(tail)], tail
        return spans + [Span(header)], think

    # ------------------------------------------------------------------------------------------ the job
    def _job(self, spans: list[Span], transient: list[int], max_tokens: Optional[int], temperature: float,
             top_p: float, stops: list[str], seed: Optional[int]) -> "Job":
        prompt_tokens = sum(s.ids.numel() for s in spans)
        if prompt_tokens > self.max_prompt_tokens:
            raise RequestError(f"the messages are {prompt_tokens} tokens, more than this server's max_prompt_tokens "
                               f"({self.max_prompt_tokens}): send a shorter conversation",
                               code="context_length_exceeded", param="messages")
        positions = sum(self.model.memory_length(s.ids.numel()) if s.compress else s.ids.numel() for s in spans)
        positions += len(transient)
        window = self.model.args.model_max_length
        left = window - positions
        limit = max_tokens if max_tokens is not None else min(self.default_max_tokens or left, left)
        if limit < 1 or positions + limit > window:
            raise context_error(window, positions, max(limit, 1) if max_tokens is None else limit, prompt_tokens)
        params = SamplingParams(max_new_tokens=limit, do_sample=temperature > 0, temperature=temperature or 1.0,
                                top_p=top_p, stop_token_ids=tuple(self.stop_ids))
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return Job(spans, [Span(transient)] if transient else [], params, stops, generator, lambda event: None,
                   prompt_tokens, positions)
