"""Renamed copies of a generated trajectory: the same file, function and line, under a new function name and a new
summary, so that an agent can only solve its task by copying them from what it reads.

Trained on the generator's trajectories as they are, the tiny agents learned the names instead of the copying: each
of a few hundred functions appears several times, always with its own name, path, line and summary, and the first
action of a held-out task names a function seen in training (docs/agent_env.md, "What failed"). A renamed copy
breaks that link: its function name is made of identifier parts of the training trees in a new combination that no
file defines, and its summary is the first docstring line of another definition of those trees.

Each copy is made as the original was, by running the tools, on a copy of the tree in which only the function's
file was rewritten by :func:`rename_text` (the new name wherever the old one stood as a whole word, the new summary
where the old one stood): the search, file windows, compile output and diff are what the tools show on that tree
(another file's ``# def walk(`` comment still says ``walk``; a path or a tool's description naming the function is
left as it is). :func:`icae.data.generate_trajectories.renamed` does this for the generator's ``--renames``.

With ``--rename_paths`` a copy also moves: its tree gets a new directory name and the function's file a new file name
(:func:`new_place`, :func:`moved`), so the paths the agent reads and writes are new too. Trained on trees with a few
dozen directory and file names, an agent learns to pick one of those names rather than to copy the one the search
printed, and opens `distutils/util.py` for a held-out `stdlib/pydoc.py` (docs/agent_env.md, "Paths it never read").
"""

from __future__ import annotations

import ast
import contextlib
import keyword
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

_PART = re.compile(r"^[a-z]{2,10}$")


def _nodes(sources: Iterable[str]) -> Iterator[ast.AST]:
    """Every node of every source that parses (the others are skipped, as the generator skips them)."""
    for source in sources:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        yield from ast.walk(tree)


def identifiers(sources: Iterable[str]) -> set[str]:
    """Every name a source defines or uses (functions, classes, arguments, variables, attributes)."""
    names = set()
    for node in _nodes(sources):
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
    for node in _nodes(sources):
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


def draw(rng: random.Random, name: str, summary: str, parts: list[str], pool: list[str],
         taken: set[str]) -> tuple[str, str]:
    """A new name (added to ``taken``) and a summary of ``pool`` other than ``summary`` and not naming ``name``."""
    others = [s for s in pool if s != summary and name not in s]
    if not others:
        raise ValueError("no other docstring summary in the sources to give a renamed copy: add sources")
    to_name = new_name(rng, parts, taken)
    taken.add(to_name)
    return to_name, rng.choice(others)


@contextlib.contextmanager
def renamed_file(file: Path, name: str, summary: str, to_name: str, to_summary: str) -> Iterator[None]:
    """``file`` rewritten by :func:`rename_text` for the duration of the block (a file of a scratch copy of the
    tree: the caller's), its text put back after."""
    original = file.read_text(encoding="utf-8")
    file.write_text(rename_text(original, name, summary, to_name, to_summary), encoding="utf-8")
    try:
        yield
    finally:
        file.write_text(original, encoding="utf-8")


def new_place(rng: random.Random, parts: list[str], rel: str, files: Iterable[str]) -> tuple[str, str]:
    """A directory name for a tree (one or two name parts; by chance, rarely, the tree's own) and a new name for its
    file ``rel`` (a path relative to the tree's root; the same directory, one or two parts + ``.py``, no file of
    ``files`` already)."""
    if len(parts) < 2:
        raise ValueError(f"need at least 2 name parts, got {len(parts)}")
    files = set(files)
    tree = "_".join(rng.choice(parts) for _ in range(rng.choice((1, 2))))
    for _ in range(1000):
        stem = "_".join(rng.choice(parts) for _ in range(rng.choice((1, 2))))
        moved_rel = PurePosixPath(rel).with_name(f"{stem}.py").as_posix()
        if moved_rel not in files and not keyword.iskeyword(stem):
            return tree, moved_rel
    raise ValueError("no new file name found in 1000 draws: too few name parts")


@contextlib.contextmanager
def moved(root: Path, tree: str, rel: str, moved_rel: str) -> Iterator[Path]:
    """For the duration of the block, the tree at ``root`` (a scratch copy: the caller's) renamed to ``tree`` (in the
    same parent) with its file ``rel`` moved to ``moved_rel``; yields the tree's new root. Put back after."""
    new_root = root.with_name(tree)
    if new_root != root and new_root.exists():
        raise FileExistsError(f"{new_root} exists: a scratch tree needs a parent of its own")
    root.rename(new_root)
    try:
        (new_root / rel).rename(new_root / moved_rel)
        try:
            yield new_root
        finally:
            (new_root / moved_rel).rename(new_root / rel)
    finally:
        new_root.rename(root)
