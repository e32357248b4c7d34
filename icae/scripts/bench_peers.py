"""ICAE beside the compressors people use instead, on the same texts at the same budget: which keeps more, which is faster.

    make peers                                                    # the peers' own environments (.peers/), once
    python -m icae.scripts.bench_peers --config_path icae/configs/bench_peers_tiny.yaml     (also: icae bench-peers)

Quality (:mod:`icae.benchmarks.quality`), on held-out windows of the standard-library modules n-z and the shipped
tiny LM: the teacher-forced token accuracy and loss of a continuation read after the (compressed) context, at each
budget (4x, 8x: the context keeps a quarter, an eighth of its positions), each on contexts as long as that budget's
shipped compressor's segment (32 and 64 tokens: what it was trained on). Methods: the full context; no context;
truncation (the last / the first tokens); LLMLingua (the same tiny LM as its scorer); kvpress presses (the KV cache
pruned after a full prefill); ICAE (the shipped compressor of that rate, trained with a share of the LM objective).

Speed and memory (:mod:`icae.benchmarks.speed`), on a Qwen2.5-0.5B-shaped model (random weights: only the cost is
real): time to first token, latency for ``bench_new_tokens`` greedy tokens, peak memory growth, KV-cache size,
medians over interleaved repeats, each as a ratio to the full context measured in the same process; ICAE also from
memory compressed in advance, and one compressed context serving several questions. Training efficiency: the FLOP/s
of an AE training step over the matmul FLOP/s measured in the same run.

LLMLingua and kvpress need other transformers releases than this project: each runs in its own environment (``make
peers``) as a subprocess on the same inputs, as JSON. A peer that cannot run is reported with the reason.
Writes one JSON, a markdown table and one plot (quality against speed, one point per method and budget).
"""

from __future__ import annotations

import time
from pathlib import Path

from icae.benchmarks.qa import qa
from icae.benchmarks.quality import quality
from icae.benchmarks.speed import speed, speed_model, training_efficiency
from icae.config import config_from_cli
from icae.models import load_checkpoint
from icae.scripts import entry
from icae.training.results import free_stem, results_dir
from icae.utils.io import atomic_write_json, atomic_write_text
from icae.utils.plotting import pyplot, save_png


def _kept(row: dict) -> str:
    """A row's context value kept; "undefined" where its decoder reads the full context no better than none; blank
    for the ends it is measured against (and rows from before it existed)."""
    if row.get("context_value_kept") is not None:
        return f"{row['context_value_kept']:.2f}"
    return "undefined (full <= none)" if row.get("context_value_ends") else ""


def markdown(result: dict) -> str:
    """The tables of the parts measured (``bench_parts``), then what did not run and why."""
    q, s, info = result["quality"], result["speed"], result["quality_info"]
    lines = []
    if q:
        lines += [f"Quality: {info['samples']} held-out windows per budget, each as long as that budget's compressor's "
                  f"segment, continuation of {info['continuation_tokens']} tokens; every method but ICAE reads with "
                  f"`{info.get('reader', 'tiny-qwen2-lm')}`. Context value kept: (method - no context) / (full "
                  "context - no context) in token accuracy, on the method's own decoder (ICAE: its decoder with the "
                  "slots removed and reading the context as tokens).", "",
                  "| context tokens | method | budget | context kept | continuation token accuracy | loss | "
                  "context value kept |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['context_tokens']} | {r['method']} | {r['budget']}x | {r['context_kept']:.2f} | "
                  f"{r['token_accuracy']:.3f} | {r['loss']:.3f} | {_kept(r)} |" for r in q]
    if result["squad"]:
        lines += ["", f"SQuAD: {result['squad_info']['questions']} dev questions; the SimpleLLM fine-tuned on SQuAD "
                  "reads its context as each method leaves it; the ICAE fine-tuned on SQuAD reads slots. Context value "
                  "kept in F1, on the method's own decoder.", "",
                  "| method | budget | context kept | EM | F1 | context value kept |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['budget']}x | {r['context_kept']:.2f} | {r['exact_match']:.3f} | {r['f1']:.3f} "
                  f"| {_kept(r)} |" for r in result["squad"]]
    if s["rows"]:
        lines += ["", f"Speed: {s['info']['model']} (random weights), {s['info']['context_tokens']}-token context, "
                  f"{s['info']['new_tokens']} new tokens, {s['info']['threads']} threads, medians of "
                  f"{s['info']['repeats']} interleaved repeats.", "",
                  "| method | budget | latency (s) | latency / full | time to first token / full | peak MiB | "
                  "KV cache MiB |", "|---|---|---|---|---|---|---|"]
        for r in s["rows"]:
            ttft = f"{r['ttft_over_full']:.2f}" if r.get("ttft_over_full") is not None else ""
            peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else ""
            lines.append(f"| {r['method']} | {r['budget']}x | {r['latency_seconds']:.2f} | "
                         f"{r['latency_over_full']:.2f} | {ttft} | {peak} | {r['kv_cache_mib']:.1f} |")
    if result["training"]:
        lines += ["", "Training efficiency (one AE step; FLOPs counted from the shapes, matmul FLOP/s measured in the "
                  "same run):", "", "| model | batch x context | step (s) | achieved GFLOP/s | matmul GFLOP/s | "
                  "fraction |", "|---|---|---|---|---|---|"]
        for name, t in result["training"].items():
            lines.append(f"| {name} | {t['batch']} x {t['context']} | {t['seconds']:.2f} | "
                         f"{t['achieved_flops'] / 1e9:.1f} | {t['matmul_flops'] / 1e9:.1f} | "
                         f"{t['fraction_of_matmul']:.2f} |")
    for peer, why in {**info["not_run"], **result["squad_info"]["not_run"], **s["info"]["not_run"]}.items():
        lines.append(f"\nNot run: {peer}: {why}")
    return "\n".join(lines).lstrip("\n")


