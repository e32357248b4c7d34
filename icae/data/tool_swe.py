"""SWE-agent's own file tools for :mod:`icae.data.tool_outputs`, formatted here from the real files as SWE-agent's
shell functions print them: ``open PATH [LINE]`` (its window arithmetic: the requested line a sixth of a window below
the top, the window kept inside the file), ``search_dir TERM DIR``, ``search_file TERM FILE`` and
``find_file NAME DIR``. Paths are absolute, as SWE-agent's ``realpath`` makes them.
"""

from __future__ import annotations

import re
from pathlib import Path

from icae.data.tool_context import Context, Output, run
from icae.data.tool_kinds import identifier, read


def file_lines(text: str) -> list[str]:
    """Lines as ``grep -n $`` and ``awk 'END {print NR}'`` count them: split at newlines only (form feeds and other
    separators that ``str.splitlines`` honours stay inside a line)."""
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") or not text else lines


def open_line(requested: int | None, window: int) -> int:
    """SWE-agent's CURRENT_LINE after ``open path [line]`` (before it is kept inside the file)."""
    if requested is None:
        return window // 2
    return max(requested + window // 2 - window // 6, 1)


def swe_window(path: Path, lines: list[str], current: int, window: int = 100) -> str:
    """SWE-agent's view of ``lines`` around CURRENT_LINE ``current``: kept within ``[window/2, total - window/2]``,
    then ``[File: ...]``, ``(k more lines above)`` if k > 0, the numbered lines ``N:code`` up to ``current +
    window/2``, the last ``window`` of them, and ``(k more lines below)`` if k > 0."""
    total, half = len(lines), window // 2
    current = max(min(current, total - half), half)
    above, below = max(0, current - half), max(0, total - current - half)
    end = min(total, max(current + half, half))
    out = [f"[File: {path} ({total} lines total)]"]
    if above > 0:
        out.append(f"({above} more lines above)")
    out += [f"{i}:{lines[i - 1]}" for i in range(max(1, end - window + 1), end + 1)]
    if below > 0:
        out.append(f"({below} more lines below)")
    return "\n".join(out) + "\n"


def open_window(ctx: Context) -> Output:
    tree = ctx.tree()
    rel = ctx.rng.choice(tree.files)
    lines = file_lines(read(tree.root / rel))
    requested = ctx.rng.randint(1, max(1, len(lines))) if lines and ctx.rng.random() < 0.7 else None
    window = ctx.rng.choice([100, 100, 100, 50, 30, 200])
    text = swe_window((tree.root / rel).resolve(), lines, open_line(requested, window), window)
    return Output("open", ["open", rel] + ([str(requested)] if requested else []), tree.root, text)


def _text_files(directory: Path) -> list[Path]:
    """Files ``find DIR -type f ! -path '*/.*'`` lists that ``grep -I`` reads (no NUL byte: not binary)."""
    out = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts):
            if b"\0" not in path.read_bytes()[:65536]:
                out.append(path)
    return out


def search_dir(term: str, directory: Path) -> str:
    """SWE-agent's ``search_dir``: matching lines counted per file (files in byte order), at most 100 files."""
    directory = directory.resolve()
    counts = {}
    for path in _text_files(directory):
        n = sum(term in line for line in file_lines(read(path)))
        if n:
            counts[path.as_posix()] = n
    if not counts:
        return f'No matches found for "{term}" in {directory}\n'
    if len(counts) > 100:
        return f'More than {len(counts)} files matched for "{term}" in {directory}. Please narrow your search.\n'
    body = "".join(f"{p} ({n} matches)\n" for p, n in sorted(counts.items(), key=lambda kv: kv[0].encode()))
    return (f'Found {sum(counts.values())} matches for "{term}" in {directory}:\n{body}'
            f'End of matches for "{term}" in {directory}\n')


def search_file(term: str, path: Path) -> str:
    """SWE-agent's ``search_file``: each matching line as ``Line N:code``, at most 100 lines."""
    path = path.resolve()
    hits = [(i, line) for i, line in enumerate(file_lines(read(path)), 1) if term in line]
    if not hits:
        return f'No matches found for "{term}" in {path}\n'
    if len(hits) > 100:
        return f'More than {len(hits)} lines matched for "{term}" in {path}. Please narrow your search.\n'
    body = "".join(f"Line {i}:{line}\n" for i, line in hits)
    return f'Found {len(hits)} matches for "{term}" in {path}:\n{body}End of matches for "{term}" in {path}\n'


def find_file(name: str, directory: Path, found: list[str]) -> str:
    """SWE-agent's ``find_file``, given what ``find DIR -type f -name NAME`` printed (in its order)."""
    directory = directory.resolve()
    if not found:
        return f'No matches found for "{name}" in {directory}\n'
    return f'Found {len(found)} matches for "{name}" in {directory}:\n' + "".join(f"{p}\n" for p in found)


def swe_search(ctx: Context) -> Output:
    tree = ctx.tree()
    base = tree.root / tree.name if tree.package else tree.root
    r = ctx.rng.random()
    if r < 0.45 and tree.package:
        term = identifier(ctx, tree)
        return Output("swe_search", ["search_dir", term, tree.name], tree.root, search_dir(term, base))
    if r < 0.8 or not tree.package:
        rel = ctx.rng.choice(tree.files)
        source = read(tree.root / rel)
        names = sorted(set(re.findall(r"\b[A-Za-z_][A-Za-z0-9_]{3,}\b", source))) or ["def"]
        term = ctx.rng.choice(names) if ctx.rng.random() < 0.8 else ctx.rng.choice(["def ", "return", "raise", "import"])
        return Output("swe_search", ["search_file", term, rel], tree.root, search_file(term, tree.root / rel))
    name = Path(ctx.rng.choice(tree.files)).name if ctx.rng.random() < 0.7 else "__init__.py"
    found = run(["find", str(base.resolve()), "-type", "f", "-name", name], tree.root, ctx.env).splitlines()
    return Output("swe_search", ["find_file", name, tree.name], tree.root, find_file(name, base, found))
