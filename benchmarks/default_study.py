"""Time the default study: a cold run (training included) and a no-op rerun, against the targets of issue 4.

    python benchmarks/default_study.py [--cores N] [--keep DIR]

Runs the repository's Snakefile in a fresh temporary working directory (so nothing is reused from an earlier run)
and prints wall times and their ratios to the targets (15 min cold, 5 s no-op), plus the trained models'
validation and test accuracy read from the study's DuckDB file.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLD_TARGET_S, NOOP_TARGET_S = 15 * 60, 5.0


def snakemake(workdir: Path, cores: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", cores, "--quiet", "all"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=workdir)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="all")
    parser.add_argument("--keep", help="run in this (new or empty) folder and keep it, instead of a temp folder")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="hybridreduce-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; workdir {workdir}")
    cold = snakemake(workdir, args.cores)
    noop = snakemake(workdir, args.cores)
    print(f"cold default study: {cold:7.1f} s  = {cold / COLD_TARGET_S:.2f} x the 15 min target")
    print(f"no-op rerun:        {noop:7.2f} s  = {noop / NOOP_TARGET_S:.2f} x the 5 s target")

    import duckdb

    with duckdb.connect(str(workdir / "results" / "default" / "study.duckdb"), read_only=True) as con:
        rows = con.execute("""
            SELECT model, split, accuracy, elapsed_s FROM training WHERE split = 'val' AND qtype = 'all'
            UNION ALL
            SELECT model, 'test', value, NULL FROM scores
            WHERE pre_method = 'none' AND method = 'none' AND task = 'hybridreduce_local' AND metric = 'accuracy'
            ORDER BY model, split DESC""").fetchall()
        by_type = con.execute("""
            SELECT model, qtype, avg(score), count(*) FROM sample_scores JOIN samples USING (sample_id)
            WHERE pre_method = 'none' AND method = 'none' AND metric = 'accuracy' GROUP BY ALL ORDER BY ALL""").fetchall()
    for model, split, acc, elapsed in rows:
        took = f" (trained in {elapsed:.0f} s)" if elapsed is not None else ""
        print(f"{model:>20} {split:>4} accuracy {acc:.3f}{took}  (chance 0.25)")
    for model, qtype, acc, n in by_type:
        print(f"{model:>20} test {qtype:>8} accuracy {acc:.3f} ({n} videos)")

if __name__ == "__main__":
    main()
