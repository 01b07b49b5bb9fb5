"""Reliability guarantees (docs/reliability.md): bad config rejected before any job, interruption-safe resume,
deterministic results, out-of-memory reported and retried under a real memory limit, unreadable files recorded,
isolation (declared outputs only, no network, studies never mix)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
import yaml
from conftest import REPO, ramp_frames, run_snakemake, tiny_config

from hybridreduce.store import TABLES
from hybridreduce.video import write_video

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
    # The second run spreads inference over one job per setting instead of one per model (inference.job_per):
    # how settings are grouped into jobs must not change a single result either.
    cfg = tiny_config()
    assert cfg["inference"].get("job_per", "model") == "model"
    cfg["inference"]["job_per"] = "setting"
    run_snakemake(tmp_path, cfg)
    assert len(list((tmp_path / "results/tiny/logs/infer").rglob("*.log"))) == 4  # 2 models x 2 settings
    first, second = table_rows(tiny_study / "results/tiny/study.duckdb"), table_rows(tmp_path / "results/tiny/study.duckdb")
    for table in first:
        if table == "study":  # study, seed (the config and its hash differ in inference.job_per alone)
            first[table], second[table] = ([row[0::2][:2] for row in t] for t in (first[table], second[table]))
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



# --- One small study run in isolation: out of memory, unreadable video, declared outputs, no network, two studies ---
#
# The study "iso" runs in a copy of the tiny study's folder (a second study in the same working directory)
#   - without privileges (as root: every capability dropped), so file permissions apply;
#   - in a new network namespace: no interface but a loopback that is down, i.e. no network at all;
#   - with a clean environment: PATH, and HOME and TMPDIR of its own (no HF_* variables: the workflow sets them);
#   - with resources.enforce_mem_mb and `--retries 1`: the encode_vision job's first attempt is held to ISO_MEM_MB,
#     too little for its frames, the retry to twice that.
# Its manifest has one good video and one that no one may read (mode 000).

ISO_FRAMES = {"sampling": "uniform", "num_frames": 12, "size": [2048, 2048]}
# Measured (VmData, what RLIMIT_DATA counts; /tmp/memprobe.py-style, in one process): the encode_vision job holds
# ~1.2 GB with torch, transformers, the model and one video's 12 frames of 2048x2048 read, and ~2.35 GB at its peak,
# converting them to float and resizing them for the vision encoder. The first attempt's 1800 MB fails while
# encoding, ~550 MB from either side; the retry's 3600 MB is plenty. (The infer jobs no longer encode.)
ISO_MEM_MB = 1800


def _iso_config() -> dict:
    cfg = tiny_config("iso")
    cfg["dataset"] = {"source": "manifest", "manifest": "manifest.jsonl"}
    cfg["frames"] = ISO_FRAMES
    cfg["redundancy"] = {"methods": ["uniform"], "q": [0.5]}
    cfg["models"] = {"tiny_transformer": cfg["models"]["tiny_transformer"]}  # untrained: built in a second
    cfg["probing"] = {"enabled": False}
    cfg["inference"] = {"models": ["tiny_transformer"], "pre_llm": ["none"], "methods": ["none"], "budgets": [1.0],
                        "warmup": 0, "repeats": 1}
    big = {"mem_mb": 8000, "runtime": 10}
    cfg["resources"] = {"enforce_mem_mb": True, "encode_vision": {"mem_mb": ISO_MEM_MB, "runtime": 10},
                        **{rule: big for rule in ("manifest_sample", "extract_frames", "infer", "reduce_redundancy",
                                                  "build_model")}}
    return cfg


def _sandbox_prefix() -> list[str]:
    """Command prefix that runs a command in a new network namespace without privileges: as root, with every
    capability dropped (file permissions then apply to it as to any owner; an unprivileged user could not run this
    interpreter when it lives under /root); otherwise in a user namespace that maps no one to root."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is not installed")
        prefix = ["unshare", "--net", "setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
    else:
        prefix = ["unshare", "--user", "--net", "--"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    return prefix


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (mtime, size) of every file under ``folder``, Snakemake's own .snakemake/ excepted."""
    out = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if rel.split("/")[0] != ".snakemake" and not path.is_dir():
            st = path.lstat()
            out[rel] = (st.st_mtime_ns, st.st_size)
    return out


def declared_files(workdir: Path, configfile: str) -> set[str]:
    """Every output, log and benchmark file that the study's jobs declare, from Snakemake's own plan of the whole
    DAG (``-n --forceall`` lists each job's ``output:``, ``log:`` and ``benchmark:``)."""
    proc = run_snakemake(workdir, None, "--configfile", configfile, "-n", "--forceall")
    declared = set()
    for line in proc.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key in ("output", "log", "benchmark"):
            declared.update(v.strip() for v in value.split(", "))
    assert declared, proc.stdout[-2000:]
    return declared


@pytest.fixture(scope="module")
def iso(tiny_study):
    prefix = _sandbox_prefix()
    root = Path(tempfile.mkdtemp(prefix="hybridreduce-isolation-"))
    study, home, tmp = root / "study", root / "home", root / "tmp"
    shutil.copytree(tiny_study, study, symlinks=True)
    home.mkdir()
    tmp.mkdir()
    (study / "videos").mkdir()
    write_video(str(study / "videos/good.mp4"), ramp_frames(24), fps=8)
    shutil.copyfile(study / "videos/good.mp4", study / "videos/locked.mp4")
    rows = [{"video": f"videos/{name}.mp4", "question": "Is it bright?", "options": ["yes", "no"], "answer": "A"}
            for name in ("good", "locked")]
    (study / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (study / "iso.yaml").write_text(yaml.safe_dump(_iso_config()))
    (study / "videos/locked.mp4").chmod(0)
    before = _files(study)
    old_logs = set((study / ".snakemake/log").glob("*"))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp),
           "LANG": "C.UTF-8"}
    probe = ("import json, socket\n"
             "try:\n    socket.create_connection(('1.1.1.1', 443), timeout=5); err = 0\n"
             "except OSError as e:\n    err = e.errno\n"
             "print(json.dumps({'interfaces': [n for _, n in socket.if_nameindex()], 'connect_errno': err}))")
    network = subprocess.run([*prefix, sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                             check=True)
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
         "--configfile", "iso.yaml", "--retries", "1", "--show-failed-logs"],
        cwd=study, env=env, capture_output=True, text=True, timeout=1200, check=False)
    after = _files(study)
    yield SimpleNamespace(
        root=root, study=study, home=home, tmp=tmp, proc=proc, before=before, after=after,
        env=env, network=json.loads(network.stdout),
        db=study / "results/iso/study.duckdb", log=(proc.stdout or "") + (proc.stderr or ""),
        snakemake_log="".join(p.read_text() for p in set((study / ".snakemake/log").glob("*")) - old_logs))
    shutil.rmtree(root, ignore_errors=True)


