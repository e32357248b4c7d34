"""Agent trajectories: loading and converting the common formats, and turning a trajectory into decoder spans.

A trajectory is ``{"id": str, "messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}``:
a system prompt, the user's task, then assistant actions and observations (tool output). Sources
(``trajectory_format``):

- ``messages``: OpenAI-style chat JSONL, one ``{"messages": [...]}`` per line (``content`` a string or a list of
  ``{"type": "text", "text": ...}`` parts; assistant ``tool_calls`` are appended to the content as
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` lines). A record with a ``tools`` list (OpenAI function
  schemas) is a tool-call trajectory: its messages keep their ``tool_calls``, and it is rendered as ``icae serve``
  renders a request with those tools (:func:`template_turns`).
- ``swe_smith``: rows of the SWE-smith trajectory datasets: the same ``messages``, possibly stored as a JSON string.
- ``swe_agent``: SWE-agent ``.traj`` files (a file, or a directory of them): ``history`` items with ``role``,
  ``content`` and ``message_type``; demonstrations are dropped and ``observation`` items become ``tool`` turns.
- ``nebius``: rows of nebius/SWE-agent-trajectories: ``trajectory: [{"role": "system"|"user"|"ai", "text": ...}]``;
  ``ai`` turns are the assistant's, and every ``user`` turn after the first (the task) is an observation (``tool``).
- ``auto``: decided from the first record.

Each of them can be a local ``.jsonl``/``.json`` file (``.traj`` for SWE-agent) or a Hugging Face dataset name
(``dataset_repo`` with ``dataset_split``).

Rendering (without ``tools``): every turn is ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` (ChatML, whatever the tokenizer, so that the
turn boundaries are the same for every model family). An observation of a role in ``compress_roles`` whose content
has at least ``min_tokens_to_compress`` tokens (and no fewer tokens than the slots it would become) is compressed: its
content becomes memory slots between its header and footer tokens. The loss is on assistant contents and their ``<|im_end|>`` (the model learns when a turn ends).
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TypedDict

from icae.config import ConfigError
from icae.data.chat_template import TemplateError, is_observation, template_pieces, tools_template
from icae.data.sources import SourceError, hub_dataset, json_file, json_lines, split_tasks
from icae.data.tasks import Split
from icae.models.framing import Layout, NativeLayout, token_ids
from icae.models.memory import Span

ROLES = ("system", "user", "assistant", "tool")


class Message(TypedDict):
    role: str  # one of ROLES
    content: str


class Trajectory(TypedDict, total=False):
    """A converted trajectory: plain dicts, so that a list of them is a ``datasets.Dataset`` as it is. A tool-call
    trajectory also has ``tools`` (the JSON text of its tools list) and a ``tool_calls`` JSON text ("" for none) in
    every message: JSON text, because an Arrow table would merge the schemas' differing keys into one struct."""

    id: str
    messages: list[Message]
    tools: str
FORMATS = ("auto", "messages", "swe_smith", "swe_agent", "nebius")


# ---------------------------------------------------------------------------------------------- converters
def _text(content) -> str:
    """A message content as text: a string, or a list of parts (text parts joined, other parts dropped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _tool_calls(message: dict) -> str:
    calls = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function", call)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        calls.append(f"<tool_call>{json.dumps({'name': fn.get('name'), 'arguments': args}, ensure_ascii=False)}"
                     "</tool_call>")
    return "\n".join(calls)


def from_messages(messages, record_id: str) -> dict:
    """OpenAI-style messages (also SWE-smith's, possibly a JSON string) -> a trajectory."""
    if isinstance(messages, str):
        messages = json.loads(messages)
    out = []
    for m in messages:
        role = m.get("role")
        role = {"function": "tool", "ipython": "tool", "developer": "system"}.get(role, role)
        content = _text(m.get("content"))
        if role == "assistant" and m.get("tool_calls"):
            content = "\n".join(x for x in (content, _tool_calls(m)) if x)
        out.append({"role": role, "content": content})
    return {"id": record_id, "messages": out}


def from_tool_messages(messages, tools, record_id: str) -> dict:
    """OpenAI-style messages with the ``tools`` offered -> a tool-call trajectory (calls kept; :class:`Trajectory`)."""
    if isinstance(messages, str):
        messages = json.loads(messages)
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("function"), dict)
                                              and t["function"].get("name") for t in tools):
        raise SourceError(f"record {record_id}: tools must be a list of OpenAI function tools "
                          '({"type": "function", "function": {"name": ..., "parameters": ...}})')
    names = {t["function"]["name"] for t in tools}
    out = []
    for i, m in enumerate(messages):
        calls = m.get("tool_calls") or []
        unknown = sorted({str((c.get("function") or {}).get("name")) for c in calls} - names)
        if unknown:
            raise SourceError(f"record {record_id}: messages[{i}] calls {unknown}, not among its tools {sorted(names)}")
        out.append({"role": m.get("role"), "content": _text(m.get("content")),
                    "tool_calls": json.dumps(calls, ensure_ascii=False) if calls else ""})
    return {"id": record_id, "messages": out, "tools": json.dumps(tools, ensure_ascii=False)}


