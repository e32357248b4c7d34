"""Reading an action out of a model's reply, in the trajectories' command language or as an OpenAI tool call.

Text mode: the reply holds exactly one fenced block (```` ``` ````); its first line is the command (``search_dir``,
``open``, ``edit``, ``python -m py_compile``, ``submit``), and only ``edit`` takes more lines (the new lines, then
``end_of_edit``). Tool mode: the assistant message holds exactly one tool call of :data:`TOOLS`, its arguments a JSON
object. Anything else is a :class:`FormatError`, whose message tells the format; it never escapes the environment as
an exception. Arguments are only parsed (``shlex`` splitting): nothing here, or anywhere in :mod:`icae.agent`, runs
what a model wrote.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from icae.data import trajectory_tools as tt

COMMANDS = ("search_dir", "open", "edit", "python -m py_compile", "submit")
USAGE = {
    "search_dir": 'search_dir "<text>" [<dir>]',
    "open": "open <path> [<line>]",
    "edit": f"edit <start>:<end>, then the new lines, then {tt.END_OF_EDIT} on a line of its own",
    "py_compile": "python -m py_compile <path>",
    "submit": "submit",
}
TEXT_FORMAT = ("Your reply was not formatted correctly: {problem}.\nWrite one short DISCUSSION line, then exactly one "
               "command in a ``` block:\nDISCUSSION\n<one line>\n\n```\n<command>\n```\nCommands: "
               + "; ".join(USAGE.values()) + ".")
TOOL_FORMAT = ("Your reply was not formatted correctly: {problem}.\nCall exactly one of the tools search_dir, open, "
               "edit, py_compile, submit, with its arguments as a JSON object.")
BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


class FormatError(Exception):
    """A reply that holds no well-formed action; ``str()`` is the observation."""


@dataclass(frozen=True)
class Action:
    """One parsed action. ``command`` is its canonical text in the command language: two replies that mean the same
    action (other quoting, a trailing space) have the same ``command``."""

    name: str  # search_dir | open | edit | py_compile | submit
    path: str = ""  # open, py_compile; search_dir's directory ("" for the whole repository)
    text: str = ""  # search_dir's term
    line: int | None = None  # open's line
    start: int = 0  # edit
    end: int = 0
    lines: tuple[str, ...] = ()  # edit's new lines

    @property
    def command(self) -> str:
        if self.name == "search_dir":
            return tt.search_command(self.text, self.path or None)
        if self.name == "open":
            return tt.open_command(self.path, self.line)
        if self.name == "edit":
            return tt.edit_command(self.start, self.end, list(self.lines))
        if self.name == "py_compile":
            return tt.compile_command(self.path)
        return tt.SUBMIT


def _int(value, what: str, fail) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise fail(f"{what} must be a whole number, got {value!r}")


def parse_command(command: str) -> Action:
    """One command of the language (a fenced block's content) -> :class:`Action`, or :class:`FormatError`."""
    fail = lambda problem: FormatError(TEXT_FORMAT.format(problem=problem))  # noqa: E731
    lines = command.strip("\n").split("\n")
    head = lines[0].strip()
    word = head.split(maxsplit=1)[0] if head else ""
    if word == "edit":
        m = re.fullmatch(r"edit\s+(\d+)\s*:\s*(\d+)", head)
        if not m:
            raise fail(f"usage: {USAGE['edit']}")
        body = [line.rstrip("\r") for line in lines[1:]]
        while body and not body[-1].strip():
            body.pop()
        if not body or body[-1].strip() != tt.END_OF_EDIT:
            raise fail(f"the edit does not end with {tt.END_OF_EDIT} on a line of its own")
        return Action("edit", start=int(m.group(1)), end=int(m.group(2)), lines=tuple(body[:-1]))
    if any(line.strip() for line in lines[1:]):
        raise fail("one command per turn (only edit takes more lines)")
    try:
        args = shlex.split(head)
    except ValueError as e:
        raise fail(f"the command cannot be read ({e})") from None
    if not args:
        raise fail("the command block is empty")
    name, rest = args[0], args[1:]
    if name == "search_dir":
        if not 1 <= len(rest) <= 2 or not rest[0]:
            raise fail(f"usage: {USAGE['search_dir']}")
        return Action("search_dir", text=rest[0], path=rest[1] if len(rest) == 2 else "")
    if name == "open":
        if not 1 <= len(rest) <= 2:
            raise fail(f"usage: {USAGE['open']}")
        return Action("open", path=rest[0], line=_int(rest[1], "the line", fail) if len(rest) == 2 else None)
    if name in ("python", "python3") and rest[:2] == ["-m", "py_compile"]:
        if len(rest) != 3:
            raise fail(f"usage: {USAGE['py_compile']}")
        return Action("py_compile", path=rest[2])
    if name == "submit":
        if rest:
            raise fail("submit takes no argument")
        return Action("submit")
    raise fail(f"`{name}` is not a command here (nothing is executed: only the commands below exist)")


def parse_text(reply: str) -> Action:
    """A text-mode reply -> :class:`Action`; no block, several blocks or a bad command -> :class:`FormatError`."""
    if not isinstance(reply, str) or not reply.strip():
        raise FormatError(TEXT_FORMAT.format(problem="the reply is empty"))
    blocks = BLOCK.findall(reply if reply.endswith("\n") else reply + "\n")
    if len(blocks) != 1:
        problem = "no ``` command block" if not blocks else f"{len(blocks)} command blocks (one per turn)"
        raise FormatError(TEXT_FORMAT.format(problem=problem))
    return parse_command(blocks[0])


# --- tool mode ---

def _function(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}}