def _completed(iso) -> None:
    assert iso.proc.returncode == 0, f"the study failed:\n{iso.log[-6000:]}"


def test_out_of_memory_is_reported_with_its_sample_and_retried_with_more_memory(iso):
    _completed(iso)
    # the run's output and Snakemake's own log file (.snakemake/log/, where --show-failed-logs copies the failed
    # job's log, which the retry replaces) name the sample, the setting and the limit
    assert iso.snakemake_log
    for text in (iso.log, iso.snakemake_log):
        assert ("MemoryError: out of memory on sample good while encoding 12 frames of 2048x2048 with "
                "tiny_transformer (cpu): ") in text
        assert (f"rule encode_vision (model=tiny_transformer) ran out of memory under its "
                f"limit of mem_mb={ISO_MEM_MB}") in text
    assert "Trying to restart job" in iso.log
    # the retry ran with attempt x mem_mb, and the study answered from its tokens
    job_log = (iso.study / "results/iso/logs/encode_vision/tiny_transformer.log").read_text()
    assert job_log.startswith(f"memory limit: {2 * ISO_MEM_MB} MB (resources.enforce_mem_mb; RLIMIT_DATA)")
    assert "out of memory" not in job_log
    with duckdb.connect(str(iso.db), read_only=True) as con:
        assert con.execute("SELECT model, pre_method, method, budget, sample_id FROM inference").fetchall() == [
            ("tiny_transformer", "none", "none", 1.0, "good")]
        assert con.execute("SELECT task, num_samples FROM scores").fetchall() == [("hybridreduce_local", 1)]
        assert con.execute("SELECT count(*) FROM failures WHERE stage LIKE 'infer%'").fetchall() == [(0,)]


