"""The benchmark's outputs: the markdown table, the plot (success against decoder positions, one point per agent),
and the table put into BENCHMARKS.md between markers of its own (one pair per spec, so the quick run and the full
run keep separate tables)."""

from __future__ import annotations

import statistics
from pathlib import Path

from icae.utils.io import atomic_write_text
from icae.utils.plotting import pyplot, save_png


def _num(value, fmt: str = ".0f", estimated: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:{fmt}}" + (" (est.)" if estimated else "")


def steps_fit_text(s: dict) -> str:
    """Per the runs that measured it: the median steps that fit where the window was passed, else 'never'."""
    fits = s["steps_fit"]
    if not s.get("positions_source"):
        return "n/a"
    passed = [f for f in fits if f is not None]
    if not passed:
        return f"never in {s['window_max_steps']} steps ({len(fits)} run{'s' if len(fits) != 1 else ''})"
    text = f"{statistics.median(passed):g}"
    return text + (f" ({len(passed)}/{len(fits)} runs passed it)" if len(passed) < len(fits) else "")


def markdown(spec, results: dict[str, dict]) -> str:
    lines = [f"{spec.tasks} held-out tasks (seed {spec.seed}), at most {spec.max_steps} steps, {spec.max_tokens} new "
             f"tokens a reply, greedy; window {spec.window} decoder positions"
             + (f" (steps that fit: {spec.window_tasks} task{'s' if spec.window_tasks != 1 else ''} run again to "
                f"{spec.window_max_steps} steps)"
                if spec.window_tasks else "") + ".", "",
             ("| agent | observations | mode | success [95% CI] | mean steps | exact actions (right in a row from the start) "
              "| per request: prompt "
              "tokens / decoder positions | peak positions | peak KV MiB | s / task | steps that fit in "
              f"{spec.window} |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "not_run" in r:
            lines.append(f"| {name} | {r['describe']} | | not run: {r['not_run']} | | | | | | | |")
            continue
        s = r["summary"]
        est = s.get("positions_source") == ["estimated"]
        low, high = s["success_ci95"]
        lines.append(
            f"| {name} | {r['describe']} | {r['mode']} | {s['successes']}/{s['episodes']} = {s['success_rate']:.2f} "
            f"[{low:.2f}, {high:.2f}] | {s['mean_steps']:.1f} | "
            f"{s['reference_match']:.2f} ({_num(s.get('leading_right'), '.1f')}) | "
            f"{_num(s['mean_prompt_tokens'])} / {_num(s['mean_decoder_positions'], estimated=est)} | "
            f"{_num(s['peak_decoder_positions'])} | {_num(s['peak_kv_mib'], '.2f')} | {s['seconds_per_task']:.1f} | "
            f"{steps_fit_text(s)} |")
    return "\n".join(lines)


def plot(spec, results: dict[str, dict], path: Path) -> bool:
    """Success rate (95% interval as error bars) against mean decoder positions per request, one point per agent."""
    plt = pyplot()
    rows = [(n, r["summary"]) for n, r in results.items()
            if "summary" in r and r["summary"]["mean_decoder_positions"] is not None]
    if plt is None or not rows:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in rows:
        x, y = s["mean_decoder_positions"], s["success_rate"]
        low, high = s["success_ci95"]
        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", capsize=3)
        label = name + (" (positions est.)" if s.get("positions_source") == ["estimated"] else "")
        ax.annotate(label, (x, y), fontsize=8, xytext=(5, 3), textcoords="offset points")
    ax.set(xlabel="mean decoder positions per request", ylabel="task success rate (95% Wilson interval)",
           ylim=(-0.05, 1.05), title=f"{spec.name}: {spec.tasks} held-out tasks, up and left is better")
    ax.grid(alpha=0.3)
    save_png(fig, path, dpi=110)
    return True


def markers(key: str) -> tuple[str, str]:
    return f"<!-- bench-agent {key}: start -->", f"<!-- bench-agent {key}: end -->"


def put_section(path: Path, key: str, text: str) -> bool:
    """Replace what lies between ``key``'s markers in ``path`` with ``text`` (atomically); where the markers are
    missing, append them with ``text`` at the end. True when they were there."""
    start, end = markers(key)
    old = path.read_text() if path.is_file() else ""
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old.split(start, 1)[1]:
        before, rest = old.split(start, 1)
        atomic_write_text(path, before + block + rest.split(end, 1)[1])
        return True
    atomic_write_text(path, old.rstrip("\n") + "\n\n" + block + "\n")
    return False
