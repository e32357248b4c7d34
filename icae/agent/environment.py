"""The agent environment: a task's tree in a temporary copy, the trajectories' tools implemented in Python over it,
a step limit, and success read from the final state.

    with Environment(task, max_steps=20) as env:
        step = env.step(reply)            # or env.step(message, mode="tools")
        ...
        env.check().success

Each tool's observation is the text :mod:`icae.data.trajectory_tools` formats for the generated trajectories, so a
model trained on them reads the same text here. Nothing a model writes is executed: ``search_dir`` reads files,
``open`` shows them, ``edit`` rewrites the open file, ``python -m py_compile`` compiles the file's bytes in-process
(``compile()``: nothing is imported or run) and ``submit`` shows the diff and ends the episode. Every path goes through
:class:`~icae.agent.workspace.Workspace`, which refuses what leads outside the copy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from icae.agent.actions import Action, read_reply
from icae.agent.tasks import Task
from icae.agent.workspace import Located, Refused, Workspace
from icae.data import trajectory_tools as tt


@dataclass(frozen=True)
class Step:
    observation: str
    action: Action | None  # None: a format error
    refused: bool  # a path outside the copy was refused
    done: bool  # submitted, or the step limit reached
    call_ids: tuple[str, ...] = ()  # tool mode: the ids the observation answers
    message: dict | None = None  # the assistant message, as the conversation keeps it


@dataclass(frozen=True)
class Check:
    """Success from the final state, and what fell short."""

    success: bool
    problems: tuple[str, ...]


def compiles(source: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(source, "<agent>", "exec", dont_inherit=True)
        except Exception:  # SyntaxError and its kinds, ValueError (null bytes)
            return False
    return True


class Environment:
    def __init__(self, task: Task, max_steps: int = 20):
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.task, self.max_steps = task, max_steps
        self.workspace = Workspace(task.tree)
        self.steps = self.format_errors = self.refusals = 0
        self.submitted = False
        self.actions: list[Action | None] = []
        self.current: Located | None = None  # the open file, which edit changes
        self._originals: dict[str, bytes] = {}  # a file's bytes before its first edit

    @property
    def done(self) -> bool:
        return self.submitted or self.steps >= self.max_steps

    def step(self, reply, mode: str = "text") -> Step:
        """One turn: read the reply's action (a format error is an observation and counts as a step), run it."""
        if self.done:
            raise RuntimeError("the episode is over (submitted or at its step limit)")
        reading = read_reply(reply, mode)
        self.steps += 1
        self.actions.append(reading.action)
        refused = False
        if reading.action is None:
            self.format_errors += 1
            observation = reading.error
        else:
            try:
                observation = self.execute(reading.action)
            except Refused as e:
                self.refusals += 1
                refused, observation = True, str(e)
            except OSError as e:  # e.g. a file the copy cannot read: the agent is told, the episode goes on
                observation = f"Error: {e.strerror or type(e).__name__}"
        return Step(observation, reading.action, refused, self.done, reading.call_ids, reading.message)

    # --- the tools ---

    def execute(self, action: Action) -> str:
        """The observation of one action (:class:`Refused` for a path outside the copy)."""
        tools = {"search_dir": self._search_dir, "open": self._open_file, "edit": self._edit,
                 "py_compile": self._py_compile, "submit": self._submit}
        return tools[action.name](action)

    def _search_dir(self, action: Action) -> str:
        where = self.workspace.locate(action.path or ".")
        if not where.path.is_dir():
            return f"Directory {action.path} not found"
        files = [(self.workspace.shown(p), p.read_text(encoding="utf-8", errors="replace"))
                 for p in tt.python_files(where.path) if self.workspace.inside(p) and p.is_file()]
        return tt.search(action.text, files)

    def _open_file(self, action: Action) -> str:
        where = self.workspace.locate(action.path)
        if not where.path.exists():
            return f"File {action.path} not found"
        if not where.path.is_file():
            return f"Error: {action.path} is a directory. You can only open files."
        lines = where.path.read_bytes().decode("utf-8", errors="replace").splitlines()
        line, warning = 1 if action.line is None else action.line, ""
        if line < 1:
            return f"Error: <line> must be at least 1, got {line}"
        if line > len(lines):
            warning = (f"Warning: <line> ({line}) is greater than the number of lines in the file ({len(lines)})\n"
                       f"Warning: Setting <line> to {len(lines)}\n")
            line = max(len(lines), 1)
        self.current = where
        return warning + tt.window(where.shown, lines, line)

    def _edit(self, action: Action) -> str:
        if self.current is None:
            return "No file open. Use the open command first."
        where = self.workspace.locate(self.current.shown)  # checked again: the file may have become a link
        data = where.path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return f"Error: {where.shown} is not UTF-8 text; it cannot be edited."
        lines = text.splitlines()
        if not 1 <= action.start <= action.end <= len(lines):
            return (f"Error: edit {action.start}:{action.end} must name lines within 1-{len(lines)} of "
                    f"{where.shown}, the start not after the end.")
        edited = lines[:action.start - 1] + list(action.lines) + lines[action.end:]
        try:
            "".join(action.lines).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, which JSON can spell ("\ud800")
            return "Error: the new lines are not valid UTF-8 text; nothing was changed."
        self._originals.setdefault(self.workspace.shown(where.path), data)  # keyed by the file, not a link to it
        self.workspace.write(where, "\n".join(edited) + ("\n" if text.endswith("\n") else ""))
        return tt.window(where.shown, edited, action.start)

    def _py_compile(self, action: Action) -> str:
        where = self.workspace.locate(action.path)
        if not where.path.exists():
            return f"[Errno 2] No such file or directory: {action.path!r}"
        if not where.path.is_file():
            return f"[Errno 21] Is a directory: {action.path!r}"
        return tt.compile_output(where.path.read_bytes(), action.path)

    def _submit(self, action: Action) -> str:
        self.submitted = True
        out = []
        for shown in self.workspace.changed():
            path = self.workspace.root / shown
            after = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            before = self._originals.get(shown, b"")
            out.append(tt.diff(shown, before.decode("utf-8", errors="replace"), after.decode("utf-8", errors="replace")))
        return "".join(out) or tt.NO_OUTPUT

    # --- the outcome ---

    def check(self) -> Check:
        """Success: the task's file is its original with one line added, right after the ``def`` line: the comment
        ``# <summary>`` (any indentation); the file compiles; no other file of the tree was added, removed or changed
        (sha256 against the copy as made)."""
        task, problems = self.task, []
        others = [p for p in self.workspace.changed() if p != task.path]
        if others:
            problems.append(f"other files changed: {', '.join(others[:5])}" + (" ..." if len(others) > 5 else ""))
        path = self.workspace.root / task.path
        if path.is_symlink() or not path.is_file():
            return Check(False, tuple(problems + [f"{task.path} is gone"]))
        data = path.read_bytes()
        before = self._originals.get(task.path, data).decode("utf-8").splitlines()
        after = data.decode("utf-8", errors="replace").splitlines()
        n = task.line
        if after == before:
            problems.append(f"{task.path} is unchanged")
        elif len(after) != len(before) + 1 or after[:n] != before[:n] or after[n + 1:] != before[n:]:
            problems.append(f"{task.path}: the change is not one line added after line {n} (the def line)")
        elif after[n].strip() != f"# {task.summary}":
            problems.append(f"{task.path}: line {n + 1} is {after[n].strip()!r}, not '# {task.summary}'")
        if not compiles(data):
            problems.append(f"{task.path} does not compile")
        return Check(not problems, tuple(problems))

    def close(self) -> None:
        self.workspace.close()

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
