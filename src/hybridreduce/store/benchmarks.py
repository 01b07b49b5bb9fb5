"""Benchmark records: the figures ``benchmarks/*.py --save`` write to ``benchmarks/records/<name>.json`` (the
collect rule in workflow/rules/store.smk takes every such file as an input).

A record is ``{"benchmark", "machine", "measured_at", "command", "rows": [{setting, metric, value, unit, target,
met}]}``. The collect step takes them beside the job result files and loads them into the ``benchmarks`` table, so
the report's Methods section shows how fast this implementation is and on which machine that was measured.
"""

from __future__ import annotations

import datetime as dt

RECORD_KEYS = ("benchmark", "machine", "measured_at", "command", "rows")
ROW_KEYS = ("setting", "metric", "value", "unit", "target", "met")


def make_record(benchmark: str, machine: str, command: str, rows: list[dict]) -> dict:
    """A record as the benchmark scripts save it, stamped with the current time."""
    for r in rows:
        if sorted(r) != sorted(ROW_KEYS):
            raise ValueError(f"benchmark row has keys {sorted(r)}, expected {sorted(ROW_KEYS)}")
    return {"benchmark": benchmark, "machine": machine,
            "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
            "rows": rows}


def is_benchmark_record(data: object) -> bool:
    return isinstance(data, dict) and all(k in data for k in RECORD_KEYS)


def benchmark_rows(data: dict) -> list[dict]:
    """Rows of the ``benchmarks`` table for one record."""
    shared = {k: data[k] for k in RECORD_KEYS if k != "rows"}
    return [{**shared, **r} for r in data["rows"]]
