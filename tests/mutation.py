"""Mutation testing with mutmut, one target at a time: does a one-line bug in the code make a test fail?

    make mutation                                        # the targets below, one after the other
    python -m tests.mutation metrics [decoding layouts]  # some of them (niced 19, one process, OMP_NUM_THREADS=1)
    python -m tests.mutation known                       # the one-line bugs of issue #23, each must fail a test
    python -m tests.mutation 'metrics=icae.metrics.repoqa.x_score_output*'   # only the mutants of one function

Each target mutates a few files and runs, for each mutant, only the tests of that code (listed here; mutmut then
narrows them further to the tests that call the mutated function), so that a target finishes in minutes on a shared
machine. mutmut works in a copy: ``.mutation/<target>/`` gets the tracked (and untracked, not ignored) files of
``icae/`` and ``tests/`` and a ``setup.cfg`` of its own; the working tree is never touched. The counts go to
``.mutation/<target>/stats.json`` and every surviving mutant's diff to ``.mutation/<target>/survivors.txt``; what
was found and which survivors are left on purpose is in docs/testing.md ("Mutation testing").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"

# target -> (files mutated, glob patterns over icae/; the tests run against each mutant (pytest arguments); the
# mutants run, fnmatch patterns over mutmut's names, none: all). Decoding: the sampling functions and their tests on
# hand-made logits (the decode loop's tests build models: too slow per mutant at nice 19 beside a training run);
# layouts: the interleaved rows (span_inputs, 114 mutants; decoder_inputs' 157 would take hours at nice 19).
TARGETS = {
    "metrics": (["icae/metrics/*.py"], ["tests/metrics"], []),
    "decoding": (["icae/models/decoding.py"],
                 ["tests/models/test_decoding.py", "-k", "top_p or top_k or temperature or pick_tokens"],
                 ["icae.models.decoding.x_sampling_probs__mutmut_*", "icae.models.decoding.x_pick_tokens__mutmut_*"]),
    "layouts": (["icae/models/layouts.py"], ["tests/models/test_spans.py"], ["icae.models.layouts.x_span_inputs__mutmut_*"]),
    "serve_tools": (["icae/serve/tools.py"], ["tests/serve/test_protocol_tools.py"], []),
    "curriculum": (["icae/training/curriculum.py"], ["tests/training/test_curriculum.py"], []),
    "chat_template": (["icae/data/chat_template.py"],
                      ["tests/data/test_chat_template.py", "tests/data/test_tool_trajectories.py"], []),
    # #24's scoring of an episode's actions, cutting trajectories to the first turns, and moving renamed copies
    "agent_scoring": (["icae/agent/episode.py"], ["tests/agent/test_scoring.py"],
                      ["icae.agent.episode.x_leading_right__mutmut_*", "icae.agent.episode.x_reference_match__mutmut_*"]),
    "truncate": (["icae/data/trajectories.py"], ["tests/data/test_trajectories.py", "-k", "truncate or turns"],
                 ["icae.data.trajectories.x_truncate__mutmut_*"]),
    "renamed": (["icae/data/renamed_tasks.py"], ["tests/data/test_renamed_tasks.py"],
                ["icae.data.renamed_tasks.x_new_place__mutmut_*", "icae.data.renamed_tasks.x_moved__mutmut_*"]),
}

# The one-line bugs issue #23 found surviving the suite: (name, file, text, its mutation, the tests that must fail).
KNOWN = [
    ("span slot id moved by one", "icae/models/layouts.py", "slot_pos.to(device) + virtual - 1",
     "slot_pos.to(device) + virtual", ["tests/models/test_spans.py"]),
    ("LM/FT tokens after the slots start one later", "icae/models/layouts.py",
     "int(memory.context_lengths[i]) + 1", "int(memory.context_lengths[i]) + 2", ["tests/models/test_icae.py"]),
    ("server ignores temperature", "icae/serve/render.py", "do_sample=temperature > 0, temperature=temperature or 1.0",
     "do_sample=False, temperature=1.0", ["tests/serve/test_engine.py", "-k", "temperature"]),
    ("top-p keeps the token that reaches p out", "icae/models/decoding.py", "drop = before >= params.top_p",
     "drop = before > params.top_p", ["tests/models/test_decoding.py"]),
    ("top-p drops the token that crosses p", "icae/models/decoding.py",
     "before = probs.cumsum(dim=-1) - probs", "before = probs.cumsum(dim=-1)", ["tests/models/test_decoding.py"]),
    ("top-p may drop the most likely token", "icae/models/decoding.py", "drop[:, 0] = False", "drop[:, 1] = False",
     ["tests/models/test_decoding.py"]),
]


def copy_tree(ws: Path) -> Path:
    """A fresh copy of the package, its tests and pyproject.toml (pytest's settings) in ``ws``."""
    if ws.exists():
        shutil.rmtree(ws)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "icae", "tests", "pyproject.toml"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in listed:
        if (ROOT / rel).is_file():
            (ws / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, ws / rel)
    return ws


def workspace(target: str) -> Path:
    """A fresh copy with a mutmut config for ``target``."""
    mutate, tests, _ = TARGETS[target]
    ws = copy_tree(WORK / target)
    tests = [t for t in tests if t.startswith("-") or " " in t or (ROOT / t).exists()]
    lines = ["[mutmut]", "source_paths=icae", "only_mutate=", *(f"    {m}" for m in mutate),
             "pytest_add_cli_args_test_selection=", *(f"    {t}" for t in tests),
             "pytest_add_cli_args=", "    -p", "    no:cacheprovider",
             "process_isolation=forkserver",  # torch is not fork-safe once a test has run in the parent
             "use_git_change_detection=false"]
    (ws / "setup.cfg").write_text("\n".join(lines) + "\n")
    return ws


def run(target: str, only: list[str] | None = None) -> dict:
    ws = workspace(target)
    mutmut = [str(Path(sys.executable).parent / "mutmut")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    nice = ["nice", "-n", "19"]
    names = only or TARGETS[target][2]
    subprocess.run(nice + mutmut + ["run", "--max-children", "1", *names], cwd=ws, env=env, check=True)
    subprocess.run(mutmut + ["export-cicd-stats"], cwd=ws, env=env, check=True, capture_output=True)
    stats = json.loads((ws / "mutants" / "mutmut-cicd-stats.json").read_text())
    listed = subprocess.run(mutmut + ["results"], cwd=ws, env=env, check=True, capture_output=True, text=True).stdout
    survivors = [line.split(":")[0].strip() for line in listed.splitlines() if line.strip().endswith(": survived")]
    with open(ws / "survivors.txt", "w") as out:
        for name in survivors:
            shown = subprocess.run(mutmut + ["show", name], cwd=ws, env=env, capture_output=True, text=True, check=False)
            out.write(f"# {name}\n{shown.stdout}\n")
    (ws / "stats.json").write_text(json.dumps(stats, indent=1))
    tested = stats.get("killed", 0) + stats.get("survived", 0)
    score = stats.get("killed", 0) / tested if tested else float("nan")
    print(f"{target}: {stats.get('killed', 0)} killed / {tested} tested = {score:.3f} "
          f"(survived {stats.get('survived', 0)}, no tests {stats.get('no_tests', 0)}, "
          f"timeout {stats.get('timeout', 0)}, suspicious {stats.get('suspicious', 0)}); "
          f"survivors: {ws / 'survivors.txt'}")
    return stats


def known() -> bool:
    """Apply each KNOWN mutation in a copy, run its tests, and say whether a test failed (it must)."""
    ws = copy_tree(WORK / "known")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    caught = True
    for name, rel, text, mutated, tests in KNOWN:
        path = ws / rel
        source = path.read_text()
        if source.count(text) != 1:
            print(f"GONE     {name}: {rel} no longer holds {text!r} once (update KNOWN)")
            caught = False
            continue
        path.write_text(source.replace(text, mutated))
        try:
            r = subprocess.run(["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                *tests], cwd=ws, env=env, capture_output=True, text=True, check=False)
        finally:
            path.write_text(source)
        last = (r.stdout.strip().splitlines() or [""])[-1]
        verdict = "KILLED" if r.returncode == 1 else "SURVIVED" if r.returncode == 0 else f"ERROR({r.returncode})"
        caught &= verdict == "KILLED"
        print(f"{verdict:8} {name}: {rel}: {text!r} -> {mutated!r}; {' '.join(tests)}: {last}")
    return caught


def main(argv: list[str] | None = None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or list(TARGETS)
    unknown = [n for n in names if n.partition("=")[0] not in TARGETS and n != "known"]
    if unknown:
        raise SystemExit(f"unknown target(s) {unknown}; choose from {sorted(TARGETS)} or known")
    for name in names:
        if name == "known":
            if not known():
                raise SystemExit(1)
        else:
            target, _, only = name.partition("=")
            run(target, only.split(",") if only else None)


if __name__ == "__main__":
    main()
