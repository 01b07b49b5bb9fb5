"""Per-job result files: ``{"meta": {...}, "tables": {table: [row, ...]}}`` written atomically.

A job's result file is its only contribution to the DuckDB file, so parallel jobs never write one database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import socket
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from ..files import atomic_write
from .schema import TABLES

VERSIONED = ("hybridreduce", "torch", "transformers", "av", "numpy", "duckdb", "snakemake", "lmms-eval")


def canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class JobResult:
    """Rows a job contributes, plus provenance. Use :meth:`write` once at the end of the job."""

    rule: str
    params: dict
    tables: dict[str, list[dict]] = field(default_factory=dict)
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    def add(self, table: str, *rows: dict) -> None:
        if table not in TABLES:
            raise KeyError(f"unknown table '{table}' (known: {', '.join(TABLES)})")
        expected = [c for c, _, _ in TABLES[table]]
        for row in rows:
            if sorted(row) != sorted(expected):
                raise ValueError(f"row for '{table}' has columns {sorted(row)}, expected {sorted(expected)}")
        self.tables.setdefault(table, []).extend(rows)

    def write(self, path: str) -> None:
        finished = dt.datetime.now(dt.timezone.utc)
        meta = {
            "rule": self.rule,
            "started_at": self.started_at.isoformat(),
            "finished_at": finished.isoformat(),
            "duration_s": (finished - self.started_at).total_seconds(),
            "host": socket.gethostname(),
            "params_hash": canonical_hash(self.params),
            "versions": package_versions(),
        }
        with atomic_write(path) as f:
            json.dump({"meta": meta, "tables": self.tables}, f, default=_json_default)


def read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable result file ({e})") from None


def check_result(path: str, data: Any) -> dict:
    if not isinstance(data, dict) or "meta" not in data or "tables" not in data:
        raise ValueError(f"{path}: not a result file (expected keys 'meta' and 'tables')")
    return data


def read_result(path: str) -> dict:
    return check_result(path, read_json(path))
