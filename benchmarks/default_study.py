"""Time the default study: a cold run (from the shipped checkpoints; the light finetuning included) and a no-op
rerun, against the targets of issue 20 (10 min cold, 5 s no-op).

    python benchmarks/default_study.py [--cores N] [--keep DIR] [--save]

Runs the repository's Snakefile in a fresh temporary working directory (so nothing is reused from an earlier run)
and prints wall times and their ratios to the targets (10 min cold, 5 s no-op), plus the models' validation
accuracy (from their provenance) and test accuracy read from the study's DuckDB file. ``--save`` writes them to
benchmarks/records/default_study.json, which the next study's report shows (Methods) with the other benchmarks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine, row, save

COLD_TARGET_S, NOOP_TARGET_S = 10 * 60, 5.0


def snakemake(workdir: Path, cores: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", cores, "--quiet", "all"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=workdir)
    return time.perf_counter() - start


def accuracies(database: Path) -> tuple[list[tuple], list[tuple]]:
    """``(model, split, accuracy, training seconds, step)`` per model for val (every training stage) and test, and
    ``(model, qtype, test accuracy, videos)`` per question type, at full tokens."""
    import duckdb

    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute("""
            SELECT * FROM (
                SELECT m.model, 'val' AS split, CAST(m.val_accuracy ->> 'all' AS DOUBLE) AS accuracy,
                       max(t.elapsed_s) AS elapsed_s, m.steps AS step
                FROM models m LEFT JOIN training t USING (model) WHERE m.val_accuracy IS NOT NULL GROUP BY ALL
                UNION ALL
                SELECT model, 'test', value, NULL, NULL FROM scores
                WHERE pre_method = 'none' AND method = 'none' AND task = 'hybridreduce_local' AND metric = 'accuracy')
            ORDER BY model, split DESC, step""").fetchall()
        by_type = con.execute("""
            SELECT model, qtype, avg(score), count(*) FROM sample_scores JOIN samples USING (sample_id)
            WHERE pre_method = 'none' AND method = 'none' AND metric = 'accuracy' GROUP BY ALL ORDER BY ALL""").fetchall()
    return rows, by_type


def record_rows(cold: float, noop: float, rows: list[tuple], by_type: list[tuple]) -> list[dict]:
    """The figures of one run as benchmark record rows (times against the targets, accuracies)."""
    out = [row("default study", "cold_run_s", cold, "s", COLD_TARGET_S, higher_is_better=False),
           row("default study", "noop_rerun_s", noop, "s", NOOP_TARGET_S, higher_is_better=False)]
    out += [row(f"{model} {split}" + (f" step {step}" if step else ""), "accuracy", acc, "fraction")
            for model, split, acc, _, step in rows]
    out += [row(f"{model} test {qtype}", "accuracy", acc, "fraction") for model, qtype, acc, _ in by_type]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="all")
    parser.add_argument("--keep", help="run in this (new or empty) folder and keep it, instead of a temp folder")
    parser.add_argument("--save", action="store_true", help="write benchmarks/records/default_study.json")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="hybridreduce-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    line = machine()
    print(f"{line}; workdir {workdir}")
    cold = snakemake(workdir, args.cores)
    noop = snakemake(workdir, args.cores)
    print(f"cold default study: {cold:7.1f} s  = {cold / COLD_TARGET_S:.2f} x the 10 min target")
    print(f"no-op rerun:        {noop:7.2f} s  = {noop / NOOP_TARGET_S:.2f} x the 5 s target")

    rows, by_type = accuracies(workdir / "results" / "default" / "study.duckdb")
    for model, split, acc, elapsed, _ in rows:
        took = f" (trained by the study in {elapsed:.0f} s)" if elapsed is not None else ""
        print(f"{model:>20} {split:>4} accuracy {acc:.3f}{took}  (chance 0.25)")
    for model, qtype, acc, n in by_type:
        print(f"{model:>20} test {qtype:>8} accuracy {acc:.3f} ({n} videos)")
    if args.save:
        print("saved", save("default_study", line, record_rows(cold, noop, rows, by_type)))


if __name__ == "__main__":
    main()
