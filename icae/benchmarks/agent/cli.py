"""``python -m icae.benchmarks.agent --spec SPEC.yaml``: the closed-loop agent benchmark (docs/bench_agent.md).

    python -m icae.benchmarks.agent --spec icae/configs/bench_agent/quick.yaml [--overwrite] [--benchmarks_md FILE]
    python -m icae.benchmarks.agent --spec icae/configs/bench_agent/tiny.yaml --tasks 5 --agents oracle "ICAE 4x"

Runs each agent of the spec on the same held-out tasks and writes, under the spec's ``output_dir``: one JSON per
agent (every episode: its actions, conversation, and each request's tokens, decoder positions, KV MiB and seconds;
and the agent's summary), ``summary.json``, ``table.md`` and ``plot.png`` (success against decoder positions). An
existing result is never replaced without ``--overwrite``. ``--benchmarks_md`` puts the table into that file between
the spec's own markers. ``--results_from DIR [DIR ...]`` runs nothing: it reads each agent's JSON from the first of
those output directories that has it (agents run in legs, e.g. one per free core, with ``--agents`` and their own
``--output_dir``), checks that every leg ran the spec's tasks with its settings, and writes the one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from icae.benchmarks.agent.report import markdown, plot, put_section
from icae.benchmarks.agent.run import run_spec
from icae.benchmarks.agent.spec import SpecError, load_spec
from icae.utils.io import atomic_write_json, atomic_write_text, ensure_writable


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m icae.benchmarks.agent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="the benchmark's YAML (icae/configs/bench_agent/*.yaml)")
    p.add_argument("--agents", nargs="+", metavar="NAME", help="run only these agents of the spec")
    for key in ("tasks", "seed", "max_steps", "max_tokens", "window", "window_tasks", "window_max_steps"):
        p.add_argument(f"--{key}", type=int, help=f"replace the spec's {key}")
    p.add_argument("--mode", choices=["tools", "text"], help="replace the spec's mode (an agent's own mode stays)")
    p.add_argument("--statement", choices=["plain", "tokens"], help="replace the spec's statement (how tasks read)")
    p.add_argument("--output_dir", help="replace the spec's output_dir")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in output_dir")
    p.add_argument("--benchmarks_md", metavar="FILE", help="put the table into FILE between the spec's markers")
    p.add_argument("--results_from", nargs="+", metavar="DIR",
                   help="run nothing: the table of the agents' results in these output directories (earlier legs)")
    return p


# What every leg must share for its rows to stand in one table (the agents may differ).
SHARED = ("tasks", "seed", "statement", "chat_template", "mode", "max_steps", "max_tokens", "window", "window_tasks",
          "window_max_steps")


def template_digest(spec) -> str | None:
    """sha256 of the spec's chat template file: legs must have read the same text, not only the same path."""
    import hashlib

    return hashlib.sha256(Path(spec.chat_template).read_bytes()).hexdigest() if spec.chat_template else None


def gathered(spec, dirs: list[str]) -> dict[str, dict]:
    """Each agent's saved result from the first of ``dirs`` holding it; one SpecError naming every agent missing,
    every file that is not an agent's result, and every leg run with other settings or another agent than ``spec``."""
    import json

    results, problems = {}, []
    digest = template_digest(spec)
    for agent in spec.agents:
        found = next((Path(d) / f"{agent.slug}.json" for d in dirs if (Path(d) / f"{agent.slug}.json").is_file()), None)
        if found is None:
            problems.append(f"{agent.name}: no {agent.slug}.json in {dirs}")
            continue
        try:
            saved = json.loads(found.read_text(encoding="utf-8"))
            ran, settings = saved["agent"], saved["spec"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            problems.append(f"{found} is not an agent's result of this benchmark ({type(e).__name__}: {e})")
            continue
        differ = [f"{k} {settings.get(k)!r} (spec: {getattr(spec, k)!r})" for k in SHARED
                  if settings.get(k) != getattr(spec, k)]
        if saved.get("chat_template_sha256") != digest:
            differ.append(f"the text of chat_template {spec.chat_template!r} (edited since that leg)")
        if ran != json.loads(json.dumps(dataclasses.asdict(agent))):
            differ.append(f"agent {agent.name!r} as the spec has it now (its leg: {ran})")
        if differ:
            problems.append(f"{found} was run with other settings: {', '.join(differ)}")
        results[agent.name] = {k: v for k, v in saved.items() if k not in ("spec", "chat_template_sha256")}
    if problems:
        raise SpecError("--results_from: " + "; ".join(problems))
    return results


def output_files(spec, out: Path) -> list[Path]:
    return [out / f"{a.slug}.json" for a in spec.agents] + [out / n for n in ("summary.json", "table.md", "plot.png")]


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("tasks", "seed", "statement", "mode", "max_steps", "max_tokens", "window",
                                                "window_tasks", "window_max_steps", "output_dir")}
    spec = load_spec(args.spec, overrides)
    if args.agents:
        unknown = [n for n in args.agents if n not in {a.name for a in spec.agents}]
        if unknown:
            raise SpecError(f"--agents: {unknown} not in {args.spec} (its agents: {[a.name for a in spec.agents]})")
        spec = dataclasses.replace(spec, agents=tuple(a for a in spec.agents if a.name in args.agents))
    out = ensure_writable(spec.output_dir, "output_dir")
    existing = [str(p) for p in output_files(spec, out) if p.exists()]
    if existing and not args.overwrite:
        raise SpecError(f"{len(existing)} result file(s) of an earlier run exist: {', '.join(existing)}; pass "
                        "--overwrite to replace them (make ... OVERWRITE=1), or set --output_dir")
    md = Path(args.benchmarks_md) if args.benchmarks_md else None
    if md is not None and not md.is_file():
        raise SpecError(f"--benchmarks_md: no such file: {md}")
    started = time.perf_counter()
    if args.results_from:
        results = gathered(spec, args.results_from)
        seconds = sum(r.get("seconds", 0.0) for r in results.values())  # each agent's own run, summed
    else:
        results = run_spec(spec, out)
        seconds = time.perf_counter() - started
    for agent in spec.agents:
        atomic_write_json(out / f"{agent.slug}.json", {"spec": dataclasses.asdict(spec),
                                                       "chat_template_sha256": template_digest(spec),
                                                       **results[agent.name]})
    summary = {"spec": dataclasses.asdict(spec), "seconds": seconds,
               "agents": {n: {k: v for k, v in r.items() if k not in ("episodes", "window_episodes")}
                          for n, r in results.items()}}
    atomic_write_json(out / "summary.json", summary)
    table = markdown(spec, results)
    atomic_write_text(out / "table.md", table + "\n")
    drew = plot(spec, results, out / "plot.png")
    where = f"results: {out}" + (f", plot: {out / 'plot.png'}" if drew else "")
    print(f"\n{table}\n\n{seconds:.0f} s in all; {where}")
    if md is not None:
        legs = f" in legs ({', '.join(args.results_from)})" if args.results_from else ""
        text = (f"`python -m icae.benchmarks.agent --spec {args.spec}` ({seconds / 60:.1f} min{legs}; raw results "
                f"`{out}/summary.json`)\n\n{table}")
        found = put_section(md, spec.name, text)
        print(f"table put into {md}" + ("" if found else " (its markers were missing: appended at the end)"))
    return summary
