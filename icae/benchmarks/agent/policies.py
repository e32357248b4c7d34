"""What an agent sends and what each request cost: keeping observations (whole, truncated, LLMLingua), asking a
served model over the OpenAI protocol (greedy), and counting each request's prompt tokens and decoder positions.

Positions come from the server's ``usage.compression.decoder_positions`` where it reports them (``icae serve`` does:
slots counted, not the tokens they replace); otherwise they are estimated from the conversation as sent: its tokens
under the tokenizer's chat template, each observation of at least ``min_tokens`` tokens counted as the slots a
compressor of ``rate`` would give it (``mem_size`` per segment of ``mem_size x rate`` tokens), and the record says
``"source": "estimated"``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from icae.agent import TOOLS, StopEpisode
from icae.models.segments import num_segments


def kept_tokens(n: int, budget_tokens: int | None, budget_rate: float | None) -> int:
    """How many of an observation's ``n`` tokens a budget keeps: ``budget_tokens``, or ``n // budget_rate`` (the
    peers benchmark's rule, icae.benchmarks.quality), at least one and never more than ``n``."""
    keep = budget_tokens if budget_tokens is not None else int(n // budget_rate)
    return max(1, min(n, keep))


def observation_indices(messages: list[dict]) -> list[int]:
    """The messages that are tool outputs (``tool`` turns, in both modes): what a budget applies to."""
    return [i for i, m in enumerate(messages) if m.get("role") == "tool" and isinstance(m.get("content"), str)]


class Truncate:
    """Each observation of at least ``min_tokens`` tokens cut to its budget: its first tokens (or last)."""

    def __init__(self, tokenizer, min_tokens: int, budget_tokens: int | None, budget_rate: float | None,
                 keep: str = "first"):
        self.tokenizer, self.min_tokens, self.keep = tokenizer, min_tokens, keep
        self.budget_tokens, self.budget_rate = budget_tokens, budget_rate

    def text(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < self.min_tokens:
            return text
        k = kept_tokens(len(ids), self.budget_tokens, self.budget_rate)
        return self.tokenizer.decode(ids[:k] if self.keep == "first" else ids[-k:])

    def __call__(self, messages: list[dict]) -> list[dict]:
        out = [dict(m) for m in messages]
        for i in observation_indices(out):
            out[i]["content"] = self.text(out[i]["content"])
        return out


class LLMLingua:
    """Each observation of at least ``min_tokens`` tokens compressed by LLMLingua (its own environment, as in the
    peers benchmark: :func:`icae.benchmarks.peers.run_peer`, the tokenizer's model as its scorer) to its budget;
    each text compressed once (a cache), new ones in one worker call per request."""

    def __init__(self, tokenizer, model_dir: str, min_tokens: int, budget_tokens: int | None,
                 budget_rate: float | None):
        self.tokenizer, self.model_dir, self.min_tokens = tokenizer, model_dir, min_tokens
        self.budget_tokens, self.budget_rate = budget_tokens, budget_rate
        self.cache: dict[str, str] = {}

    def __call__(self, messages: list[dict]) -> list[dict]:
        from icae.benchmarks.peers import portable_model_dir, run_peer

        out = [dict(m) for m in messages]
        todo: dict[float, list[str]] = {}  # the worker takes one list of rates for all its texts
        for i in observation_indices(out):
            text = out[i]["content"]
            n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if n >= self.min_tokens and text not in self.cache:
                todo.setdefault(kept_tokens(n, self.budget_tokens, self.budget_rate) / n, []).append(text)
        with tempfile.TemporaryDirectory() as tmp:
            scorer = portable_model_dir(self.model_dir, Path(tmp) / "scorer") if todo else None
            for rate, texts in todo.items():
                result, why = run_peer("llmlingua", {"model_dir": str(scorer), "texts": texts, "rates": [rate],
                                                     "threads": 1})
                if result is None:
                    raise RuntimeError(f"LLMLingua: {why}")
                self.cache.update({t: row["compressed"] for t, row in zip(texts, result[0]["rows"])})
        for i in observation_indices(out):
            out[i]["content"] = self.cache.get(out[i]["content"], out[i]["content"])
        return out


def estimate(messages: list[dict], tokenizer, mode: str, rate: float = 1.0, mem_size: int = 8,
             min_tokens: int = 32, template: str | None = None) -> tuple[int, int]:
    """(prompt tokens, decoder positions) of a request, counted here: the conversation under ``template`` (the text
    of a chat template; None: the tokenizer's own), tools rendered in tool mode, then each observation of at least
    ``min_tokens`` tokens replaced by ``num_segments x mem_size`` slots when ``rate`` > 1."""
    tools = TOOLS if mode == "tools" else None
    prompt = len(tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, chat_template=template)["input_ids"])
    positions = prompt
    if rate > 1:
        for i in observation_indices(messages):
            n = len(tokenizer(messages[i]["content"], add_special_tokens=False)["input_ids"])
            if n >= min_tokens:
                positions -= n - num_segments(n, mem_size, rate) * mem_size
    return prompt, positions


class Measured:
    """A policy that records each request: ``ask(messages) -> (reply, usage or None)``; the messages are first kept
    as the agent keeps its observations (``keeper``). Per request: prompt tokens, decoder positions and where they
    came from, completion tokens, KV MiB (positions after the reply x ``kv_bytes_per_position``), seconds."""

    def __init__(self, ask: Callable, mode: str, keeper: Callable | None = None, tokenizer=None,
                 kv_bytes_per_position: int | None = None, rate: float = 1.0, mem_size: int = 8,
                 min_tokens: int = 32, template: str | None = None):
        self.ask, self.mode, self.keeper, self.tokenizer = ask, mode, keeper, tokenizer
        self.kv_bytes, self.rate, self.mem_size, self.min_tokens = kv_bytes_per_position, rate, mem_size, min_tokens
        self.template = template  # the chat template text the estimate renders with (None: the tokenizer's)
        self.requests: list[dict] = []

    def __call__(self, messages: list[dict]):
        sent = self.keeper(messages) if self.keeper else messages
        start = time.perf_counter()
        reply, usage = self.ask(sent)
        seconds = time.perf_counter() - start
        usage = usage or {}
        positions = (usage.get("compression") or {}).get("decoder_positions")
        tokens, source = usage.get("prompt_tokens"), "server"
        if positions is None and self.tokenizer is not None:
            counted, positions = estimate(sent, self.tokenizer, self.mode, self.rate, self.mem_size, self.min_tokens,
                                          self.template)
            tokens, source = tokens if tokens is not None else counted, "estimated"
        elif positions is None:
            source = None
        completion = usage.get("completion_tokens") or 0
        kv = None if positions is None or self.kv_bytes is None else (positions + completion) * self.kv_bytes / 2**20
        self.requests.append({"prompt_tokens": tokens, "decoder_positions": positions, "source": source,
                              "completion_tokens": completion, "kv_mib": kv, "seconds": seconds})
        return reply


def served_ask(client, model: str, mode: str, max_tokens: int) -> Callable:
    """``messages -> (reply, usage)`` of a served model, greedy; a request the server's context window cannot hold
    ends the episode (:class:`StopEpisode`), as an agent would have to stop there."""
    import openai

    def ask(messages: list[dict]):
        extra = {"tools": TOOLS} if mode == "tools" else {}
        try:
            r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=max_tokens,
                                               **extra)
        except openai.BadRequestError as e:
            body = e.body if isinstance(e.body, dict) else {}
            if (body.get("code") or (body.get("error") or {}).get("code")) == "context_length_exceeded":
                raise StopEpisode(f"context_length_exceeded: {body.get('message') or e}") from None
            raise
        message = r.choices[0].message
        usage = r.usage.model_dump() if r.usage is not None else None
        return (message if mode == "tools" else message.content or ""), usage

    return ask
