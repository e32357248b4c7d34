"""Offline text sources: source code that ships with the Python interpreter.

No hub is reachable on CI or the developers' machines, so demos and tests draw real code from the standard library.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from typing import Iterator

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


def write_stdlib_corpus(out: str | Path, first: str = "n", last: str = "z", root: Path | None = None) -> Path:
    """Write the top-level standard-library modules whose names start with ``first``..``last`` as JSONL records
    ``{"path", "text"}`` (atomically). Modules a-m trained the shipped tiny LM; n-z are text it has never seen.
    """
    from icae.utils.io import atomic_write_jsonl

    root = root or stdlib_dir()
    rows = []
    for path in sorted(root.glob("*.py")):
        if first <= path.name[0].lower() <= last:
            try:
                rows.append({"path": path.name, "text": path.read_text(encoding="utf-8")})
            except UnicodeDecodeError:
                continue
    atomic_write_jsonl(out, rows)
    return Path(out)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write standard-library modules as a JSONL corpus.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--first", default="n")
    parser.add_argument("--last", default="z")
    a = parser.parse_args()
    print(write_stdlib_corpus(a.out, a.first, a.last))
