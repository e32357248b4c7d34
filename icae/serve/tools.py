"""Tool calls in the Hermes format (how Qwen2.5/Qwen3 write them, and how vLLM and SGLang parse them for Qwen).

The model writes each call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` in its text. A reply is
split into the text before the first call (the message's ``content``) and the calls (its ``tool_calls``), only when
every call block is a JSON object naming an offered function with object arguments: anything else (a truncated call,
JSON that does not parse, an unknown function) is returned as the plain text it is, never an error.

``ToolStream`` does the same on a stream: text is sent as content until a call may be starting, the calls are sent
once the reply is complete (each call's arguments in one delta, which the OpenAI chunk format allows).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Optional

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass
class Parsed:
    content: Optional[str]  # the message's text (None: only calls)
    calls: list[dict] = field(default_factory=list)  # OpenAI tool_calls: {"id", "type", "function": {name, arguments}}


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(block: str, names: set[str]) -> Optional[dict]:
    """One call block's JSON -> an OpenAI tool call; None when it is not a well-formed call of an offered function."""
    try:
        payload = json.loads(block)
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("name") not in names:
        return None
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"id": call_id(), "type": "function",
            "function": {"name": payload["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}}


def parse(text: str, names: set[str], parallel: bool = True) -> Parsed:
    """Split a complete reply into content and tool calls (see the module's docstring). ``parallel`` False keeps the
    first call only (``parallel_tool_calls: false``)."""
    start = text.find(OPEN)
    if start < 0:
        return Parsed(text)
    calls, rest, after = [], text[start:], []
    while rest.startswith(OPEN):
        end = rest.find(CLOSE)
        block = rest[len(OPEN):] if end < 0 else rest[len(OPEN):end]
        call = _call(block.strip(), names)
        if call is None:
            return Parsed(text)
        calls.append(call)
        rest = "" if end < 0 else rest[end + len(CLOSE):]
        if rest.strip() and not rest.lstrip().startswith(OPEN):
            after.append(rest.strip())  # text after the last call: kept in the content
            break
        rest = rest.lstrip()
    content = "\n".join(x for x in (text[:start].rstrip(), *after) if x)
    return Parsed(content or None, calls if parallel else calls[:1])


class ToolStream:
    """Incremental ``parse``: ``feed`` the reply's text deltas, get the content that is safe to send now; ``finish``
    gives the rest of the content and the calls. The content sent in all equals ``parse(text).content``."""

    def __init__(self, names: set[str], parallel: bool = True, prefix: str = ""):
        self.names, self.parallel = names, parallel
        self.text, self.sent, self.in_call = "", 0, False
        if prefix:  # tokens the server wrote for the model (tool_choice required / named): a call is begun
            self.feed(prefix)

    def feed(self, delta: str) -> str:
        self.text += delta
        if self.in_call:
            return ""
        start = self.text.find(OPEN)
        if start >= 0:
            self.in_call = True
            ready = len(self.text[:start].rstrip())
        else:
            held = next((n for n in range(min(len(OPEN) - 1, len(self.text)), 0, -1)  # a tail that may open a call
                         if OPEN.startswith(self.text[-n:])), 0)
            ready = len(self.text[:len(self.text) - held].rstrip())  # blanks wait: they are dropped before a call
        out = self.text[self.sent:ready] if ready > self.sent else ""
        self.sent = max(self.sent, ready)
        return out

    def finish(self) -> tuple[str, list[dict]]:
        """(content still to send, tool calls)."""
        parsed = parse(self.text, self.names, self.parallel)
        return (parsed.content or "")[self.sent:], parsed.calls  # what was sent is always a prefix of the content
