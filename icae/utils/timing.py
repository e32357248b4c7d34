"""Wall-clock timing that waits for the accelerator, and summaries of timings."""

from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def sync_device(device: torch.device) -> None:
    """Wait for queued GPU work: without it a timer measures only the launch of asynchronous kernels."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], T]) -> tuple[T, float]:
    """``(fn(), seconds)``, the device synchronised before and after."""
    sync_device(device)
    start = time.perf_counter()
    out = fn()
    sync_device(device)
    return out, time.perf_counter() - start


def time_stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "total": 0.0}
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "total": float(sum(values))}
