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
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from icae.data import tool_kinds, tool_runs, tool_swe
from icae.data.tool_context import (  # noqa: F401  (re-exported: the generator's public names)
    BUNDLE_SHARE,
    EMPTY_RETRIES,
    EXCLUDED_STDLIB_DIRS,
    FIXED_TIME,
    HELDOUT_DISTRIBUTIONS,
    HELDOUT_ONLY,
    HELDOUT_PACKAGES,
    KIND_WEIGHTS,
    SPLITS,
    TIME_PATTERN,
    TIMEOUT_S,
    Context,
    Output,
    Tree,
    cap,
    command_env,
    run,
    site_packages,
    split_trees,
)
from icae.errors import UserError
from icae.utils.io import atomic_write_jsonl


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
    """Each kind's runner, ``Context -> Output``."""
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


def write_tool_outputs(split: str, out: str | Path, count: int, seed: int = 0, max_chars: int = 12_000,
                       work_dir: Path | None = None, kinds: tuple[str, ...] | None = None, keep_work: bool = False,
                       overwrite: bool = False) -> Path:
    """Generate ``count`` records of ``split`` and write them to ``out`` atomically, with a one-line summary (kinds,
    records cut, seconds). An existing ``out`` is replaced only with ``overwrite``, and then said."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass overwrite (--overwrite) to replace it, or choose another file")
    if out.exists():
        print(f"replacing the existing {out}")
    start = time.perf_counter()
    rows = list(generate(split, count, seed, max_chars, work_dir, kinds, keep_work))
    atomic_write_jsonl(out, rows)
    made = Counter(r["kind"] for r in rows)
    print(f"{out}: {len(rows)} {split} records in {time.perf_counter() - start:.0f} s "
          f"({', '.join(f'{k} {n}' for k, n in sorted(made.items()))}; {sum(r['truncated'] for r in rows)} cut)")
    return out


TRAIN_RECORDS = 3000  # generated training tool outputs a build writes when its recipe reads them


def ensure_extra_sources(sources: list[str], count: int = TRAIN_RECORDS, seed: int = 0) -> None:
    """Write the generated training tool outputs (``tool_outputs*.jsonl``) that a recipe's ``extra_dataset_repos``
    names and that are missing; refuse any other missing source."""
    for source in sources:
        if Path(source).exists():
            continue
        if not Path(source).name.startswith("tool_outputs"):
            from icae.config import ConfigError

            raise ConfigError([f"extra_dataset_repos: {source} does not exist"], "build config")
        write_tool_outputs("train", source, count, seed=seed)  # made once, before the first stage that reads them
