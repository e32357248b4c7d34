"""The command language of the generated trajectories: the system prompt, how each action is written, and the text of
each observation.

Two places speak it: :mod:`icae.data.generate_trajectories` writes training trajectories in it, and the agent
environment :mod:`icae.agent` runs it for a model. Both format through this module, so the text a model is trained on
is the text the environment shows it (``tests/agent`` checks that the environment, replaying a generated trajectory's
actions, gives its observations byte for byte).

Commands: ``search_dir "<text>" [<dir>]``, ``open <path> <line>``, ``edit <start>:<end>`` + the new lines +
``end_of_edit`` (lines ``start``..``end`` replaced), ``python -m py_compile <path>`` and ``submit``. Observations:
the grep-style search result, a numbered window of ``WINDOW`` lines around a line, the output ``python -m py_compile``
prints (computed in-process: nothing is executed), and the unified diff of the edits at ``submit``.
"""

from __future__ import annotations

import ast
import difflib
import os
import py_compile
import shlex
import warnings
from collections.abc import Iterable
from pathlib import Path

SYSTEM = ("You are an autonomous programmer working in a repository. Each turn, write one short DISCUSSION line and "
          "one command in a ``` block. Commands: search_dir <text>, open <path> <line>, "
          "edit <start>:<end> with the new lines and end_of_edit, python -m py_compile <path>, submit.")
WINDOW = 24  # lines an ``open`` or ``edit`` shows
SEARCH_HITS = 20  # matching lines a search lists (all of them are counted)
NO_OUTPUT = "Your command ran successfully and did not produce any output."
END_OF_EDIT = "end_of_edit"
SUBMIT = "submit"
# The warning categories a Python started without -W or -X dev does not print (its default filters).
SILENT_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


STATEMENTS = ("plain", "tokens")


def instruction(name: str, summary: str, statement: str = "plain") -> str:
    """The task statement: the user turn that opens a trajectory.

    ``plain`` (every recipe's data so far) names the function after a backtick and quotes the summary; a BPE
    tokenizer then spells their first pieces otherwise than the actions do (``locate`` after a backtick, `` locate``
    after ``def``; ``Return`` after a quote, `` Return`` after ``#``), so an agent must learn to map one token to
    another before it can copy. ``tokens`` quotes exactly what the actions write, ``def locate(`` and
    ``# <summary>``, so that copying is repeating the same tokens."""
    if statement == "tokens":
        return f"Add the comment line `# {summary}` right under the line of `def {name}(`."
    if statement != "plain":
        raise ValueError(f"statement must be one of {STATEMENTS}, got {statement!r}")
    return f"Add a comment under the definition of `{name}` that summarises it: \"{summary}\""


def comment_for(def_line: str, summary: str) -> str:
    """The comment line the task asks for: the summary, indented one level below the ``def`` line."""
    indent = " " * (len(def_line) - len(def_line.lstrip()) + 4)
    return f"{indent}# {summary}"


# --- actions ---

def assistant_text(thought: str, command: str) -> str:
    """An assistant turn in text mode: a DISCUSSION line, then the command in a fenced block."""
    return f"DISCUSSION\n{thought}\n\n```\n{command}\n```"


def search_command(term: str, directory: str | None = None) -> str:
    """``search_dir "<term>"`` (the quotes keep a term with spaces one argument; ``shlex`` reads it back)."""
    if any(c in term for c in '"\\$`'):  # characters that double quotes do not keep literally
        quoted = shlex.quote(term)
    else:
        quoted = f'"{term}"'
    return f"search_dir {quoted}" + (f" {directory}" if directory is not None else "")


def open_command(path: str, line: int | None = None) -> str:
    return f"open {path}" + (f" {line}" if line is not None else "")


def edit_command(start: int, end: int, lines: list[str]) -> str:
    return "\n".join([f"edit {start}:{end}", *lines, END_OF_EDIT])


def compile_command(path: str) -> str:
    return f"python -m py_compile {path}"