def from_swe_agent(traj: dict, record_id: str) -> dict:
    """A SWE-agent ``.traj`` object -> a trajectory. Demonstrations are dropped; nothing else is.

    Every action is kept: an assistant item's text, then its tool calls rendered as in the messages format, and when
    both are empty its ``action`` field. The task statement (user items before the first assistant turn) stays a user
    turn; later observations (``message_type: observation``, or the tool role) become tool turns.
    """
    out, acted = [], False
    for item in traj.get("history", []):
        if item.get("is_demo") or item.get("message_type") == "demonstration":
            continue
        role, content = item.get("role"), _text(item.get("content"))
        if role == "assistant":
            acted = True
            content = "\n".join(x for x in (content, _tool_calls(item)) if x) or _text(item.get("action"))
        elif role == "tool" or (acted and item.get("message_type") == "observation"):
            role = "tool"
        # Any other role stays as written: "user" and "system" are roles, anything else is named as unknown.
        out.append({"role": role, "content": content})
    return {"id": record_id, "messages": out}


def from_nebius(row: dict, record_id: str) -> dict:
    """A nebius/SWE-agent-trajectories row -> a trajectory (``ai`` -> assistant, later ``user`` turns -> tool)."""
    out, seen_user = [], False
    for step in row.get("trajectory", []):
        role = step.get("role")
        if role == "ai":
            role = "assistant"
        elif role == "user":
            role = "tool" if seen_user else "user"
            seen_user = True
        out.append({"role": role, "content": _text(step.get("text", step.get("content")))})
    return {"id": record_id, "messages": out}


def detect_format(record: dict) -> str:
    if "history" in record:
        return "swe_agent"
    if "trajectory" in record:
        return "nebius"
    if "messages" in record:
        return "swe_smith" if isinstance(record["messages"], str) else "messages"
    raise SourceError(f"cannot tell the trajectory format of a record with keys {sorted(record)[:10]}: set "
                      f"trajectory_format to one of {FORMATS[1:]}")


def convert(record: dict, fmt: str, record_id: str) -> dict:
    fmt = detect_format(record) if fmt == "auto" else fmt
    if fmt in ("messages", "swe_smith"):
        if "messages" not in record:
            raise SourceError(f"record {record_id}: no 'messages' field (format {fmt})")
        rid = str(record.get("id", record.get("instance_id", record_id)))
        if record.get("tools"):
            return from_tool_messages(record["messages"], record["tools"], rid)
        return from_messages(record["messages"], rid)
    if fmt == "swe_agent":
        return from_swe_agent(record, record_id)  # a .traj file is named after its instance
    if fmt == "nebius":
        return from_nebius(record, str(record.get("instance_id", record_id)))
    raise SourceError(f"trajectory_format must be one of {FORMATS}, got {fmt!r}")


