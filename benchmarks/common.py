"""Shared by the benchmark scripts: the machine description every output starts with, interleaved timing, and
the JSON record (``--save``) that the study's collect step loads into its ``benchmarks`` table.

The record format is hybridreduce.store.benchmarks'; ``machine`` is one line (CPU, cores, device, load average,
versions) so a figure is never read without it.
"""

from __future__ import annotations

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


def machine(device: str | None = None, threads: int | None = None) -> str:
    """One line describing where the numbers come from."""
    parts = [f"{cpu_name()}, {os.cpu_count()} cores"]
    if threads is not None:
        parts.append(f"{threads} torch thread(s)")
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
