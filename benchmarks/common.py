"""Shared by the benchmark scripts: the machine description every output starts with, interleaved timing, and
the JSON record (``--save``) that the study's collect step loads into its ``benchmarks`` table.

The record format is hybridreduce.store.benchmarks'; ``machine`` is one line (CPU, cores, device, load average,
versions) so a figure is never read without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hybridreduce.store import atomic_write
from hybridreduce.store.benchmarks import make_record

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "benchmarks" / "records"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews absolute times (ratios less so)."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def retain_freed_memory(mmap_threshold_mb: int = 32, trim_threshold_mb: int = 64) -> str:
    """Keep freed tensor memory in this process instead of handing it back to the OS after every operation.

    glibc serves allocations above its (adaptive) mmap threshold with fresh ``mmap`` pages and returns the heap
    top above its trim threshold, so a CPU forward pass over an 8k-token sequence pays page faults on many of its
    multi-megabyte temporaries. Whether it does varies between runs with the allocator's history: a ReLU-squared
    over an (8240, 672) float32 tensor took 4-5 ms or 24-28 ms on this machine in back-to-back processes (`python benchmarks/mamba_cpu.py`). The
    long unreduced prefill pays most, which raised the hybrid's prefill quotients by 0.12-0.15 (RESULTS.md). Fixed
    thresholds (what PyTorch's CPU tuning guide gets from jemalloc or tcmalloc) make every variant run with warm
    memory. Returns what was set, for the output's first line;
    elsewhere than glibc nothing is changed.
    """
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold_mb << 20)
              and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold_mb << 20))
    except (OSError, AttributeError, TypeError):
        ok = False
    if not ok:
        return "system malloc (not glibc: thresholds unchanged)"
    return f"glibc malloc, mmap threshold {mmap_threshold_mb} MB, trim threshold {trim_threshold_mb} MB"


def machine(device: str | None = None, threads: int | None = None, allocator: str | None = None) -> str:
    """One line describing where the numbers come from."""
    parts = [f"{cpu_name()}, {os.cpu_count()} cores"]
    if threads is not None:
        parts.append(f"{threads} torch thread(s)")
    if allocator:
        parts.append(allocator)
    if device:
        parts.append(f"device {device}")
    parts.append(f"load {load()} at start")
    parts.append(f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    return "; ".join(parts)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished child processes (e.g. an ffmpeg run)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def interleaved(fns: dict, repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
                ) -> tuple[dict, dict, dict]:
    """Median wall time of each of ``fns``, run in turn ``repeats`` times after ``warmup`` rounds, so a change in
    machine load hits every variant alike. Returns the median wall times, the median CPU times (:func:`cpu_seconds`:
    what the work costs however busy the machine is) and each variant's last result."""
    wall: dict = {k: [] for k in fns}
    cpu: dict = {k: [] for k in fns}
    last: dict = {}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            t0, c0 = time.perf_counter(), cpu_seconds()
            last[name] = fn()
            sync()
            if r >= warmup:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(cpu_seconds() - c0)
    median = statistics.median
    return {k: median(v) for k, v in wall.items()}, {k: median(v) for k, v in cpu.items()}, last


def row(setting: str, metric: str, value: float, unit: str, target: float | None = None,
        higher_is_better: bool = True) -> dict:
    met = None if target is None else (value >= target if higher_is_better else value <= target)
    return {"setting": setting, "metric": metric, "value": float(value), "unit": unit, "target": target, "met": met}


def save(benchmark: str, machine_line: str, rows: list[dict], out_dir: Path = RECORDS) -> Path:
    """Write ``benchmarks/records/<benchmark>.json`` (the figures the study's report shows)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{benchmark}.json"
    command = " ".join(["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    with atomic_write(str(path)) as f:
        f.write(json.dumps(make_record(benchmark, machine_line, command, rows), indent=1) + "\n")
    return path


def verdict(met: bool | None) -> str:
    return "" if met is None else ("  target met" if met else "  TARGET MISSED")