def _records(source: str, split: str):
    """``(id, record)`` of a trajectory source; ids of records without one are their 1-based line (or record) number,
    the number that errors name."""
    path = Path(source)
    if path.is_dir():
        files = sorted(path.rglob("*.traj"))
        if not files:
            raise SourceError(f"{source}: a directory source must hold SWE-agent .traj files")
        for f in files:
            yield f.stem, json_file(f)
    elif path.is_file():
        if path.suffix in (".json", ".traj"):
            data = json_file(path)
            for i, r in enumerate(data if isinstance(data, list) else [data], 1):
                yield (path.stem if path.suffix == ".traj" else str(i)), r
            return
        for i, record in json_lines(path):
            yield str(i), record
    elif source.endswith((".json", ".jsonl", ".traj")):
        raise SourceError(f"no such file: {source}")
    else:
        ds = hub_dataset(source, split)
        for i, r in enumerate(ds, 1):
            yield str(i), r


def check_trajectory(traj: dict) -> list[str]:
    problems = []
    roles = [m["role"] for m in traj["messages"]]
    bad = sorted({str(r) for r in roles if r not in ROLES})
    if bad:
        problems.append(f"trajectory {traj['id']}: unknown roles {bad} (expected {ROLES})")
    if "assistant" not in roles:
        problems.append(f"trajectory {traj['id']}: no assistant turn to learn or evaluate")
    return problems


def load_trajectories(source: str, fmt: str = "auto", split: str = "train") -> list[dict]:
    """Trajectories from a local file/directory or a hub dataset, converted; one error lists every bad record."""
    if not source:
        raise SourceError("no trajectory source: set dataset_repo (a .jsonl/.json/.traj file, a directory of .traj "
                          "files, or a hub dataset name)")
    if fmt not in FORMATS:
        raise SourceError(f"trajectory_format must be one of {FORMATS}, got {fmt!r}")
    out, problems = [], []
    for rid, record in _records(source, split):
        if not isinstance(record, dict):
            problems.append(f"record {rid}: expected an object, got {type(record).__name__}")
            continue
        try:
            traj = convert(record, fmt, rid)
        except (SourceError, ValueError, AttributeError, TypeError) as e:
            problems.append(f"record {rid}: {e}")
            continue
        problems += check_trajectory(traj)
        out.append(traj)
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SourceError(f"{source}: {len(problems)} problem(s) in trajectories:\n  - "
                          + "\n  - ".join(problems[:20]) + more)
    if not out:
        raise SourceError(f"{source}: no trajectory found")
    return out


# ---------------------------------------------------------------------------------------------- token layout
@dataclass
class Turn:
    """One rendered message: header and footer stay tokens; the content is compressed, learned, or read."""

    role: str
    header: list[int]
    content: list[int]
    footer: list[int]
    compress: bool = False
    think: list[int] = field(default_factory=list)  # original layout: the header's tail, read only while it is made


    @property
    def loss(self) -> bool:
        return self.role == "assistant"

    def spans(self, content: list[int] | None = None, current: bool = False, loss: bool = True) -> list[Span]:
        """The turn as spans; ``content`` replaces the gold content (a generated assistant turn). ``current``: the turn
        being predicted (its header with ``think``); ``loss`` False: no loss even on an assistant turn."""
        content = self.content if content is None else content
        header = self.header + self.think if current else self.header
        if self.compress:
            return [Span(header), Span(content, compress=True), Span(self.footer)]
        return [Span(header), Span(content + self.footer, loss=self.loss and loss)]

    @property
    def num_tokens(self) -> int:
        return len(self.header) + len(self.content) + len(self.footer)


