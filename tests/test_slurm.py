"""SLURM execution (workflow/profiles/slurm, snakemake-executor-plugin-slurm): a small study through a real
one-node SLURM cluster on this machine (tests/slurm/cluster.sh) gives the same database as a local run; the
profile's dry run of the paper study asks for GPUs on the GPU rules only."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, fake_task_overlay, run_snakemake, tiny_config
from test_reliability import table_rows

CLUSTER = REPO / "tests/slurm/cluster.sh"
PROFILE = REPO / "workflow/profiles/slurm"
SITE = REPO / "tests/slurm/site.yaml"


def small_config() -> dict:
    """tiny_config cut down to one model and two inference settings: 4 videos, 2 pre-LLM methods, the hybrid
    (4 training steps) without reduction and with the paper's method at budget 0.5, probing. Job sizes fit the
    one-node test cluster."""
    cfg = tiny_config("slurm")
    cfg["models"] = {"tiny_hybrid": cfg["models"]["tiny_hybrid"]}
    cfg["inference"]["models"] = ["tiny_hybrid"]
    small = {"mem_mb": 500, "runtime": 10}
    cfg["resources"] = {"synthesize_sample": small, "extract_frames": small, "encode_vision": small,
                        "reduce_redundancy": small,
                        "build_model": {"mem_mb": 1000, "runtime": 10}, "infer": {"mem_mb": 1500, "runtime": 10},
                        "probe": {"mem_mb": 1500, "runtime": 10}}
    return cfg


def dry_run_jobs(output: str) -> list[dict]:
    """Every job block of a dry run's output: rule name and resources."""
    jobs = []
    for block in re.split(r"\n\s*(?=rule \w+:\n)", output):
        m = re.match(r"rule (\w+):", block)
        if not m:
            continue
        res = re.search(r"^\s*resources: (.*)$", block, re.MULTILINE)
        jobs.append({"rule": m.group(1),
                     "resources": dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}})
    return jobs


def profile_dry_run(workdir: Path, *args: str) -> str:
    """``snakemake --profile workflow/profiles/slurm -n`` (no --cores: the profile's own cap of 8 per job)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile", str(PROFILE), "-n", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_slurm_profile_dry_run_asks_for_gpus_on_the_gpu_rules_only(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    # no cluster and no checkpoints needed: a dry run only plans
    overlay, docs = fake_task_overlay(tmp_path)  # the real tasks' documents: one videomme copy, offline
    out = profile_dry_run(tmp_path, "--configfile", str(REPO / "config/paper.yaml"), str(overlay))
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    jobs = dry_run_jobs(out)
    # the rules that run a model on cuda: infer, and each model's encoding of every video
    on_model = [j for j in jobs if j["rule"] in ("infer", "encode_vision")]
    assert {j["rule"] for j in on_model} == {"infer", "encode_vision"}
    for job in on_model:  # device: cuda; CPUs from inference.threads, memory and time from the resources block
        assert job["resources"]["gpu"] == "1", job
        assert job["resources"]["cpus_per_task"] == str(paper["inference"]["threads"]), job
        assert job["resources"]["mem_mb"] == str(paper["resources"][job["rule"]]["mem_mb"]), job
        assert job["resources"]["runtime"] == str(paper["resources"][job["rule"]]["runtime"]), job
    others = [j for j in jobs if j["rule"] not in ("infer", "encode_vision")]
    assert {"synthesize_sample", "task_sample", "extract_frames", "reduce_redundancy"} <= {j["rule"] for j in others}
    assert all(j["resources"].get("gpu", "0") == "0" for j in others)
    # small jobs are bundled: the videos in groups of 16, the redundancy jobs (model x method) in groups of 8
    groups = -(-(paper["dataset"]["synthetic"]["num_videos"] + len(docs)) // 16)
    redundancy = -(-len(paper["inference"]["models"]) * len(paper["redundancy"]["methods"]) // 8)
    assert out.count("Group job frames") == groups and out.count("Group job redundancy") == redundancy

    # the default study runs on CPUs: no GPU anywhere, not even for infer
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    jobs = dry_run_jobs(profile_dry_run(cpu))
    assert {j["rule"] for j in jobs} >= {"infer", "build_model", "probe", "extract_frames"}
    assert all(j["resources"].get("gpu", "0") == "0" for j in jobs)
    assert {j["resources"]["mem_mb"] for j in jobs if j["rule"] == "infer"} == {
        str(default["resources"]["infer"]["mem_mb"])}


@pytest.fixture(scope="module")
def slurm_cluster():
    """A real one-node SLURM cluster on localhost for the module; stopped (by PID) afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (tests/slurm/cluster.sh installs SLURM and starts daemons)")
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and apt-get is unavailable to install it")
    pytest.importorskip("snakemake_executor_plugin_slurm")
    proc = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}"
    started_here = "already running" not in proc.stderr
    try:
        yield
    finally:
        if started_here:
            subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, text=True, timeout=120, check=False)


