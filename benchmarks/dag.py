"""Workflow (DAG) overhead: wall time of a no-op rerun of the default study and of ``snakemake -n`` (dry run) on the
paper config.

    python benchmarks/dag.py --workdir DIR [--save] [--repeats 3]

``DIR`` is a folder where the default study has already run to the end, e.g. the one left by
``python benchmarks/default_study.py --keep DIR``. Without ``--workdir`` the default study is first run cold in a
temporary folder (about 20 minutes on 2 cores); with it, one untimed rerun first brings the folder up to date with
this checkout (new benchmark records, for one, re-run collect and report). A timed no-op rerun must find nothing
to do (checked). The paper dry run plans config/paper.yaml's study (checkpoints are not needed for ``-n``) in an
empty temporary folder, on the local task only (the real tasks' datasets are not on this machine). Each time is the median of ``--repeats`` runs; target: no-op rerun <= 5 s. ``--save``
writes benchmarks/records/dag.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, load, machine, row, save, verdict

NOOP_TARGET_S = 5.0


def snakemake(workdir: Path, *args: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "all", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout + proc.stderr


def median_time(repeats: int, workdir: Path, *args: str, check=lambda out: None) -> float:
    times = []
    for _ in range(repeats):
        elapsed, out = snakemake(workdir, *args)
        check(out)
        times.append(elapsed)
    return statistics.median(times)


def nothing_to_do(out: str) -> None:
    if "Nothing to be done" not in out:
        raise SystemExit(f"the rerun was not a no-op (did the study finish in this folder?):\n{out[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="folder where the default study already ran")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dry-run-only", action="store_true", help="time only snakemake -n on the paper config")
    parser.add_argument("--save", action="store_true", help="write benchmarks/records/dag.json")
    args = parser.parse_args()
    line = machine()
    print(line)
    workdir = args.workdir
    noop = None
    if args.dry_run_only:
        pass
    elif workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="hybridreduce-dag-"))
        print(f"running the default study cold in {workdir} first ...")
        cold, _ = snakemake(workdir, "all")
        print(f"cold default study: {cold:.0f} s")
    else:
        # Bring the folder up to date with this checkout first (e.g. newly saved benchmark records re-run collect
        # and report); the timed reruns after it must then have nothing to do.
        catch_up, _ = snakemake(workdir.resolve(), "all")
        print(f"first rerun (brings {workdir} up to date with this checkout): {catch_up:.1f} s")
    if not args.dry_run_only:
        noop = median_time(args.repeats, workdir.resolve(), "all", check=nothing_to_do)
    with tempfile.TemporaryDirectory(prefix="hybridreduce-paper-") as empty:
        # The real tasks' documents are read from scoring.hf_home while the DAG is built (their datasets must be
        # downloaded there): without them the dry run plans the local task's samples only.
        overlay = Path(empty) / "local-task.yaml"
        overlay.write_text("scoring: {tasks: [hybridreduce_local]}\n")
        paper = median_time(args.repeats, Path(empty), "-n", "--configfile", str(REPO / "config" / "paper.yaml"),
                            str(overlay))
    rows = [row("config/paper.yaml", "dry_run_s", paper, "s")]
    if noop is not None:
        print(f"no-op rerun of the default study:  {noop:6.2f} s = {noop / NOOP_TARGET_S:.2f} x the 5 s target"
              f"{verdict(noop <= NOOP_TARGET_S)}")
        rows.insert(0, row("default study", "noop_rerun_s", noop, "s", NOOP_TARGET_S, higher_is_better=False))
    print(f"snakemake -n on config/paper.yaml (local task only): {paper:6.2f} s")
    print(f"\nload average at end: {load()}")
    if args.save:
        print("saved", save("dag", line, rows))


if __name__ == "__main__":
    main()
