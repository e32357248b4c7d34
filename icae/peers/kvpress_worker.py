"""kvpress, run in its own environment (it pins transformers<5.3): prune the KV cache after a full prefill, then score
and time what follows. Standalone: imports only torch, transformers and kvpress; reads one JSON job, writes one JSON.

    .peers/kvpress/bin/python icae/peers/kvpress_worker.py JOB.json OUT.json

Job: ``{"model_dir", "presses": [...], "ratios": [...], "samples": [{"context", "continuation"}] (token ids),
"qa": {"samples": [{"context", "prompt"}], "max_new_tokens", "stop"} or null, "speed": {"context_tokens",
"new_tokens", "repeats"} or null, "threads"}``. With ``qa``: each question's greedy answer after its pruned context. For each press and ratio (the share of
the KV cache removed): the teacher-forced token accuracy and loss of each continuation read after the pruned cache
(continuation positions keep their place after the full context), and, with ``speed``, the median prefill (time to
first token), total latency for ``new_tokens`` greedy tokens, peak RSS growth and KV-cache size, over interleaved
repeats.
"""

from __future__ import annotations

import ctypes
import json
import statistics
import sys
import threading
import time

import psutil
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, DynamicCache

import kvpress  # noqa: I001 (its own environment)

PRESSES = {"knorm": "KnormPress", "snapkv": "SnapKVPress", "streaming_llm": "StreamingLLMPress",
           "expected_attention": "ExpectedAttentionPress", "tova": "TOVAPress", "random": "RandomPress"}


def make_press(name: str, ratio: float, length: int):
    """A press, or None for ``full``: the whole cache, the reference every ratio in this run is taken against.
    SnapKV scores the cache with the attention of the last ``window_size`` queries (64 by default) and needs a longer
    context than that: on a context of ``length`` tokens its window is at most a quarter of it."""
    if name == "full":
        return None
    extra = {"window_size": min(64, max(1, length // 4))} if name == "snapkv" else {}
    return getattr(kvpress, PRESSES[name])(compression_ratio=ratio, **extra)


@torch.no_grad()
def prefill(model, ids: torch.Tensor, press):
    cache = DynamicCache()
    if press is None:
        out = model(ids, past_key_values=cache, use_cache=True)
    else:
        with press(model):
            out = model(ids, past_key_values=cache, use_cache=True)
    return cache, out.logits[:, -1]


@torch.no_grad()
def score(model, context: list[int], continuation: list[int], press) -> tuple[float, float]:
    """Teacher-forced (accuracy, loss) of ``continuation`` after ``context`` whose cache ``press`` pruned."""
    ctx = torch.tensor([context])
    cache, last = prefill(model, ctx, press)
    cont = torch.tensor([continuation])
    positions = torch.arange(len(context), len(context) + len(continuation))[None]  # their real places
    kept = cache.get_seq_length()
    mask = torch.ones(1, kept + len(continuation), dtype=torch.long)
    logits = model(cont, past_key_values=cache, position_ids=positions, attention_mask=mask, use_cache=True).logits
    logits = torch.cat([last[:, None], logits[:, :-1]], dim=1)[0].float()  # logits[i] predicts continuation[i]
    target = cont[0]
    return float((logits.argmax(-1) == target).float().mean()), float(F.cross_entropy(logits, target))


@torch.no_grad()
def answer(model, context: list[int], prompt: list[int], press, max_new: int, stops: set[int]) -> list[int]:
    """Greedy answer to ``prompt`` read after ``context`` whose cache ``press`` pruned (positions kept in place)."""
    cache, _ = prefill(model, torch.tensor([context]), press)
    kept, position, out = cache.get_seq_length(), len(context), []
    ids = torch.tensor([prompt])
    for _ in range(max_new):
        n = ids.shape[1]
        mask = torch.ones(1, kept + n, dtype=torch.long)
        logits = model(ids, past_key_values=cache, position_ids=torch.arange(position, position + n)[None],
                       attention_mask=mask, use_cache=True).logits[:, -1]
        kept, position = kept + n, position + n
        token = int(logits.argmax(-1))
        if token in stops:
            break
        out.append(token)
        ids = torch.tensor([[token]])
    return out


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measured(fn):
    """(seconds, peak RSS growth in MiB, result) of ``fn()``, sampling RSS every 2 ms."""
    _trim()
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak, stop = [base], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - start
        stop.set()
        thread.join()
    return seconds, (max(peak[0], proc.memory_info().rss) - base) / 2**20, result


@torch.no_grad()
def generate(model, ids: torch.Tensor, press, new_tokens: int):
    """(time to first token, kept KV positions) then ``new_tokens`` greedy steps; returns both and the total time."""
    start = time.perf_counter()
    cache, last = prefill(model, ids, press)
    first = time.perf_counter() - start
    token = last.argmax(-1, keepdim=True)
    position = ids.shape[1]
    kept = cache.get_seq_length()
    for i in range(new_tokens - 1):
        mask = torch.ones(1, kept + i + 1, dtype=torch.long)
        out = model(token, past_key_values=cache, position_ids=torch.tensor([[position + i]]), attention_mask=mask,
                    use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    return first, kept


def kv_mib(model, positions: int) -> float:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * model.dtype.itemsize * positions / 2**20


def main() -> None:
    job = json.loads(open(sys.argv[1]).read())
    torch.set_num_threads(job.get("threads", 2))
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32).eval()
    results = []
    cases = [("full", 0.0)] + [(name, ratio) for name in job["presses"] for ratio in job["ratios"]]
    for name, ratio in cases:
        row = {"method": "full (kvpress env)" if name == "full" else f"kvpress-{name}", "press": name, "ratio": ratio,
               "transformers": __import__("transformers").__version__}
        if job.get("samples"):
            scores = [score(model, s["context"], s["continuation"], make_press(name, ratio, len(s["context"])))
                      for s in job["samples"]]
            row.update(token_accuracy=statistics.fmean(a for a, _ in scores),
                       loss=statistics.fmean(loss for _, loss in scores), samples=len(scores))
        if job.get("qa"):
            qa = job["qa"]
            row["qa_answers"] = [answer(model, s["context"], s["prompt"], make_press(name, ratio, len(s["context"])),
                                        qa["max_new_tokens"], set(qa["stop"])) for s in qa["samples"]]
        results.append(row)
    speed = job.get("speed")
    if speed:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(8, model.config.vocab_size - 1, (1, speed["context_tokens"]), generator=gen)
        generate(model, ids[:, :64], None, 2)  # warm-up
        times = {c: [] for c in cases}
        for _ in range(speed["repeats"]):
            for name, ratio in cases:  # interleaved within each repeat
                press = make_press(name, ratio, ids.shape[1])
                seconds, peak, (first, kept) = measured(lambda: generate(model, ids, press, speed["new_tokens"]))
                times[(name, ratio)].append((first, seconds, peak, kept))
        for row in results:
            runs = times[(row["press"], row["ratio"])]
            row["speed"] = {"ttft_seconds": statistics.median(r[0] for r in runs),
                            "latency_seconds": statistics.median(r[1] for r in runs),
                            "peak_mib": max(r[2] for r in runs), "kv_positions": runs[0][3],
                            "kv_cache_mib": kv_mib(model, runs[0][3] + speed["new_tokens"]),
                            "all_latency_seconds": [r[1] for r in runs]}
    open(sys.argv[2], "w").write(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
