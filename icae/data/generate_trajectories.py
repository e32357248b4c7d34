"""Write small, realistic SWE-agent-style trajectories over a local Python source tree (offline tests and demos).

    python -m icae.scripts.generate_trajectories --stdlib json email http --num 40 --out outputs/trajectories/train.jsonl

Each trajectory asks the agent to document one function of the tree. The agent searches for its definition, opens
the file at the line the search reported, inserts a comment line after the ``def`` line, checks that the file still
compiles and submits. Observations are real: grep-style search output over the tree, file windows in SWE-agent's
format (``[File: path (N lines total)]`` and numbered lines), the output of actually running
``python -m py_compile`` on the edited copy, and the final unified diff. Each action depends on the previous
observation (the path and line come from the search result; the edit repeats the ``def`` line seen in the window),
so predicting the assistant turns needs what the compressed observations hold.

Output: OpenAI-style chat JSONL, ``{"id", "messages": [{"role", "content"}]}``. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import random
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from icae.errors import entry
from icae.utils.io import atomic_write_jsonl

SYSTEM = ("You are an autonomous programmer working in a repository. Each turn, write one short DISCUSSION line and "
          "one command in a ``` block. Commands: search_dir <text>, open <path> <line>, "
          "edit <start>:<end> with the new lines and end_of_edit, python -m py_compile <path>, submit.")
WINDOW = 24
NO_OUTPUT = "Your command ran successfully and did not produce any output."


def _functions(root: Path) -> list[tuple[str, str, int, str]]:
    """``(path, name, def line number (1-based), first docstring line)`` of documented top-level functions with a
    unique name whose ``def`` fits on one line."""
    found, counts = [], {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                counts[node.name] = counts.get(node.name, 0) + 1
        for node in tree.body:
            doc = ast.get_docstring(node) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if doc and lines[node.lineno - 1].rstrip().endswith(":") and not node.name.startswith("_"):
                found.append((path.relative_to(root.parent).as_posix(), node.name, node.lineno, doc.strip().splitlines()[0]))
    return [f for f in found if counts[f[1]] == 1]


def _window(path: str, lines: list[str], center: int) -> str:
    start = max(1, center - WINDOW // 2)
    end = min(len(lines), start + WINDOW - 1)
    body = "\n".join(f"{i}:{lines[i - 1]}" for i in range(start, end + 1))
    above, below = start - 1, len(lines) - end
    return (f"[File: {path} ({len(lines)} lines total)]\n({above} more lines above)\n{body}\n"
            f"({below} more lines below)")


def _search(root: Path, text: str) -> str:
    hits = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if text in line:
                hits.append(f"{path.relative_to(root.parent).as_posix()}:{i}:{line.strip()}")
    return f'Found {len(hits)} matches for "{text}" in the repository:\n' + "\n".join(hits[:20])


def _compile(source: str) -> str:
    """Really run ``python -m py_compile`` on the edited file; its output, or SWE-agent's no-output line."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "edited.py"
        target.write_text(source, encoding="utf-8")
        run = subprocess.run([sys.executable, "-m", "py_compile", str(target)], capture_output=True, text=True,
                             timeout=60)
    return (run.stdout + run.stderr).replace(str(target), "edited.py").strip() or NO_OUTPUT


def _assistant(thought: str, command: str) -> dict:
    return {"role": "assistant", "content": f"DISCUSSION\n{thought}\n\n```\n{command}\n```"}


def make_trajectory(root: Path, function: tuple[str, str, int, str], index: int) -> dict:
    path, name, line, summary = function
    source = (root.parent / path).read_text(encoding="utf-8")
    lines = source.splitlines()
    def_line = lines[line - 1]
    indent = " " * (len(def_line) - len(def_line.lstrip()) + 4)
    comment = f"{indent}# {summary}"
    edited_lines = lines[:line] + [comment] + lines[line:]
    edited = "\n".join(edited_lines) + ("\n" if source.endswith("\n") else "")
    diff = "".join(difflib.unified_diff(source.splitlines(keepends=True), edited.splitlines(keepends=True),
                                        f"a/{path}", f"b/{path}"))
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Add a comment under the definition of `{name}` that summarises it: "
                                    f"\"{summary}\""},
        _assistant(f"I need to find where `{name}` is defined.", f"search_dir \"def {name}(\""),
        {"role": "tool", "content": _search(root, f"def {name}(")},
        _assistant(f"It is defined in {path} at line {line}. Let me open it there.", f"open {path} {line}"),
        {"role": "tool", "content": _window(path, lines, line)},
        _assistant(f"I will insert the comment after line {line}.",
                   f"edit {line}:{line}\n{def_line}\n{comment}\nend_of_edit"),
        {"role": "tool", "content": _window(path, edited_lines, line)},
        _assistant("Let me check that the file still compiles.", f"python -m py_compile {path}"),
        {"role": "tool", "content": _compile(edited)},
        _assistant("The comment is in place and the file compiles. Submitting.", "submit"),
        {"role": "tool", "content": diff},
    ]
    return {"id": f"{Path(path).stem}__{name}__{index}", "messages": messages}


def generate(sources: list[Path], num: int, seed: int = 0) -> list[dict]:
    candidates = []
    for root in sources:
        if not root.is_dir():
            raise FileNotFoundError(f"no such directory: {root}")
        candidates += [(root, f) for f in _functions(root)]
    if not candidates:
        raise ValueError(f"no documented, uniquely named top-level function in {[str(s) for s in sources]}")
    rng = random.Random(seed)
    chosen = rng.sample(candidates, min(num, len(candidates)))
    return [make_trajectory(root, f, i) for i, (root, f) in enumerate(chosen)]


def main(argv: list[str] | None = None) -> Path:
    """The recipe (also ``python -m icae.scripts.generate_trajectories``): it lives here so that the earlier command
    ``python -m icae.data.generate_trajectories`` runs this module without the library importing a recipe."""
    p = argparse.ArgumentParser(description="Write SWE-agent-style trajectories with real observations.")
    p.add_argument("--source", nargs="*", default=[], help="Source directories.")
    p.add_argument("--stdlib", nargs="*", default=[], help="Standard-library packages (json email http ...).")
    p.add_argument("--num", type=int, default=20, help="Number of trajectories (at most one per function).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="Output .jsonl file.")
    a = p.parse_args(argv)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [Path(s) for s in a.source] + [stdlib / n.replace(".", "/") for n in a.stdlib]
    if not sources:
        p.error("give --source DIR and/or --stdlib PACKAGE")
    rows = generate(sources, a.num, a.seed)
    atomic_write_jsonl(a.out, rows)
    print(f"{a.out}: {len(rows)} trajectories")
    return Path(a.out)


if __name__ == "__main__":  # the earlier entry point
    entry(main)