TOOLS = [
    _function("search_dir", "List the lines of the repository's Python files that contain a text.",
              {"search_term": {"type": "string", "description": "the text to find"},
               "dir": {"type": "string", "description": "a directory to search in (default: the whole repository)"}},
              ["search_term"]),
    _function("open", "Show a file's numbered lines around a line, and make it the file edit changes.",
              {"path": {"type": "string", "description": "the file, relative to the repository root"},
               "line_number": {"type": "integer", "description": "the line to show (default: the first)"}},
              ["path"]),
    _function("edit", "Replace lines start_line..end_line of the open file with replacement_text.",
              {"start_line": {"type": "integer"}, "end_line": {"type": "integer"},
               "replacement_text": {"type": "string", "description": "the new lines, joined by newlines"}},
              ["start_line", "end_line", "replacement_text"]),
    _function("py_compile", "Check that a Python file compiles (python -m py_compile).",
              {"path": {"type": "string", "description": "the file, relative to the repository root"}}, ["path"]),
    _function("submit", "Submit the changes and end the task.", {}, []),
]
TOOL_NAMES = tuple(t["function"]["name"] for t in TOOLS)


def parse_tool_call(name, arguments) -> Action:
    """A tool call's function name and arguments (a JSON string or an object) -> :class:`Action`."""
    fail = lambda problem: FormatError(TOOL_FORMAT.format(problem=problem))  # noqa: E731
    if name not in TOOL_NAMES:
        raise fail(f"there is no tool {name!r}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as e:
            raise fail(f"the arguments of {name} are not JSON ({e})") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise fail(f"the arguments of {name} must be a JSON object")
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)
    unknown = sorted(set(arguments) - set(schema["properties"]))
    missing = [k for k in schema["required"] if k not in arguments]
    if unknown or missing:
        raise fail(f"{name} takes {sorted(schema['properties']) or 'no arguments'}"
                   + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    for key, spec in schema["properties"].items():
        if spec["type"] == "string" and key in arguments and not isinstance(arguments[key], str):
            raise fail(f"{key} must be a string")
    if name == "search_dir":
        if not arguments["search_term"]:
            raise fail("search_term is empty")
        return Action("search_dir", text=arguments["search_term"], path=arguments.get("dir", ""))
    if name == "open":
        line = arguments.get("line_number")
        return Action("open", path=arguments["path"], line=None if line is None else _int(line, "line_number", fail))
    if name == "edit":
        text = arguments["replacement_text"]
        lines = text[:-1].split("\n") if text.endswith("\n") else (text.split("\n") if text else [])
        return Action("edit", start=_int(arguments["start_line"], "start_line", fail),
                      end=_int(arguments["end_line"], "end_line", fail), lines=tuple(lines))
    if name == "py_compile":
        return Action("py_compile", path=arguments["path"])
    return Action("submit")


def tool_call(action: Action) -> dict:
    """The ``{"name", "arguments"}`` (arguments a JSON string) of an action: how a trajectory written as tool calls
    spells it (:func:`parse_tool_call` reads it back to the same action)."""
    if action.name == "search_dir":
        args = {"search_term": action.text} | ({"dir": action.path} if action.path else {})
    elif action.name == "open":
        args = {"path": action.path} | ({"line_number": action.line} if action.line is not None else {})
    elif action.name == "edit":
        # every line ends with a newline, the last too (one trailing newline is dropped when read back)
        args = {"start_line": action.start, "end_line": action.end,
                "replacement_text": "".join(f"{line}\n" for line in action.lines)}
    elif action.name == "py_compile":
        args = {"path": action.path}
    else:
        args = {}
    return {"name": action.name, "arguments": json.dumps(args, ensure_ascii=False)}


TOOL_SYSTEM = ("You are an autonomous programmer working in a repository. Each turn, write one short DISCUSSION line "
               "and call exactly one tool: search_dir, open (a file around a line), edit (lines of the open file), "
               "py_compile, submit.")


@dataclass(frozen=True)
class Reading:
    """What a reply said: its action, or the format error's observation; the ids of its tool calls (tool mode), and
    the assistant message as it enters the conversation."""

    action: Action | None
    error: str | None
    call_ids: tuple[str, ...]
    message: dict


def read_reply(reply, mode: str = "text") -> Reading:
    """A policy's reply -> :class:`Reading`. Text mode: a string, or a message whose ``content`` is one. Tool mode: a
    message (a dict, or an object with ``model_dump()`` such as the OpenAI client's) with ``tool_calls``."""
    if mode not in ("text", "tools"):
        raise ValueError(f"mode must be 'text' or 'tools', got {mode!r}")
    if hasattr(reply, "model_dump"):
        reply = reply.model_dump()
    if mode == "text":
        content = reply.get("content") if isinstance(reply, dict) else reply
        message = {"role": "assistant", "content": content if isinstance(content, str) else ""}
        try:
            return Reading(parse_text(content), None, (), message)
        except FormatError as e:
            return Reading(None, str(e), (), message)
    content = reply.get("content") if isinstance(reply, dict) else (reply if isinstance(reply, str) else None)
    calls = reply.get("tool_calls") if isinstance(reply, dict) else None
    calls = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    ids = tuple(str(c.get("id") or f"call_{i}") for i, c in enumerate(calls))
    message = {"role": "assistant", "content": content if isinstance(content, str) else None}
    if calls:
        message["tool_calls"] = [c | {"id": i} for c, i in zip(calls, ids)]
    try:
        if len(calls) != 1:
            raise FormatError(TOOL_FORMAT.format(problem="no tool call" if not calls else
                                                 f"{len(calls)} tool calls (one per turn)"))
        function = calls[0].get("function")
        function = function if isinstance(function, dict) else {}
        return Reading(parse_tool_call(function.get("name"), function.get("arguments")), None, ids, message)
    except FormatError as e:
        return Reading(None, str(e), ids, message)
