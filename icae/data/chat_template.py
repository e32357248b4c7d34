"""A conversation with tools, rendered by a chat template into pieces: the one rendering the server feeds a decoder
and the trajectory loader trains on (``icae.serve.render`` and ``icae.data.trajectories`` both call it).

The template is rendered once with a marker in place of each message's content, and the text is cut at the markers,
so each content is a piece of its own (an observation's content can become memory slots), and at the turn of every
assistant message: from where the template's generation prompt for it ends (what the model is asked to continue) to
where the message's rendering ends. Each piece is tokenised on its own, so the ids of a conversation are the same
whoever renders it, and an assistant turn's ids are what a model writes after the generation prompt: its content,
then its tool calls as the template writes them (``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``
lines for the shipped ChatML/Hermes template), then the end of the turn.

Which template: ``chat_template`` (a file) when given, else the tokenizer's own when it renders tools, else the
shipped ChatML template with Hermes tool calls (:data:`TOOLS_TEMPLATE`). Which contents become memory slots:
:func:`is_observation`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

TOOLS_TEMPLATE = Path(__file__).resolve().parents[1] / "assets" / "tokenizer" / "chat_template.jinja"
MARK = "\ue000icae-content-{}\ue001"  # private-use characters: no message or template contains them
MARKS = re.compile("\ue000icae-content-(\\d+)\ue001")


class TemplateError(ValueError):
    """The template cannot render these messages, or renders them in a way pieces cannot be cut from."""


@dataclass(frozen=True)
class Piece:
    """A run of the rendered conversation, tokenised on its own.

    ``message``: the message whose content this is (None: the template's own text). ``owner``: the message whose turn
    the piece belongs to (template text before a content belongs to that content's message; text after the last
    one, to the last). ``loss``: inside an assistant message's turn (after its generation prompt): what a model
    writes."""

    text: str
    message: Optional[int]
    owner: int
    loss: bool = False


def tools_template(tokenizer, chat_template: Optional[str] = None) -> str:
    """The template text that renders tools (see the module's docstring)."""
    if chat_template:
        return Path(chat_template).read_text(encoding="utf-8")
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and "tools" in own:
        return own
    return TOOLS_TEMPLATE.read_text(encoding="utf-8")


def content_text(content) -> str:
    """A message content as text: a string, or a list of parts (their texts joined)."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return content if isinstance(content, str) else str(content)


def with_object_arguments(call: dict) -> dict:
    """A history tool call with its JSON-string arguments as an object, as chat templates expect (they write
    ``arguments | tojson``); arguments that are not a JSON object stay the string they are."""
    call = dict(call)
    fn = dict(call.get("function") or {})
    if isinstance(fn.get("arguments"), str):
        try:
            parsed = json.loads(fn["arguments"])
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            fn["arguments"] = parsed
    call["function"] = fn
    return call


def is_observation(role: str, n_tokens: int, user_index: int, compress_roles, threshold: int,
                   memory_length: Callable[[int], int], user_min: Optional[int]) -> bool:
    """Whether a content of ``n_tokens`` tokens becomes memory slots: a role of ``compress_roles`` (never the
    assistant's), or a user message after the first (``user_index`` > 0; the first is the task) of at least
    ``user_min`` tokens (None: never); in both cases at least ``threshold`` tokens and no more slots than tokens."""
    if role == "user":
        if user_index == 0 or user_min is None or n_tokens < user_min:
            return False
    elif role not in compress_roles or role == "assistant":
        return False
    return n_tokens >= max(threshold, 1) and memory_length(n_tokens) <= n_tokens


def _render(tokenizer, messages: list[dict], tools, template: str, prompt: bool) -> str:
    """The template's text for ``messages`` (contents already markers). Cutting the turns renders every prefix of the
    conversation that ends before an assistant message, and an agent's next request repeats all of them: they are
    kept (keyed by the marked messages as JSON), so a request renders only what is new since the last one."""
    try:
        key = json.dumps([messages, tools])  # key order kept: a template may write dicts as they come
    except (TypeError, ValueError):  # not JSON (a caller's own objects): rendered each time
        return _render_now(tokenizer, messages, tools, template, prompt)
    return _render_kept(tokenizer, key, template, prompt)


@functools.lru_cache(maxsize=1024)
def _render_kept(tokenizer, key: str, template: str, prompt: bool) -> str:
    messages, tools = json.loads(key)
    return _render_now(tokenizer, messages, tools, template, prompt)


def _render_now(tokenizer, messages: list[dict], tools, template: str, prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=prompt,
                                             chat_template=template)
    except Exception as e:  # a template's own raise_exception (e.g. roles out of order)
        raise TemplateError(f"the chat template cannot render these messages: {e}") from None


def template_pieces(tokenizer, messages: list[dict], tools: list[dict], template: str,
                    strict: bool = False) -> tuple[list[Piece], str]:
    """(pieces of the rendered conversation, the generation prompt's text that follows them).

    An assistant message's turn is cut out when the template's rendering of the messages before it, with the
    generation prompt, is a prefix of the whole rendering (so is the rendering up to and with it); ``strict``
    (training, which needs every turn): a TemplateError otherwise, naming the message.
    """
    marked = []
    for i, m in enumerate(messages):
        m = dict(m)
        m["content"] = MARK.format(i) if content_text(m.get("content")) else ""
        if m.get("tool_calls"):
            m["tool_calls"] = [with_object_arguments(c) for c in m["tool_calls"]]
        marked.append(m)
    body = _render(tokenizer, marked, tools, template, False)
    full = _render(tokenizer, marked, tools, template, True)
    if not full.startswith(body):
        raise TemplateError("the chat template's generation prompt does not extend the conversation's rendering")
    turns = {}  # assistant message -> (start, end) of its turn in body
    for k, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        if k == 0:  # nothing before it to render a generation prompt for
            if strict:
                raise TemplateError("messages[0] is an assistant turn: a trajectory starts with a system or user one")
            continue
        before = _render(tokenizer, marked[:k], tools, template, True)
        upto = _render(tokenizer, marked[:k + 1], tools, template, False)
        start, end = len(before), len(upto)
        if body.startswith(before) and body.startswith(upto) and start <= end:
            turns[k] = (start, end)
        elif strict:
            raise TemplateError(f"messages[{k}] (assistant): the chat template's rendering of the conversation before "
                                "it, with the generation prompt, is not where its turn starts in the whole rendering; "
                                "a trajectory needs a template that renders earlier turns as they were generated")
    cuts = {0, len(body)} | {x for span in turns.values() for x in span}
    marks = {}
    for match in MARKS.finditer(body):
        i = int(match.group(1))
        if i in marks.values():
            raise TemplateError(f"the chat template renders messages[{i}]'s content twice; use a chat_template that "
                                "places each content once")
        marks[match.start()] = i
        cuts |= {match.start(), match.end()}
    points = sorted(cuts)
    raw = []  # (text, message or None, loss owner or None)
    for a, b in zip(points, points[1:]):
        i = marks.get(a)
        inside = next((k for k, (s, e) in turns.items() if s <= a < e), None)
        raw.append((content_text(messages[i].get("content")) if i is not None else body[a:b], i, inside))
    # Owners: a turn's pieces are its own; other template text belongs to the next content's message (or turn).
    pieces, owner = [], None
    for j, (text, i, inside) in enumerate(raw):
        if inside is not None:
            owner = inside
        elif i is not None:
            owner = i
        else:
            owner = next((x if x is not None else y for _, y, x in raw[j:] if x is not None or y is not None), owner)
        pieces.append(Piece(text, i, owner if owner is not None else 0, inside is not None))
    return pieces, full[len(body):]
