"""Micro-benchmark of the serving engine's worker (in process, no HTTP): continuous batching and prefix reuse.

    python -m icae.benchmarks.batching            # about a minute on one CPU thread

On a tiny random ICAE (tiny-qwen2, k=4, rate 4), through ``Engine.submit`` and ``Job.emit`` only (so the same file
measures an older engine too: ``PYTHONPATH=<old tree> python icae/benchmarks/batching.py``):

1. **Wait**: a 2-token request submitted when a 400-token request has produced 3 tokens. Reported: how many tokens
   the long request had produced when the short one finished (3 + 2 = 5 is the least: the short one joins at the next
   step; a batch that runs until its longest row ends gives 400).
2. **Batching vs serial**: 8 requests of 48 new tokens each, all submitted at once, against one after another;
   completion tokens per second of each, side by side, and their ratio.
3. **Prefix reuse**: an agent's 8 requests over a growing history where every other request drops the last reply and
   appends a user turn instead (as mini-swe-agent does after a format error); each normal step keeps the reply and
   appends a compressed tool output. Reported: decoder positions prefilled
   against decoder positions read (what a server without reuse prefills).

Token ids are made up (a random model reads them all the same); nothing here is asserted.
"""

from __future__ import annotations

import queue
import time

import torch

from icae.config import load_config
from icae.models import Span, build_model
from icae.models.decoding import SamplingParams
from icae.serve.engine import Engine, Job

OBS = [list(range(100 + 50 * i, 140 + 50 * i)) for i in range(8)]  # 40-token observations: 12 slots each


def make_engine() -> Engine:
    torch.manual_seed(0)
    config = load_config(None, {"model_name_or_path": "tiny-qwen2", "fixed_mem_size": 4, "mean_compression_rate": 4,
                                "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "min_tokens_to_compress": 16,
                                "use_position_identifiers": True, "train": False, "model_max_length": 2048})
    model = build_model(config).eval()
    return Engine(model, config, 8, 64.0, 16, 16)


def job(engine: Engine, spans: list[Span], max_tokens: int) -> Job:
    params = SamplingParams(max_new_tokens=max_tokens, stop_token_ids=())
    positions = sum(engine.model.memory_length(s.ids.numel()) if s.compress else s.ids.numel() for s in spans)
    events: queue.Queue = queue.Queue()
    j = Job(spans, [], params, [], None, events.put, sum(s.ids.numel() for s in spans), positions)
    j.events = events
    return j


def run(engine: Engine, j: Job) -> Job:
    engine.submit(j)
    return wait(j)


def wait(j: Job) -> Job:
    while (event := j.events.get(timeout=600)) is not None:
        if "error" in event:
            raise RuntimeError(event["error"])
    return j


HEADER, FOOTER, TOOL, USER = [16, 17], [10, 11], [7, 8], [12, 13]


def prompt(turns: int) -> list[Span]:
    """A task, then ``turns`` of (assistant reply, tool output), then the assistant's header."""
    spans = [Span([1, 2, 3, 4, 5, 6])]
    for t in range(turns):
        spans += [Span(HEADER), Span([30 + t, 31, 32] + FOOTER), Span(TOOL), Span(OBS[t], compress=True), Span(FOOTER)]
    return spans + [Span(HEADER)]


def agent(requests: int) -> list[list[Span]]:
    """An agent's requests, spans cut as ``icae.data.trajectories.Turn.spans`` cuts them (a header, then the content
    and footer; a compressed content alone): after each normal step (reply kept, tool output appended) comes a format error (the reply
    dropped, a user turn appended, as mini-swe-agent does)."""
    out, history = [], [Span([1, 2, 3, 4, 5, 6])]
    for r in range(requests):
        if r % 2 == 0:
            out.append(history + [Span(HEADER)])
            history = history + [Span(HEADER), Span([30 + r, 31, 32] + FOOTER), Span(TOOL),
                                 Span(OBS[r // 2], compress=True), Span(FOOTER)]
        else:
            out.append(history + [Span(USER), Span([40 + r, 41, 42, 43] + FOOTER), Span(HEADER)])
    return out


def waiting(engine: Engine) -> int:
    long, short = job(engine, prompt(1), 400), job(engine, prompt(2), 2)
    seen = {}

    def on_long(event):
        if event and len(long.ids) >= 3 and "submitted" not in seen:  # on the worker thread, between two steps
            seen["submitted"] = len(long.ids)
            engine.submit(short)
        long.events.put(event)

    def on_short(event):
        if event is None:
            seen["long"] = len(long.ids)
        short.events.put(event)

    long.emit, short.emit = on_long, on_short
    engine.submit(long)
    wait(short), wait(long)
    return seen["long"]


def throughput(engine: Engine) -> tuple[float, float]:
    """(serial, batched) completion tokens/s; each request starts with its own token, so neither set reuses the
    other's prefill."""
    def requests(phase: int) -> list[Job]:
        return [job(engine, [Span([200 + 10 * phase + i])] + prompt(1 + i % 3), 48) for i in range(8)]

    started = time.perf_counter()
    for j in requests(0):
        run(engine, j)
    serial = 8 * 48 / (time.perf_counter() - started)
    started, jobs = time.perf_counter(), requests(1)
    for j in jobs:
        engine.submit(j)
    for j in jobs:
        wait(j)
    return serial, sum(len(j.ids) for j in jobs) / (time.perf_counter() - started)


def reuse(engine: Engine) -> tuple[int, int]:
    before = dict(engine.metrics.counters)
    for spans in agent(8):
        run(engine, job(engine, spans, 4))
    c = engine.metrics.counters
    return (c["prefilled_positions_total"] - before["prefilled_positions_total"],
            c["decoder_positions_total"] - before["decoder_positions_total"])


def main() -> None:
    torch.set_num_threads(1)
    engine = make_engine()
    run(engine, job(engine, prompt(1), 2))  # warm-up
    print(f"wait: a 2-token request submitted after 3 tokens of a 400-token one finished when the long one had "
          f"{waiting(engine)} tokens")
    serial, batched = throughput(engine)
    print(f"throughput: 8 requests x 48 tokens: serial {serial:.0f} tokens/s, batched {batched:.0f} tokens/s "
          f"({batched / serial:.2f}x)")
    prefilled, read = reuse(engine)
    print(f"prefix reuse: 8 agent requests (every other one drops its last reply): {prefilled} of {read} decoder "
          f"positions prefilled ({1 - prefilled / read:.0%} saved)")


if __name__ == "__main__":
    main()