def start_on_slurm(workdir: Path, *args: str) -> subprocess.Popen:
    """The README's command: Snakemake on this machine (the "login node") submitting every job to SLURM through
    the workflow profile and the test cluster's site profile; output in ``workdir/snakemake.out``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile", str(PROFILE),
           "--profile", str(SITE), "--configfile", "config.yaml", *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with open(workdir / "snakemake.out", "w") as out:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish(proc: subprocess.Popen, workdir: Path, timeout: int) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # Snakemake cancels its SLURM jobs on SIGINT
        proc.wait(timeout=60)
        raise AssertionError(f"snakemake on SLURM did not finish in {timeout} s:\n"
                             f"{(workdir / 'snakemake.out').read_text()[-6000:]}")
    out = (workdir / "snakemake.out").read_text()
    assert proc.returncode == 0, out[-8000:]
    return out


def test_small_study_on_slurm_equals_the_local_run(slurm_cluster, tmp_path):
    """Submit, lose the login-node Snakemake while jobs are queued, resume as the README says, compare."""
    config = small_config()
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    cluster.mkdir()
    t0 = time.time()
    run_snakemake(local, config)
    t1 = time.time()

    (cluster / "config.yaml").write_text(yaml.safe_dump(config))
    proc = start_on_slurm(cluster)
    out = cluster / "snakemake.out"
    deadline = time.time() + 300
    while "/rule_infer/" not in out.read_text() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, out.read_text()[-6000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the Snakemake process dies; its SLURM jobs do not
    proc.wait()
    run_id = re.search(r"SLURM run ID: (\S+)", out.read_text()).group(1)
    queued = subprocess.run(["squeue", "-h", "--name", run_id, "-o", "%i %k"], capture_output=True, text=True,
                            check=True).stdout
    assert "rule_infer" in queued, queued
    # docs/cluster.md, "Run it on SLURM": cancel the dead run's jobs, unlock, run the same command again
    subprocess.run(["scancel", "--name", run_id], check=True)
    deadline = time.time() + 60
    while subprocess.run(["squeue", "-h", "--name", run_id], capture_output=True, text=True, check=True).stdout.strip():
        assert time.time() < deadline, "cancelled jobs still in squeue after 60 s"
        time.sleep(0.5)
    finish(start_on_slurm(cluster, "--unlock"), cluster, 120)
    resumed = finish(start_on_slurm(cluster), cluster, 600)
    t2 = time.time()
    print(f"local run {t1 - t0:.0f} s, SLURM run (killed and resumed) {t2 - t1:.0f} s")

    # the jobs went through SLURM, the small ones bundled into group jobs; collect, report ran on this machine
    logs = cluster / ".snakemake/slurm_logs"
    names = {p.name for p in logs.iterdir()}
    assert {"rule_build_model", "rule_infer", "rule_probe"} <= names, names
    assert any(n.startswith("group_frames") for n in names) and any(n.startswith("group_redundancy") for n in names)
    assert len(list(logs.glob("group_frames*/**/*.log"))) == 1  # all 4 videos, synthesized and decoded in one job
    assert "has been submitted with SLURM jobid" in resumed and "localrule collect" in resumed
    assert (cluster / "reports/slurm/index.html").is_file()

    first = table_rows(local / "results/slurm/study.duckdb")
    second = table_rows(cluster / "results/slurm/study.duckdb")
    assert first.keys() == second.keys()
    for table in first:
        assert first[table] == second[table], table
    assert first["inference"] and first["probe_retention"] and first["visual_reduction"]

    # nothing changed: the same command submits nothing
    assert "Nothing to be done" in finish(start_on_slurm(cluster), cluster, 120)
