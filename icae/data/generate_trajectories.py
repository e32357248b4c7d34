"""Write small, realistic SWE-agent-style trajectories over a local Python source tree (offline tests and demos).

    python -m icae.scripts.generate_trajectories --stdlib json email http --num 40 --out outputs/trajectories/train.jsonl

Each trajectory asks the agent to document one function of the tree. The agent searches for its definition, opens
the file at the line the search reported, inserts a comment line after the ``def`` line, checks that the file still
compiles and submits. Observations are real: grep-style search output over the tree, file windows in SWE-agent's
format (``[File: path (N lines total)]`` and numbered lines), what ``python -m py_compile`` prints for the edited
file (computed in-process: nothing runs), and the final unified diff. Every text is formatted by
:mod:`icae.data.trajectory_tools`, which the agent environment :mod:`icae.agent` shares, so an agent trained on these
trajectories reads the same observations there. Each action depends on the previous
observation (the path and line come from the search result; the edit repeats the ``def`` line seen in the window),
so predicting the assistant turns needs what the compressed observations hold.

Output: OpenAI-style chat JSONL, ``{"id", "messages": [{"role", "content"}]}``. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import random
import sysconfig
from pathlib import Path

from icae.data import trajectory_tools as tt
from icae.data.trajectory_tools import NO_OUTPUT, SYSTEM, WINDOW  # noqa: F401  (the generator's public names)
from icae.errors import entry
from icae.utils.io import atomic_write_jsonl


def _functions(root: Path) -> list[tuple[str, str, int, str]]:
    """``(path, name, def line number (1-based), first docstring line)`` of documented top-level functions with a
    unique name whose ``def`` fits on one line."""
    sources = []
    for path in tt.python_files(root):
        try:
            sources.append((path.relative_to(root.parent).as_posix(), path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
    return tt.documented_functions(sources)


def _search(root: Path, text: str) -> str:
    return tt.search(text, ((p.relative_to(root.parent).as_posix(), p.read_text(encoding="utf-8", errors="replace"))
                            for p in tt.python_files(root)))


def make_trajectory(root: Path, function: tuple[str, str, int, str], index: int) -> dict:
    """The trajectory solving ``function``'s task, each observation what the command shows on the tree (the same
    text :mod:`icae.agent` shows an agent for the same action)."""
    path, name, line, summary = function
    source = (root.parent / path).read_text(encoding="utf-8")
    lines = source.splitlines()
    def_line = lines[line - 1]
    edited_lines = lines[:line] + [tt.comment_for(def_line, summary)] + lines[line:]
    edited = "\n".join(edited_lines) + ("\n" if source.endswith("\n") else "")
    observations = [_search(root, f"def {name}("), tt.window(path, lines, line), tt.window(path, edited_lines, line),
                    tt.compile_output(edited.encode("utf-8"), path), tt.diff(path, source, edited)]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": tt.instruction(name, summary)}]
    for (thought, command), observation in zip(tt.reference_steps(path, name, line, def_line, summary), observations):
        messages += [{"role": "assistant", "content": tt.assistant_text(thought, command)},
                     {"role": "tool", "content": observation}]
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
