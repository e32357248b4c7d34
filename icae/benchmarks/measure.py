"""Measuring one run: peak memory growth (CUDA allocator peak, or sampled process RSS on CPU) and exact KV-cache
sizes."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import torch

from icae.utils.timing import sync_device


class PeakMemory:
    """Peak memory growth in MiB during a block: CUDA allocator peak on GPU, sampled process RSS on CPU."""

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device, self.interval, self.peak_mib = device, interval, 0.0

    @contextmanager
    def measure(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
            return
        _trim_heap()  # give freed pages back first, or RSS would not move for memory the allocator kept
        with peak_rss(interval=self.interval) as rss:
            yield self
        self.peak_mib = (rss["peak"] - rss["start"]) / 2**20


@contextmanager
def peak_rss(pid: int | None = None, interval: float = 0.002):
    """Sample the resident memory of process ``pid`` (this one by default) every ``interval`` seconds while the block
    runs; yields a dict with ``start`` (bytes at entry) and, once the block is done, ``peak`` (bytes)."""
    import psutil

    proc = psutil.Process(pid)
    rss = {"start": proc.memory_info().rss}
    rss["peak"] = rss["start"]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss["peak"] = max(rss["peak"], proc.memory_info().rss)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield rss
    finally:
        stop.set()
        thread.join()
        rss["peak"] = max(rss["peak"], proc.memory_info().rss)


def _trim_heap() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS growth is then an underestimate after the first run
        pass


def kv_cache_mib(model, positions: int, batch: int) -> float:
    """Exact size of the decoder's KV cache for ``positions`` per row: 2 x layers x kv heads x head dim x dtype."""
    cfg = model.base_config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_position = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * model.dtype.itemsize
    return per_position * positions * batch / 2**20


def measured(device, fn):
    """(seconds, peak MiB, result) of ``fn()``."""
    meter = PeakMemory(device)
    with meter.measure():
        sync_device(device)
        start = time.perf_counter()
        result = fn()
        sync_device(device)
        seconds = time.perf_counter() - start
    return seconds, meter.peak_mib, result


def training_step(model, contexts) -> tuple[float, float, object]:
    """(seconds, peak MiB, output) of one AE training step (forward, backward, optimizer) on ``contexts``, after one
    warm-up step (allocator, kernels); the model is left in evaluation mode."""
    params = [p for p in model.parameters() if p.requires_grad] or [model.memory_embeddings.requires_grad_(True)]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step():
        out = model(contexts, mode="ae")
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out

    step()
    result = measured(model.device, step)
    model.eval()
    return result
