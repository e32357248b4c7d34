"""Build a RepoQA-format dataset (Search Needle Function) offline, from any local Python source tree.

    python -m icae.scripts.build_repoqa --stdlib json email http logging --out outputs/repoqa/repoqa.json
    python -m icae.scripts.build_repoqa --source path/to/repo [path/to/other ...] --out data.json.gz --seed 0

Each source directory becomes one repo (``--packages``: each Python package directly under it does). The output has
the release's layout, ``{"python": [repo, ...]}``, each repo with ``repo``, ``commit_sha``, ``entrypoint_path``,
``content`` {path: source}, ``dependency`` {path: [paths it imports]}, ``functions`` {path: [function records]} and
``needles`` [function record + ``path`` + ``description``]. A function record holds ``name``, 0-based
``start_line``/``end_line`` (inclusive) and ``start_byte``/``end_byte`` (end exclusive) in the UTF-8 bytes of its
file, from the ``def`` keyword (decorators excluded, as tree-sitter's function node) to the end of the body.

Needles are functions of at most ``--max_needle_bytes`` bytes (2000 by default) whose name is defined exactly once in
the repo, and that have a docstring and a body besides it. The description is the docstring.

Docstrings: the needle's docstring is *removed* from the repo's content (and so from the needle), unless
``--keep_docstrings``. RepoQA's descriptions are written separately from the code, so a model has to match meaning,
not copy text it can find verbatim in the context; leaving the docstring in would turn the task into string search.

Deterministic: the same sources, seed and options give byte-identical output.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import random
import sysconfig
from collections import Counter
from pathlib import Path

from icae.errors import entry
from icae.utils.io import atomic_path

MAX_NEEDLE_BYTES = 2000
FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def read_sources(root: Path, max_file_bytes: int) -> dict[str, str]:
    """``{relative posix path: source}`` of the tree's parseable UTF-8 ``.py`` files, sorted by path."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts or not path.is_file() or path.stat().st_size > max_file_bytes:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if _parse(text) is not None:
            files[path.relative_to(root).as_posix()] = text
    return files


def _line_starts(source: str) -> list[int]:
    """Byte offset of the start of each line (ast column offsets are UTF-8 byte offsets too)."""
    starts, offset = [], 0
    for line in source.encode("utf-8").splitlines(keepends=True):
        starts.append(offset)
        offset += len(line)
    return starts + [offset]


def function_records(source: str) -> list[dict]:
    """Every function and method of a file, in source order, as RepoQA function records."""
    tree, starts = _parse(source), _line_starts(source)
    records = []
    for node in ast.walk(tree):
        if isinstance(node, FUNCTION_NODES):
            records.append({
                "name": node.name,
                "start_line": node.lineno - 1,
                "end_line": node.end_lineno - 1,
                "start_byte": starts[node.lineno - 1] + node.col_offset,
                "end_byte": starts[node.end_lineno - 1] + node.end_col_offset,
            })
    return sorted(records, key=lambda r: r["start_byte"])


def _docstring_lines(node: ast.AST, lines: list[str]) -> tuple[int, int] | None:
    """0-based line range ``[start, end)`` that holds only the docstring, or None if it shares lines with code."""
    body = node.body
    if len(body) < 2 or ast.get_docstring(node) is None:
        return None
    doc = body[0]
    if doc.lineno == node.lineno or lines[doc.lineno - 1][: doc.col_offset].strip():
        return None  # `def f(): """doc"""` on one line, or code before the docstring
    if doc.end_lineno >= body[1].lineno or lines[doc.end_lineno - 1].encode()[doc.end_col_offset :].strip():
        return None  # code after the docstring on its last line
    return doc.lineno - 1, doc.end_lineno


def _candidates(files: dict[str, str], max_needle_bytes: int) -> list[tuple[str, str, str, tuple[int, int]]]:
    """Needle candidates ``(path, name, description, docstring lines)``: unique names, docstring, small enough."""
    counts = Counter()
    found = []
    for path, source in files.items():
        lines = source.splitlines(keepends=True)
        starts = _line_starts(source)
        for node in ast.walk(_parse(source)):
            if not isinstance(node, FUNCTION_NODES):
                continue
            counts[node.name] += 1
            doc_lines = _docstring_lines(node, lines)
            if doc_lines is None:
                continue
            size = starts[node.end_lineno - 1] + node.end_col_offset - starts[node.lineno - 1] - node.col_offset
            size -= starts[doc_lines[1]] - starts[doc_lines[0]]  # the docstring is removed (unless kept)
            if size <= max_needle_bytes:
                found.append((path, node.name, ast.get_docstring(node).strip(), doc_lines))
    return sorted(c for c in found if counts[c[1]] == 1)