def reference_steps(path: str, name: str, line: int, def_line: str, summary: str) -> list[tuple[str, str]]:
    """The five ``(thought, command)`` steps that solve a task: search, open at the ``def`` line, insert the comment
    after it (the edit repeats the ``def`` line), compile, submit."""
    return [
        (f"I need to find where `{name}` is defined.", search_command(f"def {name}(")),
        (f"It is defined in {path} at line {line}. Let me open it there.", open_command(path, line)),
        (f"I will insert the comment after line {line}.",
         edit_command(line, line, [def_line, comment_for(def_line, summary)])),
        ("Let me check that the file still compiles.", compile_command(path)),
        ("The comment is in place and the file compiles. Submitting.", SUBMIT),
    ]


# --- observations ---

def window(path: str, lines: list[str], center: int) -> str:
    """``WINDOW`` numbered lines from ``center - WINDOW/2`` (kept inside the file), between ``[File: ...]`` and the
    counts of lines above and below."""
    start = max(1, center - WINDOW // 2)
    end = min(len(lines), start + WINDOW - 1)
    body = "\n".join(f"{i}:{lines[i - 1]}" for i in range(start, end + 1))
    above, below = start - 1, len(lines) - end
    return (f"[File: {path} ({len(lines)} lines total)]\n({above} more lines above)\n{body}\n"
            f"({below} more lines below)")


def python_files(directory: Path) -> list[Path]:
    """The ``.py`` files under ``directory`` in ``sorted(Path)`` order, outside ``__pycache__``; symbolic links to
    directories are not followed (as ``Path.rglob`` does), links to files are listed; what is not a regular file
    (a FIFO, whose reading would block; a broken link) is not."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        found += [Path(dirpath) / f for f in filenames if f.endswith(".py") and (Path(dirpath) / f).is_file()]
    return sorted(found)


def search(term: str, files: Iterable[tuple[str, str]]) -> str:
    """Every line of ``files`` (``(path shown, text)``, in order) that contains ``term``, as ``path:N:line`` (stripped);
    all are counted, the first ``SEARCH_HITS`` listed."""
    hits = []
    for shown, text in files:
        for i, line in enumerate(text.splitlines(), 1):
            if term in line:
                hits.append(f"{shown}:{i}:{line.strip()}")
    return f'Found {len(hits)} matches for "{term}" in the repository:\n' + "\n".join(hits[:SEARCH_HITS])


def compile_output(source: bytes, path: str) -> str:
    """What ``python -m py_compile <path>`` prints for a file holding ``source``, computed in-process: ``compile()``
    of the bytes (as py_compile's loader does) with py_compile's own error text, and the warnings a default
    interpreter would print; ``NO_OUTPUT`` when it prints nothing. Nothing is imported or run."""
    error = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for category in SILENT_WARNINGS:
            warnings.simplefilter("ignore", category)
        try:
            compile(source, path, "exec", dont_inherit=True)
        except Exception as e:  # SyntaxError and its kinds, ValueError: py_compile reports every one
            error = py_compile.PyCompileError(type(e), e, path).msg
    lines = source.decode("utf-8", errors="replace").splitlines()
    printed = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno,
                                             lines[w.lineno - 1] if w.lineno and w.lineno <= len(lines) else None)
                      for w in caught)
    return (printed + error).strip() or NO_OUTPUT


def diff(path: str, before: str, after: str) -> str:
    """The unified diff of one file, ``a/<path>`` against ``b/<path>``."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        f"a/{path}", f"b/{path}"))


# --- tasks ---

def documented_functions(files: Iterable[tuple[str, str]]) -> list[tuple[str, str, int, str]]:
    """``(path, name, def line number (1-based), first docstring line)`` of the documented public top-level functions
    of ``files`` (``(path shown, source)``, in order) whose ``def`` fits on one line and whose name is defined once
    in all of them (so that a search for ``def name(`` finds one line). Sources that do not parse are skipped."""
    found, counts = [], {}
    for shown, source in files:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        lines = source.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                counts[node.name] = counts.get(node.name, 0) + 1
        for node in tree.body:
            doc = ast.get_docstring(node) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if doc and lines[node.lineno - 1].rstrip().endswith(":") and not node.name.startswith("_"):
                found.append((shown, node.name, node.lineno, doc.strip().splitlines()[0]))
    return [f for f in found if counts[f[1]] == 1]
