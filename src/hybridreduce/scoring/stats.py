"""Accuracy with uncertainty: percentile-bootstrap 95% CIs over samples, and paired CIs of accuracy differences
between two settings answered on the same samples (only samples that both answered count).

Every resample uses a fixed seed, so the same scores always give the same intervals. The report's "near" and
"better than" verdicts read these intervals (see :mod:`hybridreduce.report.claims`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def bootstrap_ci(values: np.ndarray, key: str = "", n_boot: int = N_BOOT) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean of ``values`` ``(n,)`` (resampling samples); ``key`` seeds it."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    idx = _rng(key).integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_difference(a: dict[str, float], b: dict[str, float], key: str = "") -> tuple[float, float, float, int]:
    """Mean of ``a[s] - b[s]`` over the samples ``s`` both scored, its 95% paired-bootstrap CI, and the number of
    such samples. ``a``, ``b``: sample id -> score."""
    common = sorted(set(a) & set(b))
    if not common:
        return float("nan"), float("nan"), float("nan"), 0
    diff = np.array([a[s] - b[s] for s in common])
    lo, hi = bootstrap_ci(diff, key)
    return float(diff.mean()), lo, hi, len(common)


def accuracy_rows(sample_scores: Iterable[dict], chance: dict[str, float]) -> list[dict]:
    """One row of the ``accuracy`` table per (setting, task) from ``sample_scores`` rows (metric ``accuracy``):
    the mean, its CI, chance level (mean of 1 / options over the samples, from ``chance``: sample id -> 1 /
    options), and paired differences to the same model's full-token run (``none`` / ``none`` / 1.0) and to
    ``hybrid_progressive`` at the same pre-LLM method and budget."""
    scores: dict[tuple, dict[str, float]] = {}
    for r in sample_scores:
        if r["metric"] != "accuracy" or r["score"] is None:
            continue
        key = (r["model"], r["pre_method"], r["method"], float(r["budget"]), r["task"])
        scores.setdefault(key, {})[r["sample_id"]] = float(r["score"])
    rows = []
    for key, by_sample in sorted(scores.items()):
        model, pre, method, budget, task = key
        tag = "/".join(map(str, key))
        values = np.array(list(by_sample.values()))
        lo, hi = bootstrap_ci(values, tag)
        full = scores.get((model, "none", "none", 1.0, task))
        ours = scores.get((model, pre, "hybrid_progressive", budget, task))
        d_full = paired_difference(by_sample, full, tag + ":full") if full is not None else None
        d_ours = paired_difference(by_sample, ours, tag + ":ours") if ours is not None and ours is not by_sample \
            else None
        known = [chance[s] for s in by_sample if s in chance]
        rows.append({
            "model": model, "pre_method": pre, "method": method, "budget": budget, "task": task,
            "samples": len(values), "accuracy": float(values.mean()), "ci_low": lo, "ci_high": hi,
            "chance": float(np.mean(known)) if known else None,
            **_difference("vs_full", d_full), **_difference("vs_ours", d_ours),
        })
    return rows


def _difference(prefix: str, d: tuple | None) -> dict:
    if d is None or d[3] == 0:  # no comparison, or no sample answered by both
        return {prefix: None, f"{prefix}_low": None, f"{prefix}_high": None}
    return {prefix: d[0], f"{prefix}_low": d[1], f"{prefix}_high": d[2]}
