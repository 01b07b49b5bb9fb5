"""Reliability guarantees (README, "Reliability"): bad config rejected before any job, interruption-safe resume,
deterministic results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from conftest import REPO, run_snakemake, tiny_config

from hybridreduce.store import TABLES

# Columns that measure time; everything else must be bit-identical between runs of one config and seed.
TIMING = {"latency": None, "runs": None, "training": {"elapsed_s"}, "videos": {"decode_s"},
          "visual_reduction": {"time_ms"}}


def table_rows(db: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without timing columns."""
    out = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for table, cols in TABLES.items():
            if table in TIMING and TIMING[table] is None:
                continue
            names = ", ".join(f'"{c}"' for c, _, _ in cols if c not in (TIMING.get(table) or set()))
            out[table] = con.execute(f'SELECT {names} FROM "{table}" ORDER BY ALL').fetchall()
    return out


def _bad(key: str):
    cfg = tiny_config("bad")
    if key == "method":
        cfg["inference"]["methods"] = ["none", "fastvv"]
    elif key == "budget_high":
        cfg["inference"]["budgets"] = [1.0, 1.5]
    elif key == "budget_zero":
        cfg["inference"]["budgets"] = [1.0, 0.0]
    elif key == "negative_q":
        cfg["redundancy"]["q"] = [-0.25]
    elif key == "undefined_model":
        cfg["inference"]["models"] = ["tiny_hybrid", "tiny_hybird"]
    elif key == "model_path":
        cfg["models"]["tiny_transformer"]["path"] = "checkpoints/nowhere"
    elif key == "empty_dataset":
        cfg["dataset"] = {"source": "manifest", "manifest": "empty.jsonl"}
    return cfg


@pytest.mark.parametrize("key, message", [
    ("method", "config field 'inference.methods[1]': 'fastvv' is not allowed; expected one of ['none', "),
    ("budget_high", "config field 'inference.budgets[1]': 1.5 is greater than the maximum of 1"),
    ("budget_zero", "config field 'inference.budgets[1]': 0.0 is less than or equal to the minimum of 0"),
    ("negative_q", "config field 'redundancy.q[0]': -0.25 is less than the minimum of 0"),
    ("undefined_model", "inference.models: 'tiny_hybird' is not defined under models (defined: tiny_hybrid, "),
    ("model_path", "models.tiny_transformer.path: model checkpoint 'checkpoints/nowhere' does not exist"),
    ("empty_dataset", "dataset.manifest: 'empty.jsonl' lists no samples"),
])
def test_bad_config_is_rejected_before_any_job(tmp_path, key, message):
    (tmp_path / "empty.jsonl").write_text("")
    proc = run_snakemake(tmp_path, _bad(key), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr.split(message)[0][-2000:] or "ConfigError" in proc.stderr
    assert not (tmp_path / "results/bad/logs").exists()  # no job ran


def test_two_configs_cannot_share_a_study_name(tiny_study, tmp_path):
    work = tmp_path / "study"
    work.mkdir()
    (work / "results").symlink_to(tiny_study / "results")  # the tiny study, made from config.yaml
    (work / "other.yaml").write_text(yaml.safe_dump(tiny_config()))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1",
           "--configfile", "other.yaml"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "study: 'tiny' is already the name of the study in results/tiny/, made from" in proc.stderr
    assert "other.yaml" in proc.stderr


def test_same_config_and_seed_give_identical_results(tiny_study, tmp_path):
    run_snakemake(tmp_path, tiny_config())
    first, second = table_rows(tiny_study / "results/tiny/study.duckdb"), table_rows(tmp_path / "results/tiny/study.duckdb")
    for table in first:
        assert first[table] == second[table], table
    assert "seed 0" in (tmp_path / "reports/tiny/index.html").read_text()


def _kill_when(workdir: Path, ready) -> None:
    """Start the workflow, SIGKILL its whole process group as soon as ``ready()`` holds."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
           "--configfile", "config.yaml"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the workflow ended before the kill point"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _resume(workdir: Path) -> None:
    # The README's resume command after a crash: release the stale lock, rerun what was incomplete.
    run_snakemake(workdir, None, "--configfile", "config.yaml", "--unlock")
    run_snakemake(workdir, None, "--configfile", "config.yaml", "--rerun-incomplete")


def test_sigkill_during_inference_and_collect_then_resume_gives_the_same_database(tiny_study, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    results = tmp_path / "results/tiny"
    # mid-inference: one setting's lmms-eval run has started, no inference result is complete yet
    _kill_when(tmp_path, lambda: (results / "lmms_eval/runs").exists())
    assert not list((results / "inference").rglob("*.json")) if (results / "inference").exists() else True
    _resume(tmp_path)
    assert table_rows(results / "study.duckdb") == table_rows(tiny_study / "results/tiny/study.duckdb")

    # mid-collect: the collect job has started and not yet renamed its database into place
    os.remove(results / "study.duckdb")
    (tmp_path / "reports/tiny/index.html").unlink()
    _kill_when(tmp_path, lambda: any(results.glob(".collect.*")))
    assert not (results / "study.duckdb").exists()  # a partial database is never in place
    _resume(tmp_path)
    assert table_rows(results / "study.duckdb") == table_rows(tiny_study / "results/tiny/study.duckdb")