def plot(result: dict, path: Path) -> bool:
    """Quality against speed, one panel per budget, one point per method (the full context in every panel)."""
    plt = pyplot()
    if plt is None or not result["quality"] or not result["speed"]["rows"]:  # it places quality against speed
        return False
    budgets = result["config"]["bench_budgets"]
    speed_of = {(r["method"].split(",")[0], r["budget"]): r["latency_over_full"] for r in result["speed"]["rows"]}
    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 4), sharey=True)
    for ax, b in zip(axes if len(budgets) > 1 else [axes], budgets):
        length = next(r["context_tokens"] for r in result["quality"] if r["budget"] == b)
        for r in result["quality"]:
            if r["budget"] not in (b, 1) or r["context_tokens"] != length or r["method"].endswith("as tokens"):
                continue  # this budget's texts only; ICAE's decoder on the tokens has no speed of its own
            points = [(r["method"], r["method"], "o")]
            if "slots removed" in r["method"]:  # the same decoder without the slots: what the slots themselves add
                points = [("ICAE (compress + answer)", "ICAE's decoder, slots removed", "x")]
            elif r["method"].startswith("ICAE (tiny"):  # compressing per question, and from memory made in advance
                points = [("ICAE (compress + answer)", "ICAE, compress + answer", "o"),
                          ("ICAE (memory compressed in advance)", "ICAE, memory in advance", "s")]
            for key, label, marker in points:
                x = speed_of.get((key, r["budget"])) or speed_of.get((key.split(" (")[0], r["budget"]))
                if x is None:
                    continue
                ax.scatter(x, r["token_accuracy"], s=40, marker=marker)
                ax.annotate(label, (x, r["token_accuracy"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set(title=f"{b}x budget", xlabel="latency / full context (0.5B shape)", xscale="log")
        ax.grid(alpha=0.3)
    axes_list = axes if len(budgets) > 1 else [axes]
    axes_list[0].set_ylabel("continuation token accuracy (tiny LM)")
    fig.suptitle("quality against speed: up and left is better")
    save_png(fig, path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> dict:
    config = config_from_cli(argv, description=__doc__)
    out = results_dir(config)
    started = time.perf_counter()
    budgets, parts = config.bench.bench_budgets, config.bench.bench_parts
    skipped = lambda part: ([], {"not_run": {part: "not asked for (bench_parts)"}})  # noqa: E731
    quality_rows, quality_info = quality(config, budgets) if "quality" in parts else skipped("quality")
    print(f"quality measured ({time.perf_counter() - started:.0f} s)", flush=True)
    qa_rows, qa_info = qa(config, budgets) if "squad" in parts else skipped("squad")
    print(f"SQuAD measured ({time.perf_counter() - started:.0f} s)", flush=True)
    speed_rows, speed_info = speed(config, budgets) if "speed" in parts else skipped("speed")
    print(f"speed measured ({time.perf_counter() - started:.0f} s)", flush=True)
    training = {}
    if "speed" in parts:
        training = {"tiny-icae-4x (tiny LM)": training_efficiency(load_checkpoint("tiny-icae-4x", train=True), 128, 8),
                    f"{config.bench.bench_speed_model} (k=128)": training_efficiency(
                        speed_model(config, config.bench.bench_speed_slots), 512, 1)}
    result = {"config": config.to_dict(), "quality": quality_rows, "quality_info": quality_info,
              "squad": qa_rows, "squad_info": qa_info,
              "speed": {"rows": speed_rows, "info": speed_info}, "training": training,
              "seconds": time.perf_counter() - started}
    stem = free_stem(out, "bench_peers", (".json", ".md", ".png"))  # an earlier run's files are kept
    atomic_write_json(out / f"{stem}.json", result)
    table = markdown(result)
    atomic_write_text(out / f"{stem}.md", table + "\n")
    drew = plot(result, out / f"{stem}.png")
    print("\n" + table)
    print(f"\nresults: {out / f'{stem}.json'}" + (f"\nplot: {out / f'{stem}.png'}" if drew else ""))
    return result


if __name__ == "__main__":
    entry(main)
