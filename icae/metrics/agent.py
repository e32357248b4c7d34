"""Metrics of the closed-loop agent benchmark (issue #24): success with its 95% interval, the step at which a
conversation's decoder positions pass a fixed window, the KV cache those positions take, and the per-agent summary
of scored episodes (``python -m icae.benchmarks.agent``; docs/bench_agent.md).

Each function works on plain numbers, so that every figure in the table can be recomputed by hand from an episode's
record.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95% interval


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a success rate (Wilson 1927): unlike p +- z*sqrt(p(1-p)/n), it stays inside
    [0, 1] and is not empty at 0/n or n/n, where a benchmark on few tasks often lands.

    centre = (p + z^2/2n) / (1 + z^2/n); half width = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes}/{n}")
    p, zz = successes / n, z * z
    denominator = 1 + zz / n
    centre = (p + zz / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + zz / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def first_step_over(positions: Sequence[int], window: int) -> int | None:
    """The 1-based step whose request would not fit a window of ``window`` decoder positions (``positions[i]``: what
    the decoder reads for step i+1's request), or None when every request fits. The steps that fit before the window
    are this step minus one."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    return next((i + 1 for i, p in enumerate(positions) if p > window), None)


def kv_shape(config: dict) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of a Hugging Face model config (``config.json`` read as a dict); grouped-query
    attention keeps ``num_key_value_heads`` heads, and head dim is ``head_dim`` where set (Qwen3, Gemma), else hidden
    size / attention heads."""
    config = config.get("text_config", config)  # multimodal configs nest the LM's
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return config["num_hidden_layers"], config.get("num_key_value_heads") or heads, head_dim


def kv_cache_mib(positions: int, layers: int, kv_heads: int, head_dim: int, bytes_per_value: int) -> float:
    """The KV cache of one sequence of ``positions`` decoder positions: keys and values (2) x layers x KV heads x head
    dim x bytes, per position, in MiB."""
    return positions * layers * 2 * kv_heads * head_dim * bytes_per_value / 2**20


def summarize(episodes: Sequence[dict], window: int) -> dict:
    """Per-agent figures from episode records (``icae.benchmarks.agent`` writes them: ``success``, ``steps``,
    ``reference_match``, ``leading_right``, ``seconds`` and ``requests``, each request with ``prompt_tokens``,
    ``decoder_positions`` and ``kv_mib``; positions may be None where nothing counted them).

    Prompt tokens and decoder positions are means over every request of every episode; peak KV is the largest over
    all requests; ``steps_fit`` is per episode (None: the window was never passed). An episode whose next request
    the server refused for its own context window (``refused_at``: that step) passed the window there at the latest,
    though no position count of that request exists."""
    n = len(episodes)
    if n == 0:
        raise ValueError("no episode to summarize")
    wins = sum(bool(e["success"]) for e in episodes)
    low, high = wilson_interval(wins, n)
    requests = [r for e in episodes for r in e["requests"]]
    tokens = [r["prompt_tokens"] for r in requests if r.get("prompt_tokens") is not None]
    positions = [r["decoder_positions"] for r in requests if r.get("decoder_positions") is not None]
    kv = [r["kv_mib"] for r in requests if r.get("kv_mib") is not None]
    over = [first_step_over([r["decoder_positions"] for r in e["requests"]], window) or e.get("refused_at")
            for e in episodes
            if e["requests"] and all(r.get("decoder_positions") is not None for r in e["requests"])]
    return {
        "episodes": n, "successes": wins, "success_rate": wins / n, "success_ci95": [low, high],
        "mean_steps": statistics.fmean(e["steps"] for e in episodes),
        "reference_match": statistics.fmean(e["reference_match"] for e in episodes),
        # None when an episode record lacks it (recorded before the metric existed): not counted as 0
        "leading_right": (statistics.fmean(e["leading_right"] for e in episodes)
                          if all("leading_right" in e for e in episodes) else None),
        "mean_prompt_tokens": statistics.fmean(tokens) if tokens else None,
        "mean_decoder_positions": statistics.fmean(positions) if positions else None,
        "peak_decoder_positions": max(positions) if positions else None,
        "peak_kv_mib": max(kv) if kv else None,
        "seconds_per_task": statistics.fmean(e["seconds"] for e in episodes),
        "window": window,
        # per episode: the steps that fit before the window (the step over it minus one), None where none passed it
        "steps_fit": [None if s is None else s - 1 for s in over],
        "episodes_over_window": sum(s is not None for s in over),
    }
