"""Batched compress-then-generate with timing and compression statistics, shared by the inference recipes."""

from __future__ import annotations

import statistics
import time

import torch
from tqdm.auto import tqdm

from icae.data.tasks import AnswerSample
from icae.models.base import CompressorBase
from icae.utils.timing import time_stats, timed


@torch.no_grad()
def generate_batched(
    model: CompressorBase,
    samples: list[AnswerSample],
    mode: str,
    batch_size: int,
    max_new_tokens: int,
    desc: str = "generating",
    show_progress: bool = True,
) -> tuple[list[dict], dict]:
    """Compress each sample's ``input_ids`` and generate after its ``prompt_ids`` (may be empty) in ``mode``.

    Returns one row per sample (generated ids, context tokens, memory slots, its share of the batch's compression
    and generation time) and a summary: compression rates (mean of per-sample rates, and total context tokens over
    total slots), timing (per-sample mean/median, totals) and throughput.
    """
    model.eval()
    rows: list[dict] = []
    compress_times, generate_times = [], []
    started = time.perf_counter()
    for start in tqdm(range(0, len(samples), batch_size), desc=desc, disable=not show_progress):
        batch = samples[start : start + batch_size]
        memory, compress_s = timed(model.device, lambda: model.compress([torch.tensor(s.input_ids) for s in batch]))
        prompts = [torch.tensor(s.prompt_ids, dtype=torch.long) for s in batch]
        prefixes = [torch.tensor(s.prefix_ids, dtype=torch.long) for s in batch] if batch[0].prefix_ids else None
        generated, generate_s = timed(model.device, lambda: model.generate(memory, prompts, mode=mode, prefix_ids=prefixes,
                                                                           max_new_tokens=max_new_tokens))
        n = len(batch)
        for s, ids, k in zip(batch, generated, memory.num_slots.tolist()):
            rows.append({"generated_ids": ids, "context_tokens": len(s.input_ids), "memory_slots": int(k),
                         "compress_seconds": compress_s / n, "generate_seconds": generate_s / n})
        compress_times += [compress_s / n] * n
        generate_times += [generate_s / n] * n
    wall = time.perf_counter() - started
    tokens = sum(r["context_tokens"] for r in rows)
    slots = sum(r["memory_slots"] for r in rows)
    generated = sum(len(r["generated_ids"]) for r in rows)
    summary = {
        "num_samples": len(rows),
        "compression_rate_mean": statistics.fmean(r["context_tokens"] / max(r["memory_slots"], 1) for r in rows)
        if rows else 0.0,
        "compression_rate_total": tokens / max(slots, 1),
        "context_tokens": tokens,
        "memory_slots": slots,
        "generated_tokens": generated,
        "compression_seconds": time_stats(compress_times),
        "generation_seconds": time_stats(generate_times),
        "per_sample_seconds": time_stats([c + g for c, g in zip(compress_times, generate_times)]),
        "wall_seconds": wall,
        "samples_per_second": len(rows) / wall if wall > 0 else 0.0,
        "generated_tokens_per_second": generated / wall if wall > 0 else 0.0,
        "batch_size": batch_size,
    }
    return rows, summary
