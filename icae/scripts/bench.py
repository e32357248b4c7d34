"""What compression buys: answer latency, throughput and memory of ICAE against the full-context model, side by side.

    python -m icae.scripts.bench --config_path icae/configs/bench_tiny.yaml              (also: icae bench ...)
    python -m icae.scripts.bench --config_path icae/configs/bench_qwen2_0.5b_shape.yaml

For every (context length, compression rate, batch size, generated tokens) point, in one process and interleaved
within each repeat:
  1. full:   the decoder with the whole context as ordinary tokens (SimpleLLM without LoRA: the same base weights
             and code path as ICAE's decoder): prefill + decode with a KV cache;
  2. icae:   compression (all segments of a batch in one encoder pass) + decode from the slots;
  3. cached: decode from slots compressed in advance (memory reused: agent history, repeated questions);
  4. peak memory of each: sampled RSS growth on CPU (after returning freed heap pages to the system), the CUDA
     allocator's peak on GPU; and the exact KV-cache size of the full and compressed decoder inputs;
  5. training throughput of one AE pretraining step (forward, backward, optimizer) at each training batch size,
     counting real (non-padding) encoder and target tokens.
Medians over repeats and the ratios ICAE / full are printed as a table, written as JSON and plotted (PNG).
No timing is asserted anywhere: the numbers are for reading side by side.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from icae.benchmarks.measure import kv_cache_mib, measured, training_step
from icae.config import Config, config_from_cli
from icae.models.icae import ICAE
from icae.models.loading import load_base_model
from icae.scripts import entry
from icae.training.results import free_stem, results_dir
from icae.utils.io import atomic_write_json
from icae.utils.plotting import pyplot, save_png


def random_ids(n: int, vocab: int, generator: torch.Generator) -> list[int]:
    # Ids above the special tokens, below the tokenizer's size (a random model has no preference among them).
    return torch.randint(8, vocab, (n,), generator=generator).tolist()


@torch.no_grad()
def answer_point(model: ICAE, contexts, prompts, new_tokens: int, repeats: int, rate: int) -> dict:
    """Latency and memory of the three cases for one batch, interleaved per repeat; medians."""
    device = model.device
    runs = {"full": [], "icae": [], "cached": [], "compress": []}
    mems = {"full": [], "icae": [], "cached": []}
    cached_memory = model.compress_ids(contexts, compression_rate=rate)  # compressed in advance, reused by every "cached" run
    for _ in range(repeats):
        s, m, _ = measured(device, lambda: model.generate(model.token_memory(contexts), prompts, mode="ft",
                                                       max_new_tokens=new_tokens, stop_token_ids=[]))
        runs["full"].append(s)
        mems["full"].append(m)
        c, _, memory = measured(device, lambda: model.compress_ids(contexts, compression_rate=rate))
        g, m, _ = measured(device, lambda: model.generate(memory, prompts, mode="ft", max_new_tokens=new_tokens,
                                                       stop_token_ids=[]))
        runs["icae"].append(c + g)
        runs["compress"].append(c)
        mems["icae"].append(m)
        s, m, _ = measured(device, lambda: model.generate(cached_memory, prompts, mode="ft", max_new_tokens=new_tokens,
                                                       stop_token_ids=[]))
        runs["cached"].append(s)
        mems["cached"].append(m)
    med = {k: statistics.median(v) for k, v in runs.items()}
    peak = {k: max(v) for k, v in mems.items()}
    return {
        "full_seconds": med["full"], "icae_seconds": med["icae"], "icae_compress_seconds": med["compress"],
        "cached_seconds": med["cached"],
        "icae_over_full": med["icae"] / med["full"], "cached_over_full": med["cached"] / med["full"],
        "speedup_icae": med["full"] / med["icae"], "speedup_cached": med["full"] / med["cached"],
        "full_peak_mib": peak["full"], "icae_peak_mib": peak["icae"], "cached_peak_mib": peak["cached"],
        "memory_slots": int(cached_memory.num_slots[0]),
        "all_seconds": runs,
    }


def train_throughput(model: ICAE, length: int, batch: int, generator: torch.Generator) -> dict:
    """One AE pretraining step on ``batch`` contexts of varied length (padding is not counted)."""
    vocab = len(model.tokenizer)
    lengths = [max(8, length - (i * length) // (2 * batch)) for i in range(batch)]  # uneven: padding happens
    contexts = [torch.tensor(random_ids(n, vocab, generator)) for n in lengths]
    seconds, peak, out = training_step(model, contexts)
    tokens = sum(lengths) + int(out.num_target_tokens)
    return {"batch_size": batch, "context_tokens": sum(lengths), "target_tokens": int(out.num_target_tokens),
            "seconds": seconds, "tokens_per_second": tokens / seconds, "peak_mib": peak}


def run(config: Config, show: bool = True) -> dict:
    bench = config.bench
    device = torch.device("cuda" if bench.bench_device == "auto" and torch.cuda.is_available() else
                          ("cpu" if bench.bench_device == "auto" else bench.bench_device))
    base, tokenizer = load_base_model(config.model.model_name_or_path, config.model.torch_dtype,
                                      config.model.attn_implementation)
    model = ICAE(config.model, base.to(device), tokenizer)
    model.to(device).eval()
    vocab = len(tokenizer)
    gen = torch.Generator().manual_seed(0)
    points = []
    for length in bench.bench_context_lengths:
        for rate in bench.bench_compression_rates:
            for batch in bench.bench_batch_sizes:
                contexts = [torch.tensor(random_ids(length, vocab, gen)) for _ in range(batch)]
                prompts = [torch.tensor(random_ids(bench.bench_prompt_tokens, vocab, gen)) for _ in range(batch)]
                for new_tokens in bench.bench_new_tokens:
                    answer_point(model, contexts[:1], prompts[:1], 2, 1, rate)  # warm-up at this shape
                    measured = answer_point(model, contexts, prompts, new_tokens, bench.bench_repeats, rate)
                    after = bench.bench_prompt_tokens + new_tokens + 1  # FT token, prompt, generated tokens
                    point = {"context_length": length, "compression_rate": rate, "batch_size": batch,
                             "new_tokens": new_tokens, **measured,
                             "full_kv_cache_mib": kv_cache_mib(model, length + after, batch),
                             "icae_kv_cache_mib": kv_cache_mib(model, measured["memory_slots"] + after, batch)}
                    points.append(point)
                    if show:
                        print(format_row(point), flush=True)
    train_length = bench.bench_train_context_length or min(bench.bench_context_lengths)
    training = [train_throughput(model, train_length, b, gen) for b in bench.bench_train_batch_sizes]
    return {
        "model": config.model.model_name_or_path,
        "parameters": sum(p.numel() for p in base.parameters()),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "dtype": str(model.dtype),
        "fixed_mem_size": config.model.fixed_mem_size,
        "points": points,
        "training_context_length": train_length,
        "training": training,
        "config": config.to_dict(),
    }


HEADER = (f"{'context':>8}{'rate':>6}{'batch':>7}{'new':>5}{'slots':>7}{'full s':>9}{'icae s':>9}{'(comp)':>8}"
          f"{'cached s':>10}{'icae/full':>11}{'cached/full':>13}{'full MiB':>10}{'icae MiB':>10}{'cached MiB':>12}"
          f"{'KV full':>9}{'KV icae':>9}")


def format_row(p: dict) -> str:
    return (f"{p['context_length']:>8}{p['compression_rate']:>6}{p['batch_size']:>7}{p['new_tokens']:>5}"
            f"{p['memory_slots']:>7}{p['full_seconds']:>9.3f}{p['icae_seconds']:>9.3f}{p['icae_compress_seconds']:>8.3f}"
            f"{p['cached_seconds']:>10.3f}{p['icae_over_full']:>11.2f}{p['cached_over_full']:>13.2f}"
            f"{p['full_peak_mib']:>10.1f}{p['icae_peak_mib']:>10.1f}{p['cached_peak_mib']:>12.1f}"
            f"{p['full_kv_cache_mib']:>9.2f}{p['icae_kv_cache_mib']:>9.2f}")


def markdown_table(result: dict) -> str:
    rows = ["| context | rate | batch | new tokens | slots | full (s) | ICAE (s) | of which compress | cached (s) "
            "| ICAE/full | cached/full | full MiB | ICAE MiB | cached MiB | KV cache full / ICAE (MiB) |",
            "|" + "---|" * 15]
    for p in result["points"]:
        rows.append(f"| {p['context_length']} | {p['compression_rate']}x | {p['batch_size']} | {p['new_tokens']} "
                    f"| {p['memory_slots']} | {p['full_seconds']:.3f} | {p['icae_seconds']:.3f} "
                    f"| {p['icae_compress_seconds']:.3f} | {p['cached_seconds']:.3f} | {p['icae_over_full']:.2f} "
                    f"| {p['cached_over_full']:.2f} | {p['full_peak_mib']:.0f} | {p['icae_peak_mib']:.0f} "
                    f"| {p['cached_peak_mib']:.0f} | {p['full_kv_cache_mib']:.1f} / {p['icae_kv_cache_mib']:.1f} |")
    rows.append("")
    rows.append(f"Training, one AE step at context {result['training_context_length']}: " + "; ".join(
        f"batch {t['batch_size']}: {t['tokens_per_second']:.0f} tokens/s ({t['peak_mib']:.0f} MiB)"
        for t in result["training"]))
    return "\n".join(rows)


def plot(result: dict, path: Path) -> bool:
    """Latency as a ratio to the full context (1 = as slow), one panel per setting (rate, batch, new tokens), one line
    per method: ICAE compressing then answering, and answering from memory compressed in advance."""
    plt = pyplot()
    if plt is None:
        return False
    groups = sorted({(p["compression_rate"], p["batch_size"], p["new_tokens"]) for p in result["points"]})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.8), sharey=True, squeeze=False)
    for ax, (rate, batch, new) in zip(axes[0], groups):
        pts = sorted((p for p in result["points"] if (p["compression_rate"], p["batch_size"], p["new_tokens"]) ==
                      (rate, batch, new)), key=lambda p: p["context_length"])
        xs = [p["context_length"] for p in pts]
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="full context")
        ax.plot(xs, [p["icae_over_full"] for p in pts], marker="s", label="ICAE: compress + answer")
        ax.plot(xs, [p["cached_over_full"] for p in pts], marker="^", label="ICAE: memory compressed in advance")
        ax.set(title=f"{rate}x, batch {batch}, {new} new tokens", xlabel="context tokens", xscale="log")
    axes[0][0].set_ylabel("latency / full context")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(f"{result['model']} on {result['device']}: below 1 is faster than the full context")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_png(fig, path)
    return True


def main(argv: list[str] | None = None) -> dict:
    config = config_from_cli(argv, description=__doc__)
    print(HEADER)
    result = run(config)
    out_dir = results_dir(config)
    stem = free_stem(out_dir, f"bench_{Path(config.model.model_name_or_path).name}", (".json", ".png"))
    atomic_write_json(out_dir / f"{stem}.json", result)
    drew = plot(result, out_dir / f"{stem}.png")
    print("\n" + markdown_table(result))
    print(f"\nresults: {out_dir / f'{stem}.json'}" + (f"\nplot: {out_dir / f'{stem}.png'}" if drew else ""))
    return result


if __name__ == "__main__":
    entry(main)