def render_turns(tokenizer, trajectory: dict, compress_roles: list[str], min_tokens_to_compress: int,
                 memory_length=None, layout: Layout | None = None) -> list[Turn]:
    """Tokenise each message of a trajectory; decide which contents are compressed.

    A content is compressed when its role is in ``compress_roles`` (never the assistant's), it has at least
    ``min_tokens_to_compress`` tokens, and, given the model's ``memory_length``, it would not become more slots than it
    has tokens (with ``min_tokens_to_compress: 0`` a 5-token output would otherwise grow to a whole segment of slots).
    SimpleLLM's memory is the tokens themselves: its observations stay marked, so baselines can drop them.

    ``layout`` gives each turn's header, think block and footer (None: ChatML turns, the native layout's). The original
    layout renders turns as the original: user turns and observations framed as user turns of the chat template,
    assistant turns under the assistant header, whose empty think block (Qwen3) is read only by the turn being made;
    the system turn as the template renders it.
    """
    encode = functools.partial(token_ids, tokenizer)
    layout = layout if layout is not None else NativeLayout(None, tokenizer)
    footer = layout.turn_footer
    turns = []
    for m in trajectory["messages"]:
        content = encode(m["content"])
        n = len(content)
        compress = (m["role"] in compress_roles and m["role"] != "assistant" and n >= max(min_tokens_to_compress, 1)
                    and (memory_length is None or memory_length(n) <= n))
        header, think = layout.turn_header(m["role"])
        turns.append(Turn(m["role"], header, content, footer, compress, think))
    return turns


def template_turns(tokenizer, trajectory: dict, template: str, compress_roles: list[str], min_tokens_to_compress: int,
                   memory_length, stop_ids: list[int], user_min: int | None = None) -> list[Turn]:
    """A tool-call trajectory's turns as ``icae serve`` renders its messages with its tools
    (:func:`icae.data.chat_template.template_pieces`, the server's own rendering): the same ids, each piece tokenised
    on its own, and contents compressed by the server's rule (:func:`icae.data.chat_template.is_observation`).

    A turn is the template's text up to a message's content (its header), the content, and, for the last message,
    the text after it. An assistant turn's content is what the model writes after the generation prompt (its content,
    then its tool calls as the template writes them), up to the turn's last stop token; the footer is that token and
    what follows it (``<|im_end|>\n``). Text the template adds after an assistant turn with no content following it
    is a turn of its own (role ``template``: read, never learned).
    """
    messages = [{"role": m["role"], "content": m["content"]}
                | ({"tool_calls": json.loads(m["tool_calls"])} if m.get("tool_calls") else {})
                for m in trajectory["messages"]]
    try:
        pieces, _ = template_pieces(tokenizer, messages, json.loads(trajectory["tools"]), template, strict=True)
    except TemplateError as e:
        raise SourceError(f"trajectory {trajectory['id']}: {e}") from None
    encode = functools.partial(token_ids, tokenizer)
    turns, users = [], 0
    for owner, run in itertools.groupby(pieces, key=lambda p: p.owner):
        run = list(run)
        role = messages[owner]["role"]
        if role == "assistant":
            first = next(j for j, p in enumerate(run) if p.loss)
            last = max(j for j, p in enumerate(run) if p.loss)
            said = [t for p in run[first:last + 1] for t in encode(p.text)]
            end = max((j for j, t in enumerate(said) if t in stop_ids), default=len(said))
            turns.append(Turn(role, [t for p in run[:first] for t in encode(p.text)], said[:end], said[end:]))
            if last + 1 < len(run):
                turns.append(Turn("template", [t for p in run[last + 1:] for t in encode(p.text)], [], []))
            continue
        at = next(j for j, p in enumerate(run) if p.message is not None)
        content = encode(run[at].text)
        compress = is_observation(role, len(content), users, compress_roles, min_tokens_to_compress, memory_length,
                                  user_min)
        users += role == "user"
        turns.append(Turn(role, [t for p in run[:at] for t in encode(p.text)], content,
                          [t for p in run[at + 1:] for t in encode(p.text)], compress))
    return turns


def fed_length(turn: Turn, memory_length) -> int:
    """Decoder positions a turn occupies (``memory_length``: the model's slots for a compressed content)."""
    content = memory_length(len(turn.content)) if turn.compress else len(turn.content)
    return len(turn.header) + content + len(turn.footer)


def truncate(turns: list[Turn], max_tokens: int, memory_length,
             max_assistant_turns: Optional[int] = None) -> list[Turn]:
    """The longest prefix of turns whose decoder input fits in ``max_tokens``, ending with an assistant turn, and
    holding at most ``max_assistant_turns`` of them (None: no limit)."""
    total, keep, assistant = 0, 0, 0
    for i, turn in enumerate(turns):
        total += fed_length(turn, memory_length)
        if total > max_tokens:
            break
        if turn.loss:
            keep, assistant = i + 1, assistant + 1
            if assistant == max_assistant_turns:
                break
    return turns[:keep]


