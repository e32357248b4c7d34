"""Offline text sources: source code that ships with the Python interpreter.

No hub is reachable on CI or the developers' machines, so demos and tests draw real code from the standard library.
"""

from __future__ import annotations

import argparse
import ast
import sysconfig
from pathlib import Path
from typing import Iterator

from icae.errors import entry
from icae.utils.io import atomic_write_jsonl

DEFAULT_MODULES = ("textwrap", "string", "bisect", "heapq", "shlex", "fnmatch", "glob", "colorsys", "calendar", "difflib")


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_functions(modules=DEFAULT_MODULES, root: Path | None = None) -> Iterator[str]:
    """Yield the source of every top-level function and method in the given standard-library modules, in order."""
    root = root or stdlib_dir()
    for name in modules:
        path = root / f"{name}.py"
        if not path.is_file():
            continue
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_source_segment(source, node)
                if text:
                    yield text + "\n"


def functions_by_length(tokenizer, min_tokens: int, max_tokens: int, limit: int, modules=DEFAULT_MODULES) -> list[str]:
    """The first ``limit`` functions whose length in tokens lies in ``[min_tokens, max_tokens]``."""
    out = []
    for text in iter_functions(modules):
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if min_tokens <= n <= max_tokens:
            out.append(text)
            if len(out) == limit:
                break
    if not out:
        raise ValueError(f"no function of {min_tokens}-{max_tokens} tokens found in modules {list(modules)}")
    return out


# Packages the RepoQA and trajectory builders draw their tasks from: no base LM or compressor trains on them (or on
# their tests), so that a needle is never recalled from training.
DOWNSTREAM = ("json", "email", "http", "logging", "urllib", "concurrent", "importlib", "xml")
# Directories that are data tables rather than code (character maps), or that differ per machine.
SKIPPED = ("encodings", "site-packages", "lib-dynload", "__pycache__", "__phello__")


def _downstream(path: Path, root: Path) -> bool:
    """True for a file of a DOWNSTREAM package, or a test of one (test_json/, test_email.py, test_httplib.py ...)."""
    for part in path.relative_to(root).parts:
        stem = part[:-3] if part.endswith(".py") else part
        if any(stem == pkg or stem.startswith(f"test_{pkg}") for pkg in DOWNSTREAM):
            return True
    return False


def top_level_modules(first: str = "a", last: str = "z", root: Path | None = None) -> list[Path]:
    """Top-level standard-library modules whose names start with ``first``..``last``."""
    root = root or stdlib_dir()
    return sorted(p for p in root.glob("*.py") if first <= p.name[0].lower() <= last)


def base_corpus_files(corpus: str = "wide", root: Path | None = None) -> list[Path]:
    """What the shipped base LMs and compressors train on.

    ``narrow``: the top-level modules a-m. ``wide``: those, plus every package and the test suite, except the
    DOWNSTREAM packages and their tests. Never the top-level modules n-z: the held-out text of the demo.
    """
    root = root or stdlib_dir()
    files = top_level_modules("a", "m", root)
    if corpus == "wide":
        for directory in sorted(d for d in root.iterdir() if d.is_dir() and d.name not in SKIPPED + DOWNSTREAM):
            files.extend(p for p in directory.rglob("*.py") if not _downstream(p, root))
    elif corpus != "narrow":
        raise ValueError(f"corpus must be 'narrow' or 'wide', got {corpus!r}")
    return sorted(set(files))


def write_corpus(out: str | Path, files: list[Path], root: Path | None = None) -> Path:
    """Write ``files`` as JSONL records ``{"path", "text"}`` (atomically); files that are not UTF-8 are skipped."""
    root = root or stdlib_dir()
    rows = []
    for path in files:
        try:
            rows.append({"path": str(path.relative_to(root)), "text": path.read_text(encoding="utf-8")})
        except (UnicodeDecodeError, OSError):
            continue
    atomic_write_jsonl(out, rows)
    return Path(out)


def write_stdlib_corpus(out: str | Path, first: str = "n", last: str = "z", root: Path | None = None) -> Path:
    """Write the top-level standard-library modules ``first``..``last`` as JSONL records ``{"path", "text"}``.
    Modules a-m trained the shipped base LMs; n-z are text they have never seen."""
    return write_corpus(out, top_level_modules(first, last, root), root)


def ensure_build_corpora(corpus: str | Path, held: str | Path) -> None:
    """The text every build reads (``build_compressor``, ``build_simple_llm``), written once and then shared: the base
    corpus (standard-library modules a-m, tests and packages: what the base LM trained on) and modules n-z, held out."""
    if not Path(corpus).is_file():
        write_corpus(corpus, base_corpus_files("wide"))
    if not Path(held).is_file():
        write_stdlib_corpus(held, "n", "z")


def main(argv: list[str] | None = None) -> Path:
    """The recipe (also ``python -m icae.scripts.write_corpus``): it lives here so that the earlier command
    ``python -m icae.data.corpus`` runs this module without the library importing a recipe."""
    parser = argparse.ArgumentParser(description="Write standard-library code as a JSONL corpus.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--first", default="n", help="top-level modules from this letter (default n)")
    parser.add_argument("--last", default="z", help="... to this letter (default z)")
    parser.add_argument("--base", choices=("narrow", "wide"), default=None,
                        help="instead: the base-model corpus (narrow: modules a-m; wide: also packages and tests)")
    a = parser.parse_args(argv)
    out = write_corpus(a.out, base_corpus_files(a.base)) if a.base else write_stdlib_corpus(a.out, a.first, a.last)
    print(out)
    return out


if __name__ == "__main__":  # the earlier entry point
    entry(main)
