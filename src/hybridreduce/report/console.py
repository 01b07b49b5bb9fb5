"""What a run prints when it ends (the Snakefile's ``onsuccess`` / ``onerror``): samples scored and failed by kind,
where the report is, and after a failure or an interruption the exact command that resumes the study."""

from __future__ import annotations

import json
import os
import shlex


def success_message(study: str, report_dir: str = "reports") -> str:
    """Samples scored and failed (by kind) and the report's path, from ``<report_dir>/<study>/summary.json``."""
    path = os.path.join(report_dir, study, "summary.json")
    if not os.path.exists(path):
        return f"study {study}: done (no report in this run's targets)"
    with open(path) as f:
        s = json.load(f)
    kinds = s.get("failure_kinds") or {}
    failed = ", ".join(f"{n} {kind}" for kind, n in kinds.items() if kind != "infeasible_schedule")
    lines = [f"study {study}: {s['samples'] - s.get('failed_samples', 0)} of {s['samples']} samples scored"
             + (f"; {s['failed_samples']} failed ({failed}): see the report's Failures section" if failed else ""),
             f"report: {os.path.join(report_dir, study, 'index.html')}"]
    if "infeasible_schedule" in kinds:
        lines.append("some settings were not run: budgets their schedules cannot reach (report, Failures)")
    lines += [f"claim {c['id']}: {c['verdict']}" for c in s.get("claims", [])]
    return "\n".join(lines)


def resume_command(configfiles: list[str], cores: str = "all") -> str:
    """The command that resumes an interrupted or failed run of the same study (``configfiles``: those given with
    --configfile, not the embedded default), keeping finished jobs."""
    args = "".join(f" --configfile {shlex.quote(os.path.relpath(f))}" for f in configfiles)
    return f"snakemake --cores {cores}{args} --rerun-incomplete"


def error_message(configfiles: list[str]) -> str:
    return ("the run stopped before the end; finished jobs are kept. The failing job's log is named above. To "
            f"resume: {resume_command(configfiles)} (if Snakemake says the directory is locked, because a run was "
            "killed, run the same command with --unlock first)")
