"""Speed and memory of every method at the same budget, on a model of a real shape (random weights: the cost is
real, the text is not), and the training step's FLOP/s against the machine's matmul FLOP/s (see
:mod:`icae.scripts.bench_peers`)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from icae.benchmarks.measure import kv_cache_mib, measured, training_step
from icae.benchmarks.peers import portable_model_dir, run_peer
from icae.config import ModelArguments
from icae.models import ICAE
from icae.models.loading import load_base_model
from icae.utils.timing import sync_device


def speed_model(config, k: int) -> ICAE:
    """An ICAE over the benchmark's base shape (its own adapter untrained: speed only)."""
    args = ModelArguments(model_name_or_path=config.bench.bench_speed_model, fixed_mem_size=k, mean_compression_rate=4,
                          lora_r=8, lora_alpha=16, lora_dropout=0.0, train=False, model_max_length=8192)
    base, tokenizer = load_base_model(args.model_name_or_path)
    return ICAE(args, base, tokenizer).eval()


@torch.no_grad()
def speed(config, budgets: list[int]) -> tuple[list[dict], dict]:
    b = config.bench
    length, new, repeats, questions = b.bench_speed_context, b.bench_new_tokens[0], b.bench_repeats, b.bench_questions
    model = speed_model(config, b.bench_speed_slots)
    device, vocab = model.device, len(model.tokenizer)
    gen = torch.Generator().manual_seed(0)
    context = torch.randint(8, vocab, (length,), generator=gen)
    prompts = [torch.randint(8, vocab, (16,), generator=gen) for _ in range(questions)]
    answer = dict(mode="ft", max_new_tokens=new, stop_token_ids=[])

    def full(ctx):
        return lambda: model.generate(model.token_memory([ctx]), [prompts[0]], **answer)

    cases = {("full context", 1): full(context)}
    for r in budgets:
        keep = length // r
        cases[("truncate (keep last)", r)] = full(context[-keep:])
        cases[("ICAE (compress + answer)", r)] = lambda r=r: model.generate(
            model.compress([context], compression_rate=r), [prompts[0]], **answer)
        cached = model.compress([context], compression_rate=r)
        cases[("ICAE (memory compressed in advance)", r)] = lambda m=cached: model.generate(m, [prompts[0]], **answer)
        cases[(f"ICAE, {questions} questions on one compression", r)] = lambda r=r: [
            model.generate(m, [p], **answer) for m in [model.compress([context], compression_rate=r)] for p in prompts]
    cases[(f"full context, {questions} questions", 1)] = lambda: [
        model.generate(model.token_memory([context]), [p], **answer) for p in prompts]
    for fn in list(cases.values())[:2]:
        fn()  # warm-up (allocator, kernels)
    runs = {key: [] for key in cases}
    ttft = {key: [] for key in cases}
    for _ in range(repeats):
        for key, fn in cases.items():  # interleaved within each repeat
            runs[key].append(measured(device, fn)[:2])
    answer_one = dict(answer, max_new_tokens=1)
    for _ in range(repeats):
        for (method, r) in cases:
            if "questions" in method:
                continue
            if method.startswith("ICAE (compress"):
                fn = lambda r=r: model.generate(model.compress([context], compression_rate=r), [prompts[0]], **answer_one)
            elif method.startswith("ICAE (memory"):
                m = model.compress([context], compression_rate=r)
                fn = lambda m=m: model.generate(m, [prompts[0]], **answer_one)
            else:
                ctx = context if r == 1 else context[-(length // r):]
                fn = lambda ctx=ctx: model.generate(model.token_memory([ctx]), [prompts[0]], **answer_one)
            ttft[(method, r)].append(measured(device, fn)[0])
    full_s = statistics.median(s for s, _ in runs[("full context", 1)])
    full_q = statistics.median(s for s, _ in runs[(f"full context, {questions} questions", 1)])
    rows = []
    for (method, r), values in runs.items():
        seconds = statistics.median(s for s, _ in values)
        k = model.args.fixed_mem_size
        positions = length if r == 1 else (length // r if "truncate" in method else -(-length // (k * r)) * k)
        reference = full_q if "questions" in method else full_s
        rows.append({"method": method, "budget": r, "latency_seconds": seconds, "latency_over_full": seconds / reference,
                     "ttft_seconds": statistics.median(ttft[(method, r)]) if ttft[(method, r)] else None,
                     "peak_mib": max(p for _, p in values),
                     "kv_cache_mib": kv_cache_mib(model, positions + 1 + 16 + new, 1),
                     "all_seconds": [s for s, _ in values]})
    for row in rows:
        if row["ttft_seconds"] is not None:
            full_ttft = statistics.median(ttft[("full context", 1)])
            row["ttft_over_full"] = row["ttft_seconds"] / full_ttft
    info = {"model": b.bench_speed_model, "context_tokens": length, "new_tokens": new, "repeats": repeats,
            "threads": torch.get_num_threads(), "device": str(device), "not_run": {}}
    rows += peers_speed(config, model, context, prompts[0], budgets, full_s, info)
    return rows, info


def peers_speed(config, model, context, prompt, budgets, full_s: float, info: dict) -> list[dict]:
    """LLMLingua (its compression in its environment, then answering from the shorter text here) and kvpress (timed in
    its environment against its own full context)."""
    b, rows = config.bench, []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model.base_causal_lm.save_pretrained(model_dir)
        model.tokenizer.save_pretrained(model_dir)
        text = model.tokenizer.decode(context)
        portable = portable_model_dir(model_dir, Path(tmp) / "portable")
        out, why = run_peer("llmlingua", {"model_dir": str(portable), "texts": [text],
                                          "rates": [1 / r for r in budgets], "threads": torch.get_num_threads()})
        if out is None:
            info["not_run"]["llmlingua"] = why
        for block, r in zip(out or [], budgets):
            compressed = model.tokenize([block["rows"][0]["compressed"]])[0]
            answer = measured(model.device, lambda: model.generate(model.token_memory([compressed]), [prompt],
                                                                   mode="ft", max_new_tokens=b.bench_new_tokens[0],
                                                                   stop_token_ids=[]))[0]
            seconds = block["rows"][0]["seconds"] + answer
            rows.append({"method": "LLMLingua", "budget": r, "latency_seconds": seconds,
                         "latency_over_full": seconds / full_s, "compression_seconds": block["rows"][0]["seconds"],
                         "kv_cache_mib": kv_cache_mib(model, compressed.numel() + 17 + b.bench_new_tokens[0], 1)})
        job = {"model_dir": str(model_dir), "presses": b.bench_presses, "ratios": [1 - 1 / r for r in budgets],
               "threads": torch.get_num_threads(), "samples": [],
               "speed": {"context_tokens": b.bench_speed_context, "new_tokens": b.bench_new_tokens[0],
                         "repeats": b.bench_repeats}}
        out, why = run_peer("kvpress", job)
    if out is None:
        info["not_run"]["kvpress"] = why
    full_kv = next((row["speed"] for row in out or [] if row["press"] == "full"), None)
    for row in out or []:
        if row["press"] == "full":
            continue
        s = row["speed"]
        rows.append({"method": row["method"], "budget": round(1 / (1 - row["ratio"])),
                     "latency_seconds": s["latency_seconds"],
                     "latency_over_full": s["latency_seconds"] / full_kv["latency_seconds"],
                     "ttft_seconds": s["ttft_seconds"], "ttft_over_full": s["ttft_seconds"] / full_kv["ttft_seconds"],
                     "peak_mib": s["peak_mib"], "kv_cache_mib": s["kv_cache_mib"]})
    return rows


def matmul_flops(device, size: int = 2048, repeats: int = 5) -> float:
    """Dense float32 matmul FLOP/s of this machine, now (medians of ``repeats``)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        sync_device(device)
        start = time.perf_counter()
        a @ b
        sync_device(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def step_flops(model: ICAE, segment: int, segments: int, decoder: int, scored: int) -> float:
    """Floating-point operations of one AE training step on one context: forward 2 and backward 2 (input gradients:
    the base is frozen) per weight per position in the linear layers; the LM head (forward and backward) on the scored
    positions; attention (``4 T^2 H`` per layer forward, twice that backward) per encoder segment and decoder row."""
    cfg = model.base_config
    linear = sum(p.numel() for n, p in model.base_causal_lm.named_parameters()
                 if p.dim() == 2 and "embed" not in n and "lm_head" not in n and "lora_" not in n)
    head = 4 * cfg.vocab_size * cfg.hidden_size * scored
    attention = 3 * 4 * cfg.num_hidden_layers * cfg.hidden_size * (segments * segment ** 2 + decoder ** 2)
    return 4 * linear * (segments * segment + decoder) + head + attention


def training_efficiency(model: ICAE, context: int, batch: int) -> dict:
    """Achieved FLOP/s of one AE training step over the matmul FLOP/s measured just before and after it."""
    peak_before = matmul_flops(model.device)
    gen = torch.Generator().manual_seed(1)
    contexts = [torch.randint(8, len(model.tokenizer), (context,), generator=gen) for _ in range(batch)]
    seconds, _, out = training_step(model, contexts)
    peak = (peak_before + matmul_flops(model.device)) / 2
    k = model.args.fixed_mem_size
    segments = -(-context // (k * model.args.mean_compression_rate))
    flops = batch * step_flops(model, context // segments + k, segments, segments * k + 1 + context + 1, context + 1)
    return {"batch": batch, "context": context, "seconds": seconds, "achieved_flops": flops / seconds,
            "matmul_flops": peak, "fraction_of_matmul": flops / seconds / peak}
