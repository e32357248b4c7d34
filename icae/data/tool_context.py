"""What every tool-output kind shares: the splits' trees, the sandbox context a kind draws from, its output, and
running a command in the fixed environment (the rules are in :mod:`icae.data.tool_outputs`, which drives the kinds;
this module sits below both, so that the kinds never import their driver)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

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