def _python_module(path: str) -> str:
    parts = path[: -len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def dependencies(files: dict[str, str], package: str = "") -> dict[str, list[str]]:
    """``{path: [repo files it imports]}``, resolving absolute imports (with or without the repo's own package name)
    and relative imports."""
    modules = {}
    for path in files:
        name = _python_module(path)
        modules[name] = path
        if package:
            modules[f"{package}.{name}" if name else package] = path
    deps = {}
    for path, source in files.items():
        own = _python_module(path)
        package_parts = own.split(".") if path.endswith("__init__.py") else own.split(".")[:-1]
        wanted = set()
        for node in ast.walk(_parse(source)):
            if isinstance(node, ast.Import):
                wanted.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package_parts[: len(package_parts) - node.level + 1] if node.level > 1 else package_parts
                    base = ".".join(p for p in [*base_parts, node.module or ""] if p)
                else:
                    base = node.module or ""
                wanted.add(base)
                wanted.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
        resolved = set()
        for name in wanted:
            parts = name.split(".")
            for i in range(len(parts), 0, -1):  # the longest prefix that is a repo module
                target = modules.get(".".join(parts[:i]))
                if target is not None:
                    resolved.add(target)
                    break
        resolved.discard(path)
        deps[path] = sorted(resolved)
    return deps


def _strip_lines(source: str, ranges: list[tuple[int, int]]) -> str:
    lines = source.splitlines(keepends=True)
    for start, end in sorted(ranges, reverse=True):
        del lines[start:end]
    return "".join(lines)


def build_repo(root: Path, name: str, rng: random.Random, needles_per_repo: int = 10,
               max_needle_bytes: int = MAX_NEEDLE_BYTES, keep_docstrings: bool = False,
               max_file_bytes: int = 200_000) -> dict | None:
    """One repo record from a source tree; None when it has no usable needle."""
    files = read_sources(root, max_file_bytes)
    candidates = _candidates(files, max_needle_bytes)
    if not candidates:
        return None
    chosen = sorted(rng.sample(candidates, min(needles_per_repo, len(candidates))))
    if not keep_docstrings:
        by_file: dict[str, list[tuple[int, int]]] = {}
        for path, _, _, lines in chosen:
            by_file.setdefault(path, []).append(lines)
        for path, ranges in by_file.items():
            files[path] = _strip_lines(files[path], ranges)
    functions = {path: function_records(source) for path, source in files.items()}
    needles = []
    for path, fname, description, _ in chosen:
        record = next(r for r in functions[path] if r["name"] == fname)
        needles.append({**record, "path": path, "description": description})
    package = root.name if (root / "__init__.py").is_file() else ""
    return {
        "repo": name,
        "commit_sha": None,
        "entrypoint_path": ".",
        "content": files,
        "dependency": dependencies(files, package),
        "functions": functions,
        "needles": needles,
    }


def build_dataset(sources: list[Path], seed: int = 0, packages: bool = False, max_repos: int | None = None,
                  **options) -> dict:
    """``{"python": [repo, ...]}`` from source directories (``packages``: each package directly under each)."""
    roots = []
    for source in sources:
        if not source.is_dir():
            raise FileNotFoundError(f"--source: no such directory: {source}")
        if packages:
            roots += sorted(p for p in source.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
        else:
            roots.append(source)
    rng = random.Random(seed)
    if max_repos is not None and len(roots) > max_repos:
        roots = sorted(rng.sample(roots, max_repos))
    repos = []
    for root in roots:
        repo = build_repo(root, f"local/{root.name}", rng, **options)
        if repo is not None:
            repos.append(repo)
    if not repos:
        raise ValueError(f"no needle found in {[str(s) for s in sources]}: no function with a docstring and a unique "
                         "name fits --max_needle_bytes")
    return {"python": repos}


def write_dataset(data: dict, out: str | Path) -> Path:
    """Write JSON (gzip-compressed when the name ends in .gz) atomically."""
    out = Path(out)
    payload = json.dumps(data, ensure_ascii=False, sort_keys=False).encode("utf-8")
    with atomic_path(out) as tmp:
        if out.suffix == ".gz":
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
                f.write(payload)  # no name, no time in the header: byte-identical output
        else:
            tmp.write_bytes(payload)
    return out


def main(argv: list[str] | None = None) -> Path:
    """The recipe (also ``python -m icae.scripts.build_repoqa``): it lives here so that the earlier command
    ``python -m icae.data.build_repoqa`` runs this module without the library importing a recipe."""
    p = argparse.ArgumentParser(description="Write a RepoQA release-format JSON offline, from any Python tree.")
    p.add_argument("--source", nargs="*", default=[], help="Source directories (each one repo).")
    p.add_argument("--stdlib", nargs="*", default=[], help="Standard-library packages to use as repos (json email ...).")
    p.add_argument("--packages", action="store_true", help="Each package directly under a --source is one repo.")
    p.add_argument("--out", required=True, help="Output .json or .json.gz file.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--needles_per_repo", type=int, default=10)
    p.add_argument("--max_needle_bytes", type=int, default=MAX_NEEDLE_BYTES)
    p.add_argument("--max_repos", type=int, default=None)
    p.add_argument("--keep_docstrings", action="store_true", help="Leave the needles' docstrings in the code.")
    a = p.parse_args(argv)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [Path(s) for s in a.source] + [stdlib / name.replace(".", "/") for name in a.stdlib]
    if not sources:
        p.error("give --source DIR and/or --stdlib PACKAGE")
    data = build_dataset(sources, a.seed, a.packages, a.max_repos, needles_per_repo=a.needles_per_repo,
                         max_needle_bytes=a.max_needle_bytes, keep_docstrings=a.keep_docstrings)
    out = write_dataset(data, a.out)
    counts = ", ".join(f"{r['repo']}: {len(r['needles'])}" for r in data["python"])
    print(f"{out}: {len(data['python'])} repos ({counts} needles)")
    return out


if __name__ == "__main__":  # the earlier entry point
    entry(main)
