"""``icae serve --backend llamacpp``: the server's engine with llama.cpp decoding.

Requests are rendered, checked, streamed, stopped at stop strings and counted by :class:`icae.serve.engine.Engine`'s
own code; only the worker differs. It takes up to ``max_batch_size`` waiting requests, continues each from the
longest kept history its spans extend (a llama.cpp sequence; ``max_conversations`` of them, least recently used out),
prefills the rest with the observations compressed once (the slot cache), and decodes the group together: one
llama.cpp pass per token for every running row (:meth:`LlamaCppICAE.decode_rows`). A request that arrives meanwhile
waits for the group to end (the PyTorch engine lets it join between steps). Logprobs are not reported here.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict

import torch

from icae.serve.caches import SlotCache
from icae.serve.engine import Engine, Job
from icae.serve.metrics import Metrics
from icae.serve.render import Renderer


class LlamaCppEngine(Engine):
    """:class:`icae.serve.engine.Engine`'s interface over a :class:`icae.engines.llamacpp.LlamaCppICAE`."""

    def __init__(self, model, config, max_batch_size: int, slot_cache_mb: float, max_conversations: int,
                 default_max_tokens: int, **_):
        self.model, self.config, self.tokenizer = model, config, model.tokenizer
        self.max_batch_size, self.default_max_tokens = max_batch_size, default_max_tokens
        self.slots = SlotCache(slot_cache_mb)
        spare = model.runtime.options.n_seq_max - max_batch_size - 1  # running rows and one encoder pass
        self.max_histories = max(0, min(max_conversations, spare))
        self.histories: OrderedDict[tuple, object] = OrderedDict()  # span keys -> LlamaCppState
        self.conversations = self.histories
        self.metrics = Metrics()
        self.renderer = Renderer(model, config, default_max_tokens)
        self.stop_ids = set(model.layout.turn_stop_ids)
        self._queue: "queue.Queue[Job]" = queue.Queue()
        self._worker = threading.Thread(target=self._loop, name="icae-llamacpp-engine", daemon=True)
        self._worker.start()

    def _loop(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < self.max_batch_size:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.metrics.queued(-len(jobs))
            live = [j for j in jobs if not j.cancelled.is_set()]
            for _ in range(len(jobs) - len(live)):
                self.metrics.cancelled()
            if live:
                self.metrics.batch(len(live))
                try:
                    self._run(live)
                except Exception as e:  # a failure of the model must not kill the worker
                    for job in live:
                        job.emit({"error": f"{type(e).__name__}: {e}"})

    def _history(self, job: Job):
        """The longest kept history that ``job``'s spans extend, and how many spans it holds."""
        keys = tuple(span.key for span in job.spans)
        for n in range(len(keys) - 1, 0, -1):  # at least one span to prefill: the logits come from it
            state = self.histories.get(keys[:n])
            if state is not None:
                self.histories.move_to_end(keys[:n])
                return state, n
        return None, 0

    def _run(self, jobs: list[Job]) -> None:
        from icae.engines.llamacpp_spans import LlamaCppState

        model, rt = self.model, self.model.runtime
        rows, seqs, starts, keep, fresh = [], [], [], [], []
        for job in jobs:
            job.started = time.perf_counter()
            state, held = self._history(job)
            rest = job.spans[held:]
            keys = {s.key for s in rest + job.transient if s.compress}
            cached = {k for k in keys if k in self.slots}
            memories, _ = model.compress_spans([rest + job.transient], self.slots)
            length, virtual = (state.length, state.virtual) if state else (0, 0)
            embeds, positions, _ = model.span_row(rest + job.transient, memories, (length, virtual))
            new = len(embeds) - sum(s.ids.numel() for s in job.transient)
            lane = rt.borrow(1)[0]
            if state is not None:
                rt.copy(state.lane, lane, length)
            fresh.append(LlamaCppState(model, lane, length + new, virtual + sum(s.ids.numel() for s in rest)))
            rows.append((embeds, positions))
            seqs.append(lane), starts.append(length), keep.append(length + new)
            job.stats = {"decoder_positions": job.positions, "prefilled_positions": len(embeds),
                         "reused_positions": length, "tokens_saved": job.prompt_tokens - job.positions,
                         "compressed_observations": len(keys - cached), "slot_cache_hits": len(cached),
                         "prefix_cache_hit": length > 0}
        seeds = [int(torch.randint(0, 2**31 - 1, (1,), generator=j.generator)) if j.generator is not None else 0
                 for j in jobs]
        out = model.decode_rows(rows, [j.params for j in jobs], seeds, seqs, starts, keep,
                                on_token=lambda r, t: self._advance(jobs[r], t, None))
        for job, ids, state in zip(jobs, out, fresh):
            self._keep(tuple(s.key for s in job.spans), state)
            if job.finish is None:
                job.finish = "length" if len(ids) >= job.params.max_new_tokens else "stop"
            self._finish(job)

    def _keep(self, keys: tuple, state) -> None:
        if not self.max_histories:
            state.release()
            return
        old = self.histories.pop(keys, None)
        if old is not None:
            old.release()
        self.histories[keys] = state
        while len(self.histories) > self.max_histories:
            self.histories.popitem(last=False)[1].release()

    def _finish(self, job: Job) -> None:
        if job.finish == "cancelled":
            self.metrics.cancelled()
        elif len(job.text) > job.sent:
            self._emit(job, job.text[job.sent:])
        job.stats["seconds"] = time.perf_counter() - job.started
        self.metrics.served(job)
        job.emit(None)


def build(config, export: str | None = None, weights: str = "f32"):
    """(engine, served model name) for ``icae serve --backend llamacpp``: the GGUF export ``export``, or, without
    one, the configured checkpoint (``restore_from``) exported once into ``$ICAE_HOME/gguf/`` (f32 and q8_0)."""
    import hashlib
    from pathlib import Path

    from icae.engines.gguf_export import export_gguf
    from icae.engines.llamacpp import LlamaCppICAE
    from icae.errors import UserError
    from icae.models.loading import icae_home, resolve_checkpoint

    s = config.serve
    source = config.model.restore_from
    if export is None:
        if not source:
            raise UserError("--backend llamacpp serves a GGUF export: pass --gguf DIR (icae export --format gguf), or "
                            "set restore_from to a checkpoint to export")
        where = resolve_checkpoint(source).resolve()
        tag = hashlib.sha1(str(where).encode()).hexdigest()[:10]
        export = icae_home() / "gguf" / f"{where.name}-{tag}"
        if not (Path(export) / "manifest.json").is_file():
            print(f"exporting {source} to {export} (once)", flush=True)
            export_gguf(source, export, ("f32", "q8_0"), overwrite=True)
    threads = s.torch_threads or 0
    model = LlamaCppICAE(export, weights, {"n_threads": threads, "n_seq_max": s.max_batch_size + s.max_conversations + 1,
                                            "n_ctx": max(8192, 2 * config.model.model_max_length)})
    name = s.served_model_name or str(source or export).rstrip("/")
    engine = LlamaCppEngine(model, config, s.max_batch_size, s.slot_cache_mb, s.max_conversations,
                            s.default_max_tokens)
    return engine, name