def trajectory_rows(turns: list[Turn], drop_memory: bool = False,
                    as_tokens: bool = False) -> list[tuple[list[Span], list[int]]]:
    """The decoder rows that score every assistant turn of a trajectory, each with the turn index of every span.

    One row when no turn has a think block (under the causal mask it scores each turn on its history), else one row
    per assistant turn (that turn's header reads the think block, the history's do not), as the original trains.
    ``drop_memory``: compressed observations left out (their header and footer stay), the no-memory baseline;
    ``as_tokens``: each read as its tokens where its slots would go, the full-context end of "context value kept".
    """
    if drop_memory and as_tokens:
        raise ValueError("drop_memory and as_tokens exclude each other")

    def spans_of(indexed):
        out, owner = [], []
        for i, spans in indexed:
            for span in spans:
                if not (drop_memory and span.compress):
                    out.append(Span(span.ids, compress=False, loss=span.loss) if as_tokens and span.compress else span)
                    owner.append(i)
        return out, owner

    if not any(t.think for t in turns):
        return [spans_of((i, t.spans()) for i, t in enumerate(turns))]
    return [spans_of([*((j, t.spans(loss=False)) for j, t in enumerate(turns[:i])), (i, turn.spans(current=True))])
            for i, turn in enumerate(turns) if turn.loss]


def turn_stop_ids(tokenizer) -> list[int]:
    """Token ids that end a generated ChatML turn: ``<|im_end|>`` when it is one token, and EOS (a model's own:
    ``model.layout.turn_stop_ids``)."""
    return NativeLayout(None, tokenizer).turn_stop_ids


@dataclass
class TrajectoryCollator:
    """Rendered trajectories ``{"turns": [...]}`` -> ``{"spans": rows}`` for ``model(spans=...)``."""

    def __call__(self, features: list[dict]) -> dict:
        return {"spans": [row for f in features for row, _ in trajectory_rows([Turn(**t) for t in f["turns"]])]}


def load_trajectory_task(config, tokenizer=None) -> Split[Trajectory]:
    """Train and test trajectories: ``eval_dataset_repo`` when set, else a seeded ``test_fraction`` split of
    ``dataset_repo`` (fine-tuning and inference with the same seed see the same split). Conversion needs no
    tokenizer; :func:`rendered` tokenises a trajectory."""
    data = config.data
    if data.task != "trajectories":
        raise ConfigError([f"task: the trajectory recipes run 'trajectories', got {data.task!r}"], "config")
    fmt = config.trajectories.trajectory_format
    trajectories = load_trajectories(data.dataset_repo, fmt, data.dataset_split)
    if data.eval_dataset_repo:
        return Split(trajectories, load_trajectories(data.eval_dataset_repo, fmt, data.eval_split))
    return Split(*split_tasks(trajectories, data.test_fraction, config.seed))


def rendered(config, layout: Layout, trajectory: Trajectory) -> list[Turn]:
    """A trajectory's turns for a model of ``layout`` (its own, :mod:`icae.models.framing`: turn frames, compress
    threshold, memory length), cut to ``max_history_tokens`` of decoder input and to the first
    ``max_assistant_turns`` assistant turns (if set)."""
    if trajectory.get("tools"):  # rendered as icae serve renders the same messages and tools
        template = tools_template(layout.tokenizer, config.serve.chat_template)
        turns = template_turns(layout.tokenizer, trajectory, template, config.trajectories.compress_roles,
                               layout.compress_threshold, layout.memory_length, layout.turn_stop_ids,
                               config.serve.compress_user_min_tokens)
    else:
        turns = render_turns(layout.tokenizer, trajectory, config.trajectories.compress_roles,
                             layout.compress_threshold, layout.memory_length, layout)
    return truncate(turns, config.trajectories.max_history_tokens, layout.memory_length,
                    config.trajectories.max_assistant_turns)
