"""Where one inference setting's time goes: cProfile over one lmms-eval run of the study's own task.

    python benchmarks/profile_setting.py STUDY_DIR [--model tiny_hybrid] [--pre none] [--method hybrid_progressive]
        [--budget 0.25] [--top 30]

STUDY_DIR is a folder where the default study has run (e.g. ``python benchmarks/default_study.py --keep DIR``).
The script runs the setting ``none`` at budget 1.0 first (loading lmms-eval, the model and the task, and filling
the per-process caches as an infer job's first setting does), then profiles the requested setting, as the later
settings of one infer job run, and prints both wall times and the profile sorted by cumulative time. Its outputs
go to a temporary folder; the study is not changed.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--study", default="default")
    parser.add_argument("--model", default="tiny_hybrid")
    parser.add_argument("--pre", default="none")
    parser.add_argument("--method", default="hybrid_progressive")
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    os.chdir(args.study_dir)  # the setting's paths are relative to the study's working directory
    results = Path("results") / args.study
    runs = results / "lmms_eval" / "runs" / args.model / args.pre
    from dataclasses import replace

    from hybridreduce.setting import Setting

    setting = Setting.from_json(next(runs.glob("*/*/setting.json")).read_text())
    out = Path(tempfile.mkdtemp(prefix="hybridreduce-profile-"))
    from hybridreduce.lmms.run import offline_vars

    os.environ.update(offline_vars(None, str(out / "datasets_cache")))
    import torch

    from hybridreduce import jobs
    from hybridreduce.store import JobResult

    torch.set_num_threads(setting.run.threads or 1)

    def run(method: str, budget: float) -> float:
        t0 = time.perf_counter()
        jobs._infer_setting(JobResult(rule="infer", params={}), replace(setting, method=method, budget=budget),
                            {"tasks": ["hybridreduce_local"]}, str(results / "lmms_eval" / "task"),
                            str(out / f"{method}{budget}"))
        return time.perf_counter() - t0

    print(f"first setting (none, 1.0), loading included: {run('none', 1.0):.2f} s")
    profile = cProfile.Profile()
    profile.enable()
    seconds = run(args.method, args.budget)
    profile.disable()
    print(f"setting ({args.method}, {args.budget:g}) as a later setting of the job: {seconds:.2f} s")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
