"""Prefill timing: warm-up runs, then the median of timed repeats; CUDA work is synchronised before reading
the clock. Peak memory: the device's peak allocation on GPU, the process's peak resident set on CPU."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch

from ..device import capturing, synchronize  # noqa: F401 (re-exported)


def timed(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 3) -> tuple[object, float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; returns the last result and the median
    wall time in seconds."""
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(max(1, repeats)):
        synchronize(device)
        t0 = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)
