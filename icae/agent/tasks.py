"""Tasks of the agent environment: document one function of a code tree, as the generated trajectories do.

A :class:`TaskTree` names the files an episode copies (a package directory, or a bundle of top-level modules); a
:class:`Task` is one documented function of it, with what "done" means and the reference actions that solve it.
:func:`heldout_tasks` draws tasks from trees no training run of this project reads (see :data:`HELDOUT_SOURCES`).
"""

from __future__ import annotations

import functools
import os
import random
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from icae.data import trajectory_tools as tt
from icae.data.corpus import stdlib_dir, top_level_modules

# The held-out trees, and why no training run read them (icae.data.corpus, icae.data.tool_context):
# - the top-level standard-library modules n-z: the base LMs and compressors train on modules a-m and the stdlib
#   packages ("wide" corpus); n-z are their held-out evaluation text; the trajectory and RepoQA builders read only the
#   DOWNSTREAM packages (json, email, http, logging, urllib, concurrent, importlib, xml); training tool outputs come
#   from modules a-m and the packages;
# - the installed packages yaml and tqdm: held-out trees of the tool-output generator, read by no training split.
# (nltk, the third held-out package there, is left out: ~300 files to copy and search every episode.)
HELDOUT_SOURCES = ("stdlib n-z", "yaml", "tqdm")
HELDOUT_PACKAGES = ("yaml", "tqdm")


@dataclass(frozen=True)
class TaskTree:
    """Files an episode works on: ``root/<f>`` for each ``f`` of ``files``, copied to ``<workspace>/<name>/<f>``;
    the agent sees paths ``<name>/<f>``."""

    root: Path
    name: str
    files: tuple[str, ...]  # relative to root, posix, sorted; symbolic links among them stay links

    def __post_init__(self):
        if not self.files:
            raise ValueError(f"tree {self.name} ({self.root}) has no file")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"a tree's name is one path component, got {self.name!r}")
        bad = [f for f in self.files if f.startswith("/") or ".." in Path(f).parts]
        if bad:
            raise ValueError(f"tree {self.name}: files must lie under its root, got {bad[:3]}")

    @classmethod
    def whole(cls, root: Path, name: str | None = None) -> TaskTree:
        """Every file under ``root`` (links kept, directories behind links not entered, ``__pycache__`` skipped)."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"no such directory: {root}")
        files = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            links = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and d not in links]
            files += [(Path(dirpath) / f).relative_to(root).as_posix() for f in filenames + links]
        return cls(root, name or root.name, tuple(sorted(files)))

    def python_sources(self) -> list[tuple[str, Path]]:
        """``(path shown, file)`` of its ``.py`` files, in the order the generator's search walks a directory."""
        chosen = [self.root / f for f in self.files
                  if f.endswith(".py") and "__pycache__" not in Path(f).parts and (self.root / f).is_file()]
        return [(f"{self.name}/{p.relative_to(self.root).as_posix()}", p) for p in sorted(chosen)]


@dataclass(frozen=True)
class Task:
    """Add the comment ``# <summary>`` right after the ``def`` line of ``function`` in ``path``; done when that is the
    only change in the tree and the file compiles."""

    tree: TaskTree
    path: str  # as the agent sees it: "<tree name>/<file>"
    function: str
    line: int  # of the ``def`` line, 1-based
    def_line: str
    summary: str
    statement: str = "plain"  # how the task is stated (icae.data.trajectory_tools.instruction): plain or tokens

    def __post_init__(self):
        if not self.path.startswith(f"{self.tree.name}/"):
            raise ValueError(f"task path {self.path} is not in tree {self.tree.name}")
        if self.line < 1 or not self.def_line.lstrip().startswith(("def ", "async def ")):
            raise ValueError(f"task {self.id}: line {self.line} is not a def line: {self.def_line!r}")
        if self.statement not in tt.STATEMENTS:
            raise ValueError(f"task {self.id}: statement must be one of {tt.STATEMENTS}, got {self.statement!r}")

    @property
    def id(self) -> str:
        return f"{self.path}::{self.function}"

    @property
    def instruction(self) -> str:
        return tt.instruction(self.function, self.summary, self.statement)

    @property
    def comment(self) -> str:
        return tt.comment_for(self.def_line, self.summary)

    @property
    def reference(self) -> list[tuple[str, str]]:
        """The ``(thought, command)`` steps of the generated trajectory for this function."""
        return tt.reference_steps(self.path, self.function, self.line, self.def_line, self.summary)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _plain_lines(text: str) -> bool:
    """Whether ``str.splitlines`` (the generator's line numbers) and newlines alone (an editor's) count the same
    lines: no form feed, carriage return or other separator inside a line."""
    lines = text.split("\n")
    return text.splitlines() == (lines[:-1] if text.endswith("\n") else lines)


def tasks_from_tree(tree: TaskTree, plain_lines: bool = True) -> list[Task]:
    """A task per documented, uniquely named public top-level function of the tree (the generator's choice), in
    file order; with ``plain_lines``, only in files whose lines every tool numbers alike (see :func:`_plain_lines`).
    Listed once per process for a tree (parsing the n-z modules takes seconds)."""
    return list(_tasks(tree, plain_lines))


@functools.lru_cache(maxsize=16)
def _tasks(tree: TaskTree, plain_lines: bool) -> tuple[Task, ...]:
    sources = [(shown, _read(p)) for shown, p in tree.python_sources()]
    sources = [(shown, text) for shown, text in sources if text is not None]
    texts = dict(sources)
    tasks = []
    for path, name, line, summary in tt.documented_functions(sources):
        if plain_lines and not _plain_lines(texts[path]):
            continue
        tasks.append(Task(tree, path, name, line, texts[path].splitlines()[line - 1], summary))
    return tuple(tasks)


def heldout_trees(stdlib: Path | None = None, site: Path | None = None) -> list[TaskTree]:
    """The trees of :data:`HELDOUT_SOURCES`: the top-level standard-library modules n-z as one tree ``stdlib``, and
    the installed packages yaml and tqdm."""
    from icae.data.tool_context import site_packages

    stdlib, site = stdlib or stdlib_dir(), site or site_packages()
    modules = tuple(p.name for p in top_level_modules("n", "z", stdlib))
    trees = [TaskTree(stdlib, "stdlib", modules)]
    for name in HELDOUT_PACKAGES:
        if not (site / name).is_dir():
            raise FileNotFoundError(f"the held-out package {name} is not installed in {site} (make setup installs it)")
        trees.append(TaskTree.whole(site / name))
    return trees


def heldout_tasks(num: int | None = None, seed: int = 0, trees: list[TaskTree] | None = None,
                  statement: str = "plain") -> list[Task]:
    """``num`` tasks (all when None) drawn without replacement from the held-out trees, in a fixed order for
    ``seed``: the same list for every agent compared; ``statement``: how each is stated (the same tasks)."""
    tasks = [t for tree in (trees or heldout_trees()) for t in tasks_from_tree(tree)]
    random.Random(seed).shuffle(tasks)
    tasks = tasks if num is None else tasks[:num]
    return [dataclasses.replace(t, statement=statement) for t in tasks] if statement != "plain" else tasks
