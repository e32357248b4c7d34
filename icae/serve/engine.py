"""The serving engine: chat requests -> compressed histories -> batched decoding on one worker thread.

A request's messages are rendered as the trajectory recipes render them (``icae.data.trajectories``): a message of a
role in ``compress_roles`` with at least ``min_tokens_to_compress`` tokens becomes memory slots, everything else
stays tokens, and the prompt ends with the assistant's header. Compressed observations are cached by content
(``SlotCache``); a conversation that extends an earlier one continues that one's decoder KV cache
(``ConversationCache``), so each request prefills only what is new. Queued requests are decoded together, up to
``max_batch_size`` at a time, each with its own sampling parameters and seed (``icae.models.kv`` stacks their caches).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from icae.data.trajectories import turn_stop_ids
from icae.models import Span, kv, layouts
from icae.models.decoding import SamplingParams, pick_tokens
from icae.models.seed import chat_frame
from icae.serve.caches import ConversationCache, SlotCache, signature
from icae.serve.metrics import Metrics
from icae.serve.render import Renderer, RequestError  # noqa: F401  (RequestError: importable from here too)


@dataclass
class Job:
    """One request on its way through the worker: its spans, how to sample, and where its tokens go."""

    spans: list[Span]
    transient: list[Span]
    params: SamplingParams
    stops: list[str]
    generator: Optional[torch.Generator]
    emit: Callable[[Optional[dict]], None]  # a dict per event (tokens, then the end); called on the worker thread
    prompt_tokens: int
    positions: int  # decoder positions of the prompt (slots counted, not the tokens they replace)
    cancelled: threading.Event = field(default_factory=threading.Event)
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of text already emitted
    finish: Optional[str] = None
    stats: dict = field(default_factory=dict)


class Engine:
    def __init__(self, model, config, max_batch_size: int, slot_cache_mb: float, max_conversations: int,
                 default_max_tokens: int):
        self.model, self.config = model.eval(), config
        self.tokenizer = model.tokenizer
        self.max_batch_size, self.default_max_tokens = max_batch_size, default_max_tokens
        self.slots, self.conversations = SlotCache(slot_cache_mb), ConversationCache(max_conversations)
        self.metrics = Metrics()
        self.renderer = Renderer(model, config, default_max_tokens)
        self.frame = chat_frame(self.tokenizer) if model.args.layout == "seed" else None
        self.stop_ids = set(turn_stop_ids(self.tokenizer)) | (set(model.seed_stop_ids()) if self.frame else set())
        self._queue: "queue.Queue[Job]" = queue.Queue()
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

    # ----------------------------------------------------------------------------------------- worker
    def _loop(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < self.max_batch_size:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.metrics.queued(-len(jobs))
            for job in jobs:
                if job.cancelled.is_set():
                    self.metrics.cancelled()  # a client that left before its turn frees its slot
            jobs = [j for j in jobs if not j.cancelled.is_set()]
            if not jobs:
                continue
            self.metrics.batch(len(jobs))
            try:
                with torch.no_grad():
                    self._run(jobs)
            except Exception as e:  # a failure of the model must not kill the worker: each waiting client is told
                for job in jobs:
                    if job.finish is None:
                        job.emit({"error": f"{type(e).__name__}: {e}"})

    def _run(self, jobs: list[Job]) -> None:
        model = self.model
        started = time.perf_counter()
        taken = [self._resume(job) for job in jobs]
        states = [state or kv.empty_state(model.base_config) for _, state in taken]
        new_spans = [job.spans[covered:] + job.transient for job, (covered, _) in zip(jobs, taken)]
        cached = [{s.key for s in spans if s.compress and s.key in self.slots} for spans in new_spans]
        fresh = [{s.key for s in spans if s.compress} - hit for spans, hit in zip(new_spans, cached)]
        memories, _ = model.compress_spans(new_spans, self.slots)
        rows = [layouts.span_inputs(model, [spans], memories, start=(state.length, state.virtual))
                for spans, state in zip(new_spans, states)]
        new = [r["inputs_embeds"].shape[1] for r in rows]
        width_old, width_new = max(s.length for s in states), max(new)
        cache, old_mask = kv.stack(states, model.base_config, width_old)
        embeds = rows[0]["inputs_embeds"].new_zeros(len(jobs), width_new, model.hidden_size)
        positions = torch.zeros(len(jobs), width_new, dtype=torch.long)
        new_mask = torch.zeros(len(jobs), width_new, dtype=torch.long)
        for i, r in enumerate(rows):
            embeds[i, width_new - new[i]:] = r["inputs_embeds"][0]
            positions[i, width_new - new[i]:] = r["position_ids"][0].cpu()
            new_mask[i, width_new - new[i]:] = 1
        device = model.device
        mask = torch.cat([old_mask, new_mask], dim=1).to(device)
        self._decode(jobs, cache, embeds, mask, positions.to(device))
        for i, (job, state) in enumerate(zip(jobs, states)):
            kept = new[i] - sum(s.ids.numel() for s in job.transient)
            keep = [(width_old - state.length, width_old), (width_old + width_new - new[i],
                                                             width_old + width_new - new[i] + kept)]
            state.cache = kv.split(cache, i, [k for k in keep if k[1] > k[0]], model.base_config)
            state.length += kept
            state.virtual += sum(s.ids.numel() for s in job.spans[taken[i][0]:])
            self.conversations.put(signature(job.spans), state)
            job.stats = {"decoder_positions": job.positions, "prefilled_positions": new[i],
                         "reused_positions": state.length - kept, "tokens_saved": job.prompt_tokens - job.positions,
                         "compressed_observations": len(fresh[i]), "slot_cache_hits": len(cached[i]),
                         "seconds": time.perf_counter() - started}
            self.metrics.served(job)
            job.emit(None)

    def _resume(self, job: Job):
        """(spans already in the cache, state) for ``job``. The same conversation asked again (a retry, another sample)
        covers every span: its last one (the assistant header) is cropped and fed again, to have logits to start from."""
        covered, state = self.conversations.take(signature(job.spans))
        if state is not None and covered == len(job.spans):
            last = job.spans[-1].ids.numel()
            state.cache.crop(-last)
            state.length, state.virtual, covered = state.length - last, state.virtual - last, covered - 1
        return covered, state

    def _decode(self, jobs: list[Job], cache, embeds, mask, positions) -> None:
        """Greedy or sampled decoding of the batch, each row with its own parameters; tokens go out as they come."""
        model = self.model
        done = [False] * len(jobs)
        next_pos = positions[:, -1] + 1
        with model.decoder_context():
            step = model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache,
                               use_cache=True, logits_to_keep=1)
            for produced in range(1, max(j.params.max_new_tokens for j in jobs) + 1):
                logits = step.logits[:, -1].float()
                tokens = []
                for i, job in enumerate(jobs):
                    token = int(pick_tokens(logits[i : i + 1], job.params, job.generator)[0])
                    tokens.append(token)
                    if not done[i]:
                        done[i] = self._advance(job, token, produced)
                if all(done):
                    break
                mask = torch.cat([mask, mask.new_ones(len(jobs), 1)], dim=1)
                step = model.model(inputs_embeds=model.embed(torch.tensor(tokens)[:, None]), attention_mask=mask,
                                   position_ids=next_pos[:, None], cache=step.cache, use_cache=True)
                next_pos = next_pos + 1
        for job, finished in zip(jobs, done):
            if not finished:
                self._finish(job, "length")

    def _advance(self, job: Job, token: int, produced: int) -> bool:
        """Take one token for ``job``; True when the job is done (stop token, stop string, length, cancelled)."""
        if job.cancelled.is_set():
            job.finish = "cancelled"
            self.metrics.cancelled()
            return True
        if token in job.params.stop_token_ids:
            self._finish(job, "stop")
            return True
        job.ids.append(token)
        job.text = self.tokenizer.decode(job.ids, skip_special_tokens=True)
        for stop in job.stops:
            at = job.text.find(stop, max(job.sent - len(stop), 0))
            if at >= 0:
                job.text = job.text[:at]
                self._finish(job, "stop")
                return True
        hold = max((len(s) for s in job.stops), default=1) - 1  # text that may still become a stop string
        ready = len(job.text) - hold
        if job.text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            ready = min(ready, len(job.text) - 1)
        if ready > job.sent:
            job.emit({"delta": job.text[job.sent : ready]})
            job.sent = ready
        if produced >= job.params.max_new_tokens:
            self._finish(job, "length")
            return True
        return False

    def _finish(self, job: Job, reason: str) -> None:
        job.finish = reason
        if len(job.text) > job.sent:
            job.emit({"delta": job.text[job.sent:]})
            job.sent = len(job.text)
