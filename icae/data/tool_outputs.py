"""Realistic tool outputs for pretraining a compressor of what coding agents read, made offline by really running
commands over local trees.

    python -m icae.scripts.write_tool_outputs --split train --out outputs/tool_outputs/train.jsonl --count 2000

Every record is ``{"text", "kind", "command", "cwd", "truncated"}``: ``text`` is stdout and stderr as an agent sees
them (interleaved as printed, cut at a line boundary to ``max_chars`` when longer, ``truncated`` then true),
``command`` the command line (``shlex``-quoted) that was run in ``cwd``. Commands run with ``subprocess`` (never a
shell), a timeout each, a fixed environment (``LC_ALL=C.UTF-8``, ``TZ=UTC``, ``PYTHONHASHSEED=0``, no bytecode
written, ``python``/``pip``/``pytest`` resolved in the running interpreter's environment, git's user config ignored);
commands that write run inside a sandbox copy ``work_dir/<split>-<seed>/<index>`` (``work_dir`` defaults to
``$TMPDIR/icae-tool-outputs``; ``<split>-<seed>`` is locked while a generator writes it, so that only two runs of the
same split and seed wait for each other), removed afterwards unless ``keep_work``.

Kinds (see :mod:`icae.data.tool_kinds`, :mod:`icae.data.tool_swe` and :mod:`icae.data.tool_runs`): ``ls``
(``ls -la``/``-lah``/``-R`` of a sandbox copy, every mtime set to a fixed time from the seed), ``grep``
(``grep -rn``/``-rnw``/``-rl``/``-c`` of an identifier drawn from the tree), ``find``, ``open`` and ``swe_search``
(SWE-agent's ``open`` window and its ``search_dir``/``search_file``/``find_file``, formatted here from the real files
as SWE-agent prints them), ``files`` (``wc -l``, ``head -n``, ``cat``, ``cat -n``, ``sed -n``), ``pytest`` (a test
file importing a real module, with at least one failing test, run with ``-p no:cacheprovider``), ``traceback`` (a ``reproduce.py``
raising a real exception from a real library call), ``git`` (a sandbox copy committed, really edited, then
``git log --stat``/``git diff``/``git status``...; names and dates fixed so hashes are deterministic), ``pip``
(``pip list``/``pip show``), ``py_compile`` (a copy with an injected syntax error) and ``json``
(``python -m json.tool`` of a real JSON file or a generated API-like response, sometimes malformed).

Splits, disjoint by tree (``split_trees``):

- ``train``: what the shipped compressors already train on (``icae.data.corpus.base_corpus_files("wide")``): the
  top-level standard-library modules a-m, and the standard-library packages (and their subpackages) except the
  DOWNSTREAM ones, the SKIPPED directories, ``test`` (it holds DOWNSTREAM tests), ``idlelib``, ``tkinter`` and
  ``turtledemo`` (``EXCLUDED_STDLIB_DIRS``); tracebacks raise from those modules
  only; ``pip show`` and JSON files come from installed distributions other than the held-out ones.
- ``heldout``: trees no training corpus reads: the top-level standard-library modules n-z, and the installed
  packages ``yaml``, ``tqdm`` and ``nltk`` (their site-packages directories); tracebacks raise from those (and from
  ``json``, which no compressor trains on); ``pip show`` of PyYAML, tqdm, nltk.
- Command variants only the held-out split uses (``HELDOUT_ONLY``): ``grep -C``/``-A`` context, ``tail -n``,
  ``git show``. ``pip list`` is train-only (one listing of the one environment).

Each record draws its tree by group (``Context.tree``): the split's top-level modules with probability
``BUNDLE_SHARE``, else a top-level package uniformly and then one of its (sub)package directories.

Deterministic for a seed on a given machine (same interpreter, packages and ``work_dir``): the same seed writes a
byte-identical file, except pytest's own duration (``in 0.12s``), which is kept as printed (``TIME_PATTERN`` masks
it when comparing).
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from icae.data.corpus import DOWNSTREAM, SKIPPED, stdlib_dir, top_level_modules
from icae.errors import UserError

SPLITS = ("train", "heldout")
HELDOUT_PACKAGES = ("yaml", "tqdm", "nltk")
HELDOUT_DISTRIBUTIONS = ("PyYAML", "tqdm", "nltk")
HELDOUT_ONLY = ("grep -C/-A", "tail -n", "git show")
# Standard-library directories that are neither split's: tests (they hold the DOWNSTREAM packages' tests), GUI code
# whose import needs a display, and directories that are not Python code.
EXCLUDED_STDLIB_DIRS = SKIPPED + DOWNSTREAM + ("test", "idlelib", "tkinter", "turtledemo")
TIME_PATTERN = re.compile(r"\b\d+\.\d\ds\b( \(\d+:\d\d:\d\d\))?")  # pytest's "in 0.12s" / "in 61.02s (0:01:01)"
TIMEOUT_S = 60
EMPTY_RETRIES = 5
KIND_WEIGHTS = {"ls": 8, "grep": 11, "find": 6, "open": 12, "swe_search": 6, "files": 9, "pytest": 10,
                "traceback": 12, "git": 10, "pip": 3, "py_compile": 6, "json": 7}
BUNDLE_SHARE = 0.4  # of the records' trees: the top-level modules (a-m or n-z); the rest are packages
FIXED_TIME = 1_715_942_573  # 2024-05-17 10:42:53 UTC: the base mtime of sandbox copies and the first commit


@dataclass(frozen=True)
class Tree:
    """Python files commands run over: a package directory ``root/name``, or (``package`` false) a bundle of
    top-level modules ``files`` directly in ``root``."""

    name: str
    root: Path
    files: tuple[str, ...]  # .py files relative to root, sorted
    package: bool = True

    def __post_init__(self):
        if not self.files:
            raise ValueError(f"tree {self.name} in {self.root} has no Python file")

    @property
    def module(self) -> str:
        """The dotted name a test or snippet imports (a package), or '' for a bundle."""
        return self.name.replace("/", ".") if self.package else ""


def _py_files(directory: Path, root: Path) -> tuple[str, ...]:
    return tuple(sorted(p.relative_to(root).as_posix() for p in directory.rglob("*.py")
                        if "__pycache__" not in p.parts))


def _package_trees(top: Path, root: Path) -> list[Tree]:
    """``top`` and each of its subdirectories that is a package (has ``__init__.py``), as trees."""
    trees = []
    for d in [top] + sorted(p for p in top.rglob("*") if p.is_dir() and (p / "__init__.py").is_file()):
        if "__pycache__" in d.parts:
            continue
        files = _py_files(d, root)
        if files:
            trees.append(Tree(d.relative_to(root).as_posix(), root, files))
    return trees


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def split_trees(split: str, stdlib: Path | None = None, site: Path | None = None) -> list[Tree]:
    """The trees of ``split`` (see the module docstring); train's and heldout's share no file."""
    stdlib, site = stdlib or stdlib_dir(), site or site_packages()
    if split == "train":
        trees = [Tree(".", stdlib, tuple(p.name for p in top_level_modules("a", "m", stdlib)), package=False)]
        for d in sorted(p for p in stdlib.iterdir() if p.is_dir() and p.name not in EXCLUDED_STDLIB_DIRS):
            trees += _package_trees(d, stdlib)
    elif split == "heldout":
        trees = [Tree(".", stdlib, tuple(p.name for p in top_level_modules("n", "z", stdlib)), package=False)]
        for name in HELDOUT_PACKAGES:
            if not (site / name).is_dir():
                raise UserError(f"the held-out package {name} is not installed in {site} (make setup installs it)")
            trees += _package_trees(site / name, site)
    else:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return trees


@dataclass
class Context:
    """What a kind needs to make one record: the split, its trees, a fresh sandbox and a seeded generator."""

    split: str
    trees: list[Tree]
    sandbox: Path
    rng: random.Random
    env: dict = field(default_factory=dict)

    @property
    def heldout(self) -> bool:
        return self.split == "heldout"

    def tree(self, max_files: int | None = None, package: bool | None = None) -> Tree:
        """A tree: the bundle of top-level modules with probability BUNDLE_SHARE, else a top-level package drawn
        uniformly and one of its (sub)package trees (so that nltk's 30 subpackages weigh as much as yaml)."""
        pool = [t for t in self.trees if (max_files is None or len(t.files) <= max_files)
                and (package is None or t.package == package)] or self.trees
        bundles = [t for t in pool if not t.package]
        groups = sorted({t.name.split("/")[0] for t in pool if t.package})
        if bundles and (not groups or self.rng.random() < BUNDLE_SHARE):
            return self.rng.choice(bundles)
        group = self.rng.choice(groups)
        return self.rng.choice([t for t in pool if t.package and t.name.split("/")[0] == group])


@dataclass(frozen=True)
class Output:
    kind: str
    command: list[str]
    cwd: Path
    text: str


def command_env(home: Path) -> dict:
    """The fixed environment every command runs in (``python``, ``pip`` and ``pytest`` are the running
    interpreter's)."""
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8", "TZ": "UTC", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "100",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_NO_COLOR": "1",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_PAGER": "cat", "TERM": "dumb"}


def run(command: list[str], cwd: Path, env: dict, extra_env: dict | None = None) -> str:
    """Run ``command`` (no shell) and return stdout and stderr interleaved as printed."""
    proc = subprocess.run(command, cwd=cwd, env={**env, **(extra_env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S)
    return proc.stdout.decode("utf-8", errors="replace")


def cap(text: str, max_chars: int) -> tuple[str, bool]:
    """``text`` cut at the last line break within ``max_chars`` (at ``max_chars`` if a single line is longer)."""
    if len(text) <= max_chars:
        return text, False
    cut = text.rfind("\n", 0, max_chars)
    return (text[:cut + 1] if cut > 0 else text[:max_chars]), True


@contextmanager
def _locked(work_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``work_dir`` so that two generators never share its sandboxes."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another tool-output generator using {work_dir} (or pass another work_dir)",
                  file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_rng(split: str, seed: int, index: int) -> random.Random:
    """Record ``index``'s generator: a record depends on nothing else, so a longer file extends a shorter one."""
    return random.Random(f"{split}:{seed}:{index}")


def draw_kind(rng: random.Random, kinds: tuple[str, ...] = tuple(KIND_WEIGHTS)) -> str:
    """A record's kind: the first draw of its generator, weighted by ``KIND_WEIGHTS``."""
    return rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]


def kind_runners() -> dict:
    """Each kind's runner, ``Context -> Output`` (imported here, late: the runners' modules import this one)."""
    from icae.data import tool_kinds, tool_runs, tool_swe

    return {"ls": tool_kinds.ls, "grep": tool_kinds.grep, "find": tool_kinds.find, "open": tool_swe.open_window,
            "swe_search": tool_swe.swe_search, "files": tool_kinds.files, "pytest": tool_runs.pytest,
            "traceback": tool_runs.traceback, "git": tool_runs.git, "pip": tool_kinds.pip,
            "py_compile": tool_kinds.py_compile, "json": tool_kinds.json_tool}


def default_work_dir() -> Path:
    return Path(tempfile.gettempdir()) / "icae-tool-outputs"


def generate(split: str, count: int, seed: int = 0, max_chars: int = 12_000, work_dir: Path | None = None,
             kinds: tuple[str, ...] | None = None, keep_work: bool = False) -> Iterator[dict]:
    """Yield ``count`` records of ``split``; record ``i`` depends only on (split, seed, i) and the machine."""
    runners = kind_runners()
    kinds = tuple(kinds or KIND_WEIGHTS)
    unknown = [k for k in kinds if k not in runners]
    if unknown:
        raise UserError(f"unknown kinds {unknown}; choose from {sorted(runners)}")
    if count < 1 or max_chars < 100:
        raise UserError(f"count must be >= 1 (got {count}) and max_chars >= 100 (got {max_chars})")
    trees = split_trees(split)
    work_dir = Path(work_dir or default_work_dir()).resolve() / f"{split}-{seed}"
    with _locked(work_dir):
        for stale in work_dir.glob("[0-9][0-9][0-9][0-9][0-9]"):  # sandboxes a killed run left behind
            shutil.rmtree(stale, ignore_errors=True)
        home = work_dir / "home"
        home.mkdir(exist_ok=True)
        env = command_env(home)
        for i in range(count):
            rng = record_rng(split, seed, i)
            kind = draw_kind(rng, kinds)
            sandbox = work_dir / f"{i:05d}"
            try:
                for _ in range(EMPTY_RETRIES):  # an empty output (find matching nothing) teaches nothing: draw again
                    if sandbox.exists():
                        shutil.rmtree(sandbox)
                    sandbox.mkdir()
                    out = runners[kind](Context(split, trees, sandbox, rng, env))
                    if out.text.strip():
                        break
                text, truncated = cap(out.text, max_chars)
                yield {"text": text, "kind": out.kind, "command": shlex.join(out.command), "cwd": str(out.cwd),
                       "truncated": truncated}
            finally:
                if not keep_work:
                    shutil.rmtree(sandbox, ignore_errors=True)
