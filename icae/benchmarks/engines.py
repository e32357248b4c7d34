"""Speed of the llama.cpp backend against the PyTorch path, side by side in one run.

    python -m icae.benchmarks.engines --checkpoint tiny-icae-4x --work runs/bench_engines/tiny --context 512
    python -m icae.benchmarks.engines --random-shape random-qwen2-0.5b --work runs/bench_engines/0.5b --context 1024

Per backend (PyTorch fp32; llama.cpp with each exported weight type): prefill of the full context as tokens (time to
the first token), decoding speed (tokens/s, from a compressed memory), compressing the context, and answering from a
memory compressed in advance, and an agent conversation of ``--turns`` turns (a tool output of context/4 tokens
compressed, 16 tokens, 16 generated; the history kept across turns). Cases are interleaved within each repeat and the medians reported, with each figure's
ratio to PyTorch's *in the same run*: the machine is shared, so the ratios are the result, not the seconds. With
``--random-shape`` an ICAE over a randomly initialised model of that shape is built and exported first (the cost is
real, the text is not); the export is not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from icae.errors import UserError
from icae.models import Span
from icae.utils.io import atomic_write_json, replaceable


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def prepare(args) -> tuple[Path, Path]:
    """(checkpoint, export directory): the given checkpoint, or an untrained ICAE over ``--random-shape``."""
    from icae.engines.gguf_export import add_quantized, export_gguf

    work = Path(args.work)
    checkpoint = Path(args.checkpoint) if args.checkpoint else work / "checkpoint"
    if args.random_shape and not (checkpoint / "model.safetensors").is_file():
        from icae.config import Config, ModelArguments
        from icae.models import ICAE
        from icae.models.loading import load_base_model

        margs = ModelArguments(model_name_or_path=args.random_shape, fixed_mem_size=args.k, mean_compression_rate=4,
                               lora_r=8, lora_alpha=16, lora_dropout=0.0, train=False, model_max_length=8192)
        base, tok = load_base_model(margs.model_name_or_path)
        ICAE(margs, base, tok).save_pretrained(checkpoint, Config(model=margs))
    export = work / "gguf"
    if not (export / "manifest.json").is_file():
        export_gguf(checkpoint if args.random_shape else args.checkpoint, export, tuple(["f32", *args.weights]))
    from icae.engines.manifest import Manifest

    for w in args.weights:  # an export made before llama.cpp was built lacks its quantized files
        if w not in Manifest.load(export).weights:
            add_quantized(export, w)
    return checkpoint, export


@torch.no_grad()
def run(args) -> dict:
    from icae.engines.llamacpp import LlamaCppICAE
    from icae.engines.llamacpp_runtime import RuntimeOptions
    from icae.models import load_checkpoint

    checkpoint, export = prepare(args)
    torch.set_num_threads(args.threads)
    model = load_checkpoint(checkpoint if args.random_shape else args.checkpoint, train=False)
    gen = torch.Generator().manual_seed(0)
    vocab = model.vocab_size
    context = torch.randint(8, min(vocab, 4096), (args.context,), generator=gen)
    prompt = torch.randint(8, min(vocab, 4096), (16,), generator=gen)
    n = args.new_tokens
    answer = dict(mode="ft", stop_token_ids=[])
    backends = {"pytorch fp32": model}
    for w in args.weights:
        backends[f"llama.cpp {w}"] = LlamaCppICAE(export, w, RuntimeOptions(n_threads=args.threads, n_seq_max=8,
                                                                              n_ctx=max(4096, args.context * 2)))
    turns = [[Span(torch.randint(8, min(vocab, 4096), (args.context // 4,), generator=gen), compress=True),
              Span(torch.randint(8, min(vocab, 4096), (16,), generator=gen))] for _ in range(args.turns)]

    def agent(m):
        """An agent conversation: each turn a tool output (compressed) and 16 tokens, then 16 generated tokens,
        the history kept across turns."""
        state, cache = None, {}
        for turn in turns:
            _, state, _ = m.generate_incremental(state, turn, cache, max_new_tokens=n // 2, stop_token_ids=[])

    cases = {}
    for name, m in backends.items():
        memory = m.compress([context])
        full = m.token_memory([context])
        cases[name] = {
            "prefill_s": lambda m=m, full=full: m.generate(full, [prompt], max_new_tokens=1, **answer),
            "compress_s": lambda m=m: m.compress([context]),
            "answer_1_s": lambda m=m, memory=memory: m.generate(memory, [prompt], max_new_tokens=1, **answer),
            "answer_n_s": lambda m=m, memory=memory: m.generate(memory, [prompt], max_new_tokens=n + 1, **answer),
            "agent_s": lambda m=m: agent(m),
        }
        cases[name]["prefill_s"]()  # warm-up
        print(f"ready: {name}", file=sys.stderr, flush=True)
    times = {name: {k: [] for k in c} for name, c in cases.items()}
    for r in range(args.repeats):
        for name, c in cases.items():  # interleaved: every backend sees the same machine load
            for key, fn in c.items():
                times[name][key].append(_timed(fn))
            atomic_write_json(Path(args.work) / "partial.json", times)  # what a run stopped early had measured
            print(f"repeat {r + 1}/{args.repeats} {name}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in
                                                                       times[name].items()), file=sys.stderr, flush=True)
    rows = []
    for name, t in times.items():
        med = {k: statistics.median(v) for k, v in t.items()}
        rows.append({"backend": name, "prefill_s": med["prefill_s"], "compress_s": med["compress_s"],
                     "answer_from_memory_s": med["answer_n_s"],
                     "decode_tokens_per_s": n / max(med["answer_n_s"] - med["answer_1_s"], 1e-9),
                     "agent_s": med["agent_s"],
                     "all": t})
    ref = rows[0]
    for row in rows:
        row["prefill_speedup"] = ref["prefill_s"] / row["prefill_s"]
        row["compress_speedup"] = ref["compress_s"] / row["compress_s"]
        row["decode_speedup"] = row["decode_tokens_per_s"] / ref["decode_tokens_per_s"]
        row["answer_speedup"] = ref["answer_from_memory_s"] / row["answer_from_memory_s"]
        row["agent_speedup"] = ref["agent_s"] / row["agent_s"]
    sizes = {w: (export / f"base-{w}.gguf").stat().st_size / 2**20 for w in args.weights}
    return {"model": args.random_shape or str(args.checkpoint), "context_tokens": args.context, "new_tokens": n,
            "repeats": args.repeats, "threads": args.threads, "turns": args.turns, "gguf_mib": sizes, "rows": rows}


def table(result: dict) -> str:
    lines = [f"model {result['model']}, context {result['context_tokens']} tokens, {result['new_tokens']} new tokens, "
             f"{result['threads']} threads, median of {result['repeats']}",
             f"| backend | prefill s (x) | compress s (x) | decode tok/s (x) | answer from memory s (x) | "
             f"{result['turns']}-turn agent s (x) | GGUF MiB |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        w = r["backend"].split()[-1]
        size = f"{result['gguf_mib'][w]:.1f}" if w in result["gguf_mib"] else "-"
        lines.append(f"| {r['backend']} | {r['prefill_s']:.3f} ({r['prefill_speedup']:.2f}) | {r['compress_s']:.3f} "
                     f"({r['compress_speedup']:.2f}) | {r['decode_tokens_per_s']:.1f} ({r['decode_speedup']:.2f}) | "
                     f"{r['answer_from_memory_s']:.3f} ({r['answer_speedup']:.2f}) | {r['agent_s']:.2f} "
                     f"({r['agent_speedup']:.2f}) | {size} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m icae.benchmarks.engines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a compressor checkpoint (or a shipped name: tiny-icae-4x)")
    p.add_argument("--random-shape", help="instead: an untrained ICAE over this random model (random-qwen2-0.5b)")
    p.add_argument("--work", required=True, help="directory for the export (reused when present) and results")
    p.add_argument("--weights", nargs="*", default=["f16", "q8_0", "q4_k"], help="llama.cpp weight types to run")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--turns", type=int, default=10, help="turns of the agent conversation")
    p.add_argument("--k", type=int, default=128, help="memory slots per segment (--random-shape)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's result.json in --work")
    a = p.parse_args(argv)
    if bool(a.checkpoint) == bool(a.random_shape):
        raise UserError("give one of --checkpoint or --random-shape")
    out = replaceable(Path(a.work) / "result.json", a.overwrite)  # refused before anything runs
    result = run(a)
    atomic_write_json(out, result)
    print(table(result))
    return result


if __name__ == "__main__":
    from icae.errors import entry

    entry(main)
