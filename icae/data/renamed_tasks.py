"""Renamed copies of a generated trajectory: the same file, function and line, under a new function name and a new
summary, so that an agent can only solve its task by copying them from what it reads.

Trained on the generator's trajectories as they are, the tiny agents learned the names instead of the copying: each
of a few hundred functions appears several times, always with its own name, path, line and summary, and the first
action of a held-out task names a function seen in training (docs/agent_env.md, "What failed"). A renamed copy
breaks that link: its function name is made of identifier parts of the training trees in a new combination that no
file defines, and its summary is the first docstring line of another definition of those trees.

Each copy is the trajectory the tools would show on a tree where the function's file says the new name wherever it
said the old one (as a whole word) and the new summary where it said the old: :func:`rename_text` makes that file,
and :func:`renamed_record` the same replacement over a recorded trajectory (contents and tool-call arguments). The
two commute with the tools (tests/data/test_renamed_tasks.py runs the oracle on the renamed file and compares).
"""

from __future__ import annotations

import ast
import copy
import json
import keyword
import random
import re
from collections.abc import Iterable

_PART = re.compile(r"^[a-z]{2,10}$")


def identifiers(sources: Iterable[str]) -> set[str]:
    """Every name a source defines or uses (functions, classes, arguments, variables, attributes)."""
    names = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def name_parts(names: Iterable[str]) -> list[str]:
    """The lowercase words of ``snake_case`` names (2-10 letters, no keyword), sorted: what new names are made of."""
    return sorted({p for n in names for p in n.split("_") if _PART.match(p) and not keyword.iskeyword(p)})


def summaries(sources: Iterable[str]) -> list[str]:
    """First docstring lines of every function, method and class (10-90 characters, no quote or backslash), sorted."""
    found = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                line = doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""
                if 10 <= len(line) <= 90 and line.isprintable() and not set(line) & set("\"\\`"):
                    found.add(line)
    return sorted(found)


def new_name(rng: random.Random, parts: list[str], taken: set[str]) -> str:
    """Two or three parts joined by ``_``, not in ``taken`` (so a search for ``def <name>(`` finds one line)."""
    if len(parts) < 2:
        raise ValueError(f"need at least 2 name parts, got {len(parts)}")
    for _ in range(1000):
        name = "_".join(rng.choice(parts) for _ in range(rng.choice((2, 3))))
        if name not in taken and not keyword.iskeyword(name):
            return name
    raise ValueError("no new name found in 1000 draws: too few name parts")


def rename_text(text: str, name: str, summary: str, to_name: str, to_summary: str) -> str:
    """``text`` with ``summary`` replaced by ``to_summary`` and the whole word ``name`` by ``to_name``, in one pass
    from left to right (so neither replacement rewrites the other's output)."""
    pattern = re.compile(f"({re.escape(summary)})|(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")
    return pattern.sub(lambda m: to_summary if m.group(1) is not None else to_name, text)


def renamed_record(record: dict, name: str, summary: str, to_name: str, to_summary: str, new_id: str) -> dict:
    """A recorded trajectory (``{"id", "messages", ...}``) with the replacement of :func:`rename_text` in every
    message's content and every tool call's arguments (a JSON string: the summary as it is escaped there)."""
    out = copy.deepcopy(record)
    out["id"] = new_id
    escaped = (json.dumps(summary, ensure_ascii=False)[1:-1], json.dumps(to_summary, ensure_ascii=False)[1:-1])
    for message in out["messages"]:
        if isinstance(message.get("content"), str):
            message["content"] = rename_text(message["content"], name, summary, to_name, to_summary)
        for call in message.get("tool_calls") or []:
            function = call["function"]
            function["arguments"] = rename_text(function["arguments"], name, escaped[0], to_name, escaped[1])
    return out


def renamed_copies(record: dict, name: str, summary: str, count: int, rng: random.Random, parts: list[str],
                   pool: list[str], taken: set[str]) -> list[dict]:
    """``count`` renamed copies of ``record`` (ids ``<id>_r<k>``), each with a new name (added to ``taken``) and a
    summary of ``pool`` other than its own."""
    others = [s for s in pool if s != summary and name not in s]
    if not others:
        raise ValueError("no other summary to give a renamed copy")
    copies = []
    for k in range(1, count + 1):
        to_name = new_name(rng, parts, taken)
        taken.add(to_name)
        copies.append(renamed_record(record, name, summary, to_name, rng.choice(others), f"{record['id']}_r{k}"))
    return copies