def test_unreadable_video_is_recorded_with_path_and_reason(iso):
    _completed(iso)
    assert (iso.study / "videos/locked.mp4").stat().st_mode & 0o777 == 0
    with duckdb.connect(str(iso.db), read_only=True) as con:
        assert con.execute("SELECT sample_id, stage, kind, path, reason FROM failures").fetchall() == [
            ("locked", "extract_frames", "unreadable", str(iso.study / "videos/locked.mp4"),
             "file is not readable (permissions)")]
        # the study went on with the readable video
        assert con.execute("SELECT sample_id, sampled_frames FROM videos").fetchall() == [("good", 12)]
    assert "locked" in (iso.study / "reports/iso/index.html").read_text()


def test_study_runs_without_network_and_every_job_is_offline(iso):
    # the namespace the study ran in has no network: a loopback only, and a connection attempt fails at once
    assert iso.network == {"interfaces": ["lo"], "connect_errno": errno.ENETUNREACH}
    assert not any(k.startswith(("HF_", "TRANSFORMERS")) for k in iso.env)
    _completed(iso)
    logs = sorted((iso.study / "results/iso/logs/infer").rglob("*.log"))
    assert logs
    for log in logs:
        assert ("offline: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1; as the libraries read them: "
                "huggingface_hub offline=True, datasets offline=True") in log.read_text(), log


def test_jobs_write_only_their_declared_outputs(iso):
    _completed(iso)
    declared = declared_files(iso.study, "iso.yaml")
    # not job outputs: the study-name claim written at start-up (Snakefile onstart), and the index of all studies
    # that every report job refreshes (reports/index.html, shared by the studies, so no one rule's output)
    allowed = declared | {"results/iso/configfiles.json", "reports/index.html"}
    written = {f for f, stamp in iso.after.items() if iso.before.get(f) != stamp}
    assert written, "the study wrote nothing"
    undeclared = {f for f in written if f not in allowed and not any(f.startswith(d + "/") for d in allowed)}
    assert not undeclared, sorted(undeclared)
    assert not [f for f in written if f.startswith(("results/tiny/", "reports/tiny/"))]
    # nor in the run's HOME (no caches) or TMPDIR (no temporary file left behind)
    elsewhere = sorted(p.relative_to(iso.root).as_posix() for d in (iso.home, iso.tmp) for p in d.rglob("*")
                       if not p.is_dir())
    assert not elsewhere, elsewhere


def test_two_studies_in_one_folder_never_mix(iso, tiny_study):
    _completed(iso)
    # the first study's database is untouched by the second study's run
    tiny_db = "results/tiny/study.duckdb"
    assert iso.after[tiny_db] == iso.before[tiny_db]
    assert table_rows(iso.study / tiny_db) == table_rows(tiny_study / tiny_db)
    # the second study's database holds that study only
    with duckdb.connect(str(iso.db), read_only=True) as con:
        assert con.execute("SELECT study FROM study").fetchall() == [("iso",)]
        for table, cols in TABLES.items():
            names = {c for c, _, _ in cols}
            if "sample_id" in names:
                ids = {r[0] for r in con.execute(f'SELECT DISTINCT sample_id FROM "{table}"').fetchall()}
                assert ids <= {"good", "locked"}, (table, ids)
            if "model" in names:
                models = {r[0] for r in con.execute(f'SELECT DISTINCT model FROM "{table}"').fetchall()}
                assert models <= {"tiny_transformer"}, (table, models)


def test_a_failed_run_prints_the_command_that_resumes_it(tmp_path):
    cfg = tiny_config("resume")
    cfg["dataset"]["synthetic"]["num_videos"] = 1
    cfg["inference"]["models"] = ["tiny_transformer"]
    # the infer job fails at run time: held to 500 MB, it cannot import what it needs (torch and lmms-eval take ~2 GB)
    cfg["resources"] = {"enforce_mem_mb": True, "infer": {"mem_mb": 500, "runtime": 10}}
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    assert "To resume: snakemake --cores all --configfile config.yaml --rerun-incomplete" in proc.stdout + proc.stderr
