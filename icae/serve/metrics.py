"""Counters of the server, written in the Prometheus text format (``GET /metrics``)."""

from __future__ import annotations

import threading

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.counters = {"requests_total": 0, "request_errors_total": 0, "prompt_tokens_total": 0,
                         "completion_tokens_total": 0, "decoder_positions_total": 0, "prefilled_positions_total": 0,
                         "tokens_saved_total": 0, "slot_cache_hits_total": 0, "observations_compressed_total": 0,
                         "batches_total": 0, "batched_requests_total": 0, "cancelled_total": 0,
                         "prefix_cache_hits_total": 0, "reused_positions_total": 0, "decode_steps_total": 0,
                         "decode_rows_total": 0}
        self.queue_depth = 0
        self.latency = [0] * len(BUCKETS)
        self.latency_sum, self.latency_count = 0.0, 0

    def queued(self, change: int) -> None:
        with self._lock:
            self.queue_depth += change

    def batch(self, size: int) -> None:
        with self._lock:
            self.counters["batches_total"] += 1
            self.counters["batched_requests_total"] += size

    def step(self, rows: int) -> None:
        """One decoding step of the running batch, ``rows`` rows in it (rows / steps: the mean batch size)."""
        with self._lock:
            self.counters["decode_steps_total"] += 1
            self.counters["decode_rows_total"] += rows

    def cancelled(self) -> None:
        with self._lock:
            self.counters["cancelled_total"] += 1

    def error(self) -> None:
        with self._lock:
            self.counters["request_errors_total"] += 1

    def served(self, job) -> None:
        with self._lock:
            c, s = self.counters, job.stats
            c["requests_total"] += 1
            c["prompt_tokens_total"] += job.prompt_tokens
            c["completion_tokens_total"] += len(job.ids)
            c["decoder_positions_total"] += s["decoder_positions"]
            c["prefilled_positions_total"] += s["prefilled_positions"]
            c["tokens_saved_total"] += s["tokens_saved"]
            c["slot_cache_hits_total"] += s["slot_cache_hits"]
            c["observations_compressed_total"] += s["compressed_observations"]
            c["prefix_cache_hits_total"] += int(s.get("prefix_cache_hit", False))
            c["reused_positions_total"] += s.get("reused_positions", 0)

    def observe_latency(self, seconds: float) -> None:
        with self._lock:
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.latency[i] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def render(self) -> str:
        with self._lock:
            lines = []
            for name, value in self.counters.items():
                lines += [f"# TYPE icae_{name} counter", f"icae_{name} {value}"]
            lines += ["# TYPE icae_queue_depth gauge", f"icae_queue_depth {self.queue_depth}",
                      "# TYPE icae_request_latency_seconds histogram"]
            lines += [f'icae_request_latency_seconds_bucket{{le="{b}"}} {n}' for b, n in zip(BUCKETS, self.latency)]
            lines += [f'icae_request_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                      f"icae_request_latency_seconds_sum {self.latency_sum}",
                      f"icae_request_latency_seconds_count {self.latency_count}"]
            return "\n".join(lines) + "\n"
