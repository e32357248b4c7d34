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

``--tools``: the same tasks (the same functions for the same seed) written as OpenAI tool calls, the form a served
model emits ``tool_calls`` in: each record is what the agent environment's tool-mode oracle run records
(:func:`icae.agent.tool_trajectory`: assistant messages with one tool call of :data:`icae.agent.TOOLS` each, ``tool``
results carrying the call's id), with ``"tools": TOOLS``; the trajectory loader renders it as ``icae serve`` renders
those messages and tools. A task whose oracle run does not succeed (a file whose line numbering the tools read
differently) is left out and counted.

``--renames K``: after each trajectory, K renamed copies of it (:mod:`icae.data.renamed_tasks`: the same file and
line under a new function name and another definition's summary, made by the tools on a scratch copy of the tree whose
function file says them),
so that a model trained on them must copy the name, path, line and summary from what it reads instead of recalling
them. Ids ``<id>_r<k>``; the new names and summaries are drawn from the sources' own identifiers and docstrings.
``--rename_paths``: each copy also under a new tree (directory) name and a new file name for its function's file, so
that the path is new too (the held-out tasks' trees and files are names no training tree has).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sysconfig
import tempfile
from pathlib import Path

from icae.agent import HELDOUT_SOURCES, TOOLS, Task, TaskTree, heldout_tasks, oracle_policy, run_episode, tool_trajectory
from icae.agent.tasks import HELDOUT_PACKAGES
from icae.data import renamed_tasks as rn
from icae.data import trajectory_tools as tt
from icae.data.corpus import stdlib_dir, top_level_modules
from icae.data.tool_context import site_packages
from icae.data.trajectory_tools import NO_OUTPUT, SYSTEM, WINDOW  # noqa: F401  (the generator's public names)
from icae.errors import UserError, entry
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


def make_trajectory(root: Path, function: tuple[str, str, int, str], index: int, statement: str = "plain") -> dict:
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
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": tt.instruction(name, summary, statement)}]
    for (thought, command), observation in zip(tt.reference_steps(path, name, line, def_line, summary), observations):
        messages += [{"role": "assistant", "content": tt.assistant_text(thought, command)},
                     {"role": "tool", "content": observation}]
    return {"id": f"{Path(path).stem}__{name}__{index}", "messages": messages}


def tool_record(tree: TaskTree, function: tuple[str, str, int, str], index: int,
                statement: str = "plain") -> dict | None:
    """The tool-call trajectory of ``function``'s task on ``tree`` (None when the oracle's run does not succeed)."""
    path, name, line, summary = function
    def_line = (tree.root / path.split("/", 1)[1]).read_text(encoding="utf-8").splitlines()[line - 1]
    task = Task(tree, path, name, line, def_line, summary, statement)
    episode = run_episode(oracle_policy(task, "tools"), task, max_steps=len(task.reference), mode="tools")
    if not episode.success:
        return None
    return {"id": f"{Path(path).stem}__{name}__{index}", "messages": episode.messages, "tools": TOOLS}


def heldout_inside(sources: list[Path]) -> list[str]:
    """The held-out files of the agent benchmark (:data:`icae.agent.HELDOUT_SOURCES`) that lie under ``sources``:
    training trajectories must not read the trees its tasks come from."""
    heldout = [*top_level_modules("n", "z", stdlib_dir()), *(site_packages() / n for n in HELDOUT_PACKAGES)]
    roots = [s.resolve() for s in sources]
    return sorted({str(h) for h in heldout for r in roots
                   if h.resolve() == r or h.resolve().is_relative_to(r) or r.is_relative_to(h.resolve())})


def generate(sources: list[Path], num: int, seed: int = 0, tools: bool = False, renames: int = 0,
             statement: str = "plain", rename_paths: bool = False) -> list[dict]:
    """``num`` trajectories (at most one per function) drawn by ``seed``; ``tools``: as tool calls (the same tasks);
    ``renames``: each followed by that many renamed copies (the copies drawn by ``seed`` too), with
    ``rename_paths`` each also under a new tree and file name; ``statement``: how each task is stated
    (:func:`icae.data.trajectory_tools.instruction`)."""
    if statement not in tt.STATEMENTS:
        raise ValueError(f"statement must be one of {tt.STATEMENTS}, got {statement!r}")
    if renames < 0:
        raise ValueError(f"renames must be >= 0, got {renames}")
    if rename_paths and not renames:
        raise ValueError("rename_paths moves the renamed copies: give renames >= 1 too")
    candidates = []
    for root in sources:
        if not root.is_dir():
            raise FileNotFoundError(f"no such directory: {root}")
        candidates += [(root, f) for f in _functions(root)]
    if not candidates:
        raise ValueError(f"no documented, uniquely named top-level function in {[str(s) for s in sources]}")
    rng = random.Random(seed)
    chosen = rng.sample(candidates, min(num, len(candidates)))
    if not tools:
        rows = [make_trajectory(root, f, i, statement) for i, (root, f) in enumerate(chosen)]
    else:
        trees = {root: TaskTree.whole(root) for root in sources}
        rows = [tool_record(trees[root], f, i, statement) for i, (root, f) in enumerate(chosen)]
    kept = [(r, root, f) for r, (root, f) in zip(rows, chosen) if r is not None]
    if not renames:
        return [r for r, _, _ in kept]
    return renamed(kept, sources, renames, seed, tools, statement, rename_paths)


def renamed(kept: list[tuple[dict, Path, tuple]], sources: list[Path], renames: int, seed: int,
            tools: bool, statement: str = "plain", rename_paths: bool = False) -> list[dict]:
    """Each record followed by ``renames`` copies (:mod:`icae.data.renamed_tasks`), each made by the same tools on a
    scratch copy of its tree whose function file says a new name and summary (ids ``<id>_r<k>``); with
    ``rename_paths`` the copy's tree and file are also moved to new names (:func:`~icae.data.renamed_tasks.moved`),
    drawn after the name and summary from the same generator."""
    texts = [p.read_text(encoding="utf-8", errors="replace") for root in sources for p in tt.python_files(root)]
    taken = rn.identifiers(texts)
    parts, pool, rng = rn.name_parts(taken), rn.summaries(texts), random.Random(f"renames-{seed}")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch, trees = {}, {}  # source root -> its scratch copy (made once, under the same name: paths shown alike)
        for i, root in enumerate(sources):
            scratch[root] = Path(tmp) / str(i) / root.name
            shutil.copytree(root, scratch[root], symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
            trees[root] = TaskTree.whole(scratch[root])
        for record, root, (path, name, line, summary) in kept:
            out.append(record)
            copy_root = scratch[root]
            rel = path.split("/", 1)[1]  # the file, relative to its tree's root
            for k in range(1, renames + 1):
                to_name, to_summary = rn.draw(rng, name, summary, parts, pool, taken)
                place = rn.new_place(rng, parts, rel, trees[root].files) if rename_paths else None
                with contextlib.ExitStack() as stack:
                    tree_root, tree, rel_now = copy_root, trees[root], rel
                    if place is not None:
                        tree_root, rel_now = stack.enter_context(rn.moved(copy_root, place[0], rel, place[1])), place[1]
                        tree = TaskTree.whole(tree_root)
                    stack.enter_context(rn.renamed_file(tree_root / rel_now, name, summary, to_name, to_summary))
                    function = (f"{tree_root.name}/{rel_now}", to_name, line, to_summary)
                    made = (tool_record(tree, function, 0, statement) if tools
                            else make_trajectory(tree_root, function, 0, statement))
                if made is not None:  # (the oracle's run failing on a renamed file: left out, as for originals)
                    out.append({**made, "id": f"{record['id']}_r{k}"})
    return out


def write_heldout(p: argparse.ArgumentParser, a: argparse.Namespace) -> Path:
    """``--heldout N``: the benchmark's held-out tasks' reference trajectories (tool calls), ids the tasks' ids."""
    problems = [f"--heldout must be 1 or more, got {a.heldout}"] if a.heldout < 1 else []
    given = [flag for flag, on in (("--source", a.source), ("--stdlib", a.stdlib), ("--renames", a.renames),
                                   ("--rename_paths", a.rename_paths)) if on]
    if given:
        problems.append(f"--heldout writes the benchmark's own tasks: drop {', '.join(given)}")
    if problems:
        raise UserError("; ".join(problems))
    tasks = heldout_tasks(a.heldout, a.seed, statement=a.statement)
    atomic_write_jsonl(a.out, [{"id": t.id, "messages": tool_trajectory(t), "tools": TOOLS} for t in tasks])
    print(f"{a.out}: the reference trajectories of {len(tasks)} held-out tasks (seed {a.seed}, statement "
          f"{a.statement}; tool calls)")
    return Path(a.out)


def main(argv: list[str] | None = None) -> Path:
    """The recipe (also ``python -m icae.scripts.generate_trajectories``): it lives here so that the earlier command
    ``python -m icae.data.generate_trajectories`` runs this module without the library importing a recipe."""
    p = argparse.ArgumentParser(description="Write SWE-agent-style trajectories with real observations.")
    p.add_argument("--source", nargs="*", default=[], help="Source directories.")
    p.add_argument("--stdlib", nargs="*", default=[], help="Standard-library packages (json email http ...).")
    p.add_argument("--num", type=int, default=20, help="Number of trajectories (at most one per function).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tools", action="store_true", help="Write OpenAI tool calls, with the tools list.")
    p.add_argument("--statement", choices=tt.STATEMENTS, default="plain",
                   help="How each task is stated: plain (the recipes' data so far), or tokens (quoting `def name(` and "
                        "`# summary` as the actions write them, so that copying repeats the same tokens).")
    p.add_argument("--renames", type=int, default=0,
                   help="After each trajectory, this many renamed copies (a new function name and summary).")
    p.add_argument("--rename_paths", action="store_true",
                   help="Each renamed copy also under a new tree (directory) name and a new name for the function's "
                        "file, so that paths are copied too (needs --renames).")
    p.add_argument("--heldout", type=int, metavar="N",
                   help="Instead: the reference trajectories of the agent benchmark's first N held-out tasks for --seed "
                        "(the tasks `make bench-agent` runs), as tool calls: to score an agent teacher-forced, turn by "
                        "turn, on them (inference_trajectories eval_dataset_repo=OUT). Not training data.")
    p.add_argument("--out", required=True, help="Output .jsonl file.")
    a = p.parse_args(argv)
    if a.heldout is not None:
        return write_heldout(p, a)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [Path(s) for s in a.source] + [stdlib / n.replace(".", "/") for n in a.stdlib]
    if not sources:
        p.error("give --source DIR and/or --stdlib PACKAGE")
    inside = heldout_inside(sources)
    if inside:
        raise UserError(f"{len(inside)} file(s) of the agent benchmark's held-out trees ({', '.join(HELDOUT_SOURCES)}) "
                        f"lie in the sources, e.g. {inside[:3]}: write training trajectories from other trees "
                        "(the recipes use the DOWNSTREAM packages json email http logging urllib concurrent importlib "
                        "xml.etree)")
    problems = [f"--renames must be 0 or more, got {a.renames}"] if a.renames < 0 else []
    if a.rename_paths and a.renames < 1:
        problems.append("--rename_paths moves the renamed copies: give --renames 1 or more too")
    if problems:
        raise UserError("; ".join(problems))
    try:
        rows = generate(sources, a.num, a.seed, a.tools, a.renames, a.statement, a.rename_paths)
    except (FileNotFoundError, ValueError) as e:  # a source that is missing, or too poor to draw tasks or copies from
        raise UserError(f"{e} (sources: {[str(s) for s in sources]}; --num {a.num}, --renames {a.renames})") from None
    atomic_write_jsonl(a.out, rows)
    print(f"{a.out}: {len(rows)} trajectories" + (" (tool calls)" if a.tools else ""))
    return Path(a.out)


if __name__ == "__main__":  # the earlier entry point
    entry(main)
