"""The serving engine: chat requests -> compressed histories -> continuous batching on one worker thread.

A request's messages are rendered into spans on the caller's thread (``icae.serve.render``). The worker keeps one
running batch (``icae.models.decoding.Batch``, the decode loop the models use too): between two decoding steps,
waiting requests are prefilled and join it, and rows that ended (stop token, stop string, length, a client gone)
leave it, so a short request is never held behind a long one. Compressed observations are cached by content
(``SlotCache``); the decoder keys/values of every served prompt go into a prefix tree (``PrefixCache``), so a request
prefills only what no earlier request computed: the positions after its longest cached prefix.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Optional

import torch

from icae.models import DecoderState, Span, kv
from icae.models.decoding import Batch, Row, TokenLogprob
from icae.serve.caches import PrefixCache, SlotCache, elements
from icae.serve.job import Job  # noqa: F401  (importable from here too)
from icae.serve.metrics import Metrics
from icae.serve.render import Renderer, RequestError  # noqa: F401  (RequestError: importable from here too)


class Engine:
    def __init__(self, model, config, max_batch_size: int, slot_cache_mb: float, max_conversations: int,
                 default_max_tokens: int, prefix_cache_mb: float = 256.0):
        """``prefix_cache_mb``: memory for kept decoder keys/values (the prefix tree). ``max_conversations`` 0 turns
        prefix reuse off (any other value: the tree's bound in MB decides what is kept)."""
        self.model, self.config = model.eval(), config
        self.tokenizer = model.tokenizer
        self.max_batch_size, self.default_max_tokens = max_batch_size, default_max_tokens
        self.slots = SlotCache(slot_cache_mb)
        self.prefixes = PrefixCache(prefix_cache_mb if max_conversations > 0 else 0.0)
        self.conversations = self.prefixes  # /health counts its leaves as cached conversations
        self.metrics = Metrics()
        self.renderer = Renderer(model, config, default_max_tokens)
        self.stop_ids = set(model.layout.turn_stop_ids)
        self.batch = Batch(model)
        self._jobs: dict[Row, Job] = {}
        self._queue: "queue.Queue[Job]" = queue.Queue()
        # Set while the worker waits for a request with nothing running: the model's adapter state is process-wide
        # (the worker switches it around every series of steps), so whoever else runs the model must wait for this.
        self._idle = threading.Event()
        self._worker = threading.Thread(target=self._loop, name="icae-engine", daemon=True)
        self._worker.start()

    # ----------------------------------------------------------------------------------------- admission
    def prepare(self, *args, **kwargs) -> Job:
        """Render and check a request on the caller's thread: ``icae.serve.render.Renderer.prepare``."""
        return self.renderer.prepare(*args, **kwargs)

    def submit(self, job: Job) -> None:
        self.metrics.queued(+1)
        self._queue.put(job)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Wait until the worker has nothing running and has left the model's decoder state (True), or ``timeout``
        seconds pass (False). For a caller with no request in flight (a test comparing against the same model): it
        excludes no one, so a request submitted after it returns starts the worker again."""
        return self._idle.wait(timeout)

    # ----------------------------------------------------------------------------------------- worker
    def _loop(self) -> None:
        while True:
            self._admit()
            if not self.batch:
                continue
            try:
                # Steps until a waiting request could join (admission runs the encoder: outside the decoder's
                # adapter state, entered once per series because switching it costs more than a tiny model's step).
                with torch.no_grad(), self.model.decoder_context():
                    while self.batch and (self._queue.empty() or len(self.batch) >= self.max_batch_size):
                        ended = self.batch.step()
                        self.metrics.step(len(self.batch) + len(ended))
                        for row in ended:
                            self._end(row)
            except Exception as e:  # a failure of the model must not kill the worker: each running client is told
                self.batch = Batch(self.model)
                for job in self._jobs.values():
                    job.emit({"error": f"{type(e).__name__}: {e}"})
                self._jobs.clear()

    def _admit(self) -> None:
        """Take waiting requests into the running batch, up to ``max_batch_size`` rows; wait for one when idle."""
        if self.batch:
            jobs = []
        else:
            self._idle.set()
            jobs = [self._queue.get()]
            self._idle.clear()
        while len(self.batch) + len(jobs) < self.max_batch_size:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not jobs:
            return
        self.metrics.queued(-len(jobs))
        admitted = 0
        for job in jobs:
            if job.cancelled.is_set():
                self.metrics.cancelled()  # a client that left before its turn frees its place
                continue
            try:
                with torch.no_grad():
                    group, row = self._prefill(job)
                self._jobs[row] = job
                ended = self.batch.join(group, [row])  # a row with nothing to generate ends here
            except Exception as e:  # this request fails alone
                self._jobs = {r: j for r, j in self._jobs.items() if j is not job}
                job.emit({"error": f"{type(e).__name__}: {e}"})
                continue
            admitted += 1
            for r in ended:
                self._end(r)
        if admitted:
            self.metrics.batch(admitted)

    def _prefill(self, job: Job):
        """Prefill ``job`` after its longest cached prefix, keep its prompt's keys/values in the prefix tree, and
        return (the prefilled group, the row that joins the batch)."""
        model, job.started = self.model, time.perf_counter()
        items = elements(job.spans, model.memory_length)
        hit = self.prefixes.match(items, len(items) - 1)  # at least one position to prefill: the logits come from it
        rest = _spans_after(job.spans, hit.elements)
        keys = {s.key for s in rest + job.transient if s.compress}
        cached = {k for k in keys if k in self.slots}
        state = DecoderState(kv.from_tensors(hit.layers), hit.length, hit.virtual) if hit.length else None
        group, state, _ = model.prefill_incremental(state, rest, self.slots, job.transient)
        self.prefixes.insert(items, kv.tensors(state.cache))
        prefilled = int(group.mask.sum()) - hit.length
        job.stats = {"decoder_positions": job.positions, "prefilled_positions": prefilled,
                     "reused_positions": hit.length, "tokens_saved": job.prompt_tokens - job.positions,
                     "compressed_observations": len(keys - cached), "slot_cache_hits": len(cached),
                     "prefix_cache_hit": hit.length > 0}
        row = Row(job.params, job.generator, lambda token, logprob: self._advance(job, token, logprob), job.logprobs)
        return group, row

    def _advance(self, job: Job, token: int, logprob: Optional[TokenLogprob]) -> bool:
        """Take one token for ``job``; True when the job is done here (stop string, cancelled)."""
        if job.cancelled.is_set():
            job.finish = "cancelled"
            return True
        job.ids.append(token)
        if logprob is not None:
            job.pending.append(self._logprob(logprob))
        job.text = self.tokenizer.decode(job.ids, skip_special_tokens=True)
        for stop in job.stops:
            at = job.text.find(stop, max(job.sent - len(stop), 0))
            if at >= 0:
                job.text = job.text[:at]
                job.finish = "stop"
                return True
        hold = max((len(s) for s in job.stops), default=1) - 1  # text that may still become a stop string
        ready = len(job.text) - hold
        if job.text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            ready = min(ready, len(job.text) - 1)
        if ready > job.sent:
            self._emit(job, job.text[job.sent : ready])
        return False

    def _logprob(self, lp: TokenLogprob) -> dict:
        def token(i: int) -> str:
            return self.tokenizer.decode([i])

        return {"id": lp.token, "token": token(lp.token), "logprob": lp.logprob,
                "top": [{"id": i, "token": token(i), "logprob": p} for i, p in lp.top]}

    def _emit(self, job: Job, delta: str) -> None:
        event = {"delta": delta}
        if job.logprobs is not None:
            event["logprobs"], job.pending = job.pending, []
        job.emit(event)
        job.sent += len(delta)

    def _end(self, row: Row) -> None:
        """A row left the batch: send the held text, the stats and the end."""
        job = self._jobs.pop(row, None)
        if job is None:
            return
        job.finish = job.finish or row.finish
        if job.finish == "cancelled":
            self.metrics.cancelled()
        elif len(job.text) > job.sent or job.pending:
            self._emit(job, job.text[job.sent:])
        job.stats["seconds"] = time.perf_counter() - job.started
        self.metrics.served(job)
        job.emit(None)


def _spans_after(spans: list[Span], skip: int) -> list[Span]:
    """``spans`` without their first ``skip`` elements (``icae.serve.caches.elements``): whole spans dropped, a
    token span cut inside."""
    out = []
    for span in spans:
        n = 1 if span.compress else span.ids.numel()
        if skip >= n:
            skip -= n
        elif skip and not span.compress:
            out.append(Span(span.ids[skip:]))
            skip = 0
        else:
            out.append(span)
            skip = 0
    return out
