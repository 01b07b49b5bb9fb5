"""The real workflow, run by Snakemake in temporary directories."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import duckdb
import numpy as np
import pytest
import yaml
from conftest import HUGE_LIMIT, REPO, fake_task_overlay, planned_jobs, run_snakemake, tiny_config, write_bad_media
from fake_videomme import make_fake_videomme

from hybridreduce.dataset.synthetic import evidence_mask
from hybridreduce.store import TABLES, collect


def rows(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_study_lands_in_duckdb_and_report(tiny_study):
    db = tiny_study / "results/tiny/study.duckdb"
    assert rows(db, "SELECT count(*) FROM samples") == [(4,)]
    assert rows(db, "SELECT count(*), min(sampled_frames) FROM videos") == [(4, 8)]
    assert rows(db, "SELECT count(*) FROM frames") == [(32,)]
    # 2 models x 2 methods x 2 q x 4 samples, on each model's own tokens; 8 frames of 4x4 tokens: EVS keeps
    # max(16, int(128 * (1 - q)))
    assert rows(db, "SELECT model, count(*) FROM visual_reduction GROUP BY ALL ORDER BY ALL") == [
        ("tiny_hybrid", 16), ("tiny_transformer", 16)]
    assert rows(db, "SELECT DISTINCT q, tokens_total, tokens_kept FROM visual_reduction ORDER BY q") == [
        (0.5, 128, 64), (0.75, 128, 32)]
    # the ground truth's evidence (and distractor) tokens each mask keeps: the masks the infer jobs apply, checked
    # against the samples' events at the extracted frames' times
    checked = 0
    for model, method, sample_id, q, *counts in rows(db, "SELECT model, method, sample_id, q, evidence_tokens, "
                                                     "evidence_kept, distractor_tokens, distractor_kept FROM "
                                                     "visual_reduction"):
        events = json.loads(rows(db, f"SELECT events FROM samples WHERE sample_id = '{sample_id}'")[0][0])
        times = [t for (t,) in rows(db, f"SELECT timestamp_s FROM frames WHERE sample_id = '{sample_id}' "
                                        "ORDER BY frame_index")]
        with np.load(tiny_study / f"results/tiny/redundancy/{model}/{method}.npz") as masks:
            keep = masks[f"{sample_id}/q={q}/keep"]
        truth = [evidence_mask(events, times, (4, 4), role) for role in ("target", "distractor")]
        assert counts == [int(n) for m in truth for n in (m.sum(), (m & keep).sum())], (model, method, sample_id, q)
        checked += counts[0] > 0
    assert checked == 32  # every row: each video shows its targets in some sampled frame
    assert rows(db, "SELECT count(*) FROM failures") == [(0,)]
    assert rows(db, "SELECT study, seed FROM study") == [("tiny", 0)]
    rules = {r for (r,) in rows(db, "SELECT DISTINCT rule FROM runs")}
    assert rules == {"synthesize_sample", "extract_frames", "reduce_redundancy", "build_model", "infer", "probe"}
    assert rows(db, "SELECT model, split, count(*) FROM training GROUP BY ALL ORDER BY ALL") == [
        ("tiny_hybrid", "train", 2), ("tiny_hybrid", "val", 5)]  # val: all + the four question types
    # 2 models x (none at 1.0, hybrid_progressive at 0.5) x 4 samples
    assert rows(db, "SELECT model, method, budget, count(*), bool_and(realised_budget BETWEEN budget - 1.0 / 128 "
                    "AND budget + 1.0 / 128) FROM inference GROUP BY ALL ORDER BY ALL") == [
        ("tiny_hybrid", "hybrid_progressive", 0.5, 4, True), ("tiny_hybrid", "none", 1.0, 4, True),
        ("tiny_transformer", "hybrid_progressive", 0.5, 4, True), ("tiny_transformer", "none", 1.0, 4, True)]
    assert rows(db, "SELECT DISTINCT layer_pattern FROM inference ORDER BY 1") == [("****",), ("M*M-M*",)]
    assert rows(db, "SELECT count(*) FROM latency WHERE prefill_s > 0 AND speedup > 0") == [(16,)]
    # one infer job per model runs every setting (inference.job_per: model): the unreduced baseline is timed once
    # per sample, by the method 'none', and every setting of that job compares against that same time
    assert rows(db, "SELECT count(*) FROM (SELECT model, pre_method, sample_id FROM latency GROUP BY ALL "
                    "HAVING count(DISTINCT prefill_none_s) > 1)") == [(0,)]
    assert rows(db, "SELECT bool_and(prefill_none_s = prefill_s) FROM latency WHERE method = 'none'") == [(True,)]
    # accuracy comes from one lmms-eval run per setting: its aggregate equals the mean of its per-sample log,
    # and every per-sample score is the recorded answer checked against the sample's gold letter
    assert rows(db, "SELECT task, metric, count(*), sum(num_samples) FROM scores GROUP BY ALL") == [
        ("hybridreduce_local", "accuracy", 4, 16)]
    assert rows(db, """SELECT bool_and(abs(s.value - a.mean) < 1e-9) FROM scores s JOIN (
                           SELECT model, pre_method, method, budget, avg(score) AS mean FROM sample_scores GROUP BY ALL
                       ) a USING (model, pre_method, method, budget)""") == [(True,)]
    assert rows(db, """SELECT count(*), bool_and(a.score = (i.predicted = s.answer)::DOUBLE)
                       FROM sample_scores a JOIN inference i USING (model, pre_method, method, budget, sample_id)
                       JOIN samples s USING (sample_id)""") == [(16, True)]

    report = tiny_study / "reports/tiny/index.html"
    umask = os.umask(0)
    os.umask(umask)
    assert report.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by others as the umask allows
    # probing: hybrid M*M-M*: every layer but the MLP at 3 scores (5 layers); qwen2: 4 attention layers
    assert rows(db, "SELECT model, count(DISTINCT layer), count(*) FROM layer_sparsity GROUP BY ALL ORDER BY ALL") == [
        ("tiny_hybrid", 5, 5 * 2 * 3), ("tiny_transformer", 4, 4 * 2 * 3)]  # layers x scores x metrics
    assert rows(db, "SELECT model, count(*), bool_and(spearman > 0.999 AND jaccard = 1) FILTER (layer_a = layer_b) "
                    "FROM layer_stability GROUP BY ALL ORDER BY ALL") == [("tiny_hybrid", 25, True),
                                                                          ("tiny_transformer", 16, True)]
    assert rows(db, "SELECT target, count(*) FROM probe_retention GROUP BY ALL ORDER BY ALL") == [
        ("event", 9), ("state", 9)]
    html = report.read_text()
    for section in ("Methods", "Data", "Visual redundancy reduction", "Training log", "Token reduction inside the LLM",
                    "Accuracy, realised budget and prefill time", "Failures", "<svg", "Claim 1.", "Claim 3.",
                    "Full-token accuracy"):
        assert section in html
    # offline: no external resource is referenced (the only URL is the SVG namespace)
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}
    assert "<script" not in html


def test_second_run_does_nothing(tiny_study):
    proc = run_snakemake(tiny_study, None, "--configfile", "config.yaml", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_dry_run_prints_the_dag(tmp_path):
    proc = run_snakemake(tmp_path, tiny_config(), "-n")
    assert planned_jobs(proc.stdout) == {
        "all": 1, "build_model": 2, "collect": 1, "extract_frames": 4, "encode_vision": 2, "infer": 2, "lmms_task": 1,
        "reduce_redundancy": 4, "report": 1, "synthesize_sample": 4, "probe": 2}
    assert not (tmp_path / "results").exists()


def test_changing_an_evs_parameter_reruns_only_downstream(tiny_study, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(tiny_study, work, symlinks=True)
    frames = sorted((work / "results/tiny/frames").glob("*.npz"))
    before = {p: p.stat().st_mtime_ns for p in frames}
    cfg = tiny_config()
    cfg["redundancy"]["q"] = [0.5, 0.9]
    proc = run_snakemake(work, cfg, "-n")
    # every model's masks; no infer job applies them (pre_llm: none), so none reruns
    assert planned_jobs(proc.stdout) == {"all": 1, "collect": 1, "reduce_redundancy": 4, "report": 1}
    run_snakemake(work, cfg)
    assert {p: p.stat().st_mtime_ns for p in frames} == before
    db = work / "results/tiny/study.duckdb"
    assert rows(db, "SELECT DISTINCT q FROM visual_reduction ORDER BY q") == [(0.5,), (0.9,)]


def test_adding_a_method_runs_only_that_method(tiny_study, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(tiny_study, work, symlinks=True)
    cfg = tiny_config()
    cfg["redundancy"]["methods"] = ["evs", "random", "uniform"]
    proc = run_snakemake(work, cfg, "-n")
    assert planned_jobs(proc.stdout) == {"all": 1, "collect": 1, "reduce_redundancy": 2, "report": 1}  # per model


def test_growing_the_test_set_keeps_existing_videos_and_the_models(tiny_study, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(tiny_study, work, symlinks=True)
    cfg = tiny_config()
    cfg["dataset"]["synthetic"]["num_videos"] = 5
    jobs = planned_jobs(run_snakemake(work, cfg, "-n").stdout)
    assert "build_model" not in jobs and "probe" not in jobs  # probing uses its own probe set
    assert jobs["synthesize_sample"] == 1 and jobs["infer"] == 2  # one job per model and pre-LLM method


def test_collect_is_idempotent(tiny_study, tmp_path):
    results = [str(p) for folder in ("dataset/samples", "frames", "redundancy", "inference", "probing")
               for p in (tiny_study / "results/tiny" / folder).rglob("*.json")]
    results += [str(p) for p in (tiny_study / "results/tiny/models").glob("*.json")]
    config = yaml.safe_load((tiny_study / "config.yaml").read_text())
    first, second = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    collect(results, str(first), config)
    collect(results, str(first), config)  # twice into the same file
    collect(list(reversed(results)), str(second), config)
    for table, cols in TABLES.items():
        order = ", ".join(f'"{c}"' for c, _, _ in cols)
        query = f'SELECT * FROM "{table}" ORDER BY {order}'
        assert rows(first, query) == rows(second, query), table
        assert table == "failures" or len(rows(first, query)) > 0, table


def test_invalid_config_value_is_rejected_with_its_field(tmp_path):
    cfg = tiny_config()
    cfg["redundancy"]["q"] = [0.5, -0.1]
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    assert "config field 'redundancy.q[1]': -0.1 is less than the minimum of 0" in proc.stderr
    assert not (tmp_path / "results").exists()

    cfg = tiny_config()
    cfg["redundancy"]["methods"] = ["evs", "fastevs"]
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert "config field 'redundancy.methods[1]': 'fastevs' is not allowed" in proc.stderr
    assert "evs_pixel" in proc.stderr  # the allowed values are listed

    cfg = tiny_config()
    cfg["frames"]["num_frame"] = 8  # typo
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert "config field 'frames'" in proc.stderr and "num_frame" in proc.stderr

    # a method's own rates: only for a method the stage runs, and holding the rate inference applies
    cfg = tiny_config()
    cfg["redundancy"]["method_q"] = {"divprune": [0.5]}
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert "redundancy.method_q: divprune not in redundancy.methods (evs, random)" in proc.stderr
    cfg["redundancy"]["method_q"] = {"evs": [0.9]}
    cfg["inference"]["pre_llm"] = ["none", "evs"]
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert ("inference.pre_llm_q: 0.5 is not one of redundancy.method_q.evs (0.9); the infer jobs apply the "
            "redundancy stage's evs masks at this rate") in proc.stderr
    assert not (tmp_path / "results").exists()


def test_manifest_of_own_videos_records_every_failure_and_goes_on(tmp_path):
    from hybridreduce.video import write_video
    from conftest import ramp_frames

    media = tmp_path / "videos"
    bad = write_bad_media(media)
    write_video(str(media / "mine_a.mp4"), ramp_frames(24), fps=8)
    write_video(str(media / "mine_b.webm"), ramp_frames(24), fps=8)
    lines = [{"video": "videos/mine_a.mp4", "question": "Is it bright?", "options": ["yes", "no"], "answer": "A"},
             {"video": "videos/mine_b.webm", "question": "Is it dark?", "options": ["yes", "no"], "answer": "no"}]
    lines += [{"video": os.path.relpath(p, tmp_path), "question": "?", "options": ["a", "b"], "answer": "A",
               "sample_id": name} for name, (p, _) in bad.items()]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cfg = tiny_config("mine")
    cfg["dataset"] = {"source": "manifest", "manifest": "manifest.jsonl"}
    cfg["frames"]["max_source_pixels"] = HUGE_LIMIT
    proc = run_snakemake(tmp_path, cfg)

    db = tmp_path / "results/mine/study.duckdb"
    failures = {sid: (kind, path, reason) for sid, kind, path, reason in
                rows(db, "SELECT sample_id, kind, path, reason FROM failures WHERE stage = 'extract_frames'")}
    assert {sid: f[0] for sid, f in failures.items()} == {name: kind for name, (_, kind) in bad.items()}
    for name, (path, _) in bad.items():
        assert failures[name][1] == str(path) and failures[name][2]
    assert rows(db, "SELECT sample_id, answer FROM samples WHERE sample_id LIKE 'mine%' ORDER BY 1") == [
        ("mine_a", "A"), ("mine_b", "B")]
    assert rows(db, "SELECT DISTINCT sample_id FROM visual_reduction ORDER BY 1") == [("mine_a",), ("mine_b",)]
    html = (tmp_path / "reports/mine/index.html").read_text()
    for name in bad:
        assert name in html
        # the failed sample's own job log says what failed
        log = (tmp_path / f"results/mine/logs/extract_frames/{name}.log").read_text()
        assert f"sample {name} failed: {failures[name][0]}: {failures[name][2]}" in log
    # own questions in words the tiny models' tokenizer does not know: flagged per sample in the infer logs and
    # in the report (the answers are guesses)
    infer_logs = "".join(p.read_text() for p in (tmp_path / "results/mine/logs/infer").rglob("*.log"))
    assert re.search(r"warning: sample mine_a \(tiny_hybrid/none/none/1\.0\): \d+% of the question's tokens are "
                     r"unknown to tiny_hybrid's tokenizer; its answer is a guess", infer_logs)
    assert rows(db, "SELECT DISTINCT sample_id FROM inference WHERE question_unreadable ORDER BY 1") == [
        ("mine_a",), ("mine_b",)]
    assert "Questions the model cannot read" in html and "mine_a, mine_b" in html
    # the console's end-of-run summary counts them by kind
    kinds = {}
    for _, kind in bad.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    summary = re.search(r"study mine: 2 of (\d+) samples scored; (\d+) failed \((.*)\)", proc.stdout)
    assert summary and summary.group(1) == str(len(bad) + 2) and summary.group(2) == str(len(bad))
    assert dict(reversed(part.split(" ", 1)) for part in summary.group(3).split(", ")) == {
        kind: str(n) for kind, n in kinds.items()}

    # editing one row reruns that sample's chain only
    lines[1]["question"] = "Is it very dark?"
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    proc = run_snakemake(tmp_path, cfg, "-n")
    assert planned_jobs(proc.stdout) == {
        "all": 1, "collect": 1, "manifest_sample": 1, "extract_frames": 1, "encode_vision": 2, "reduce_redundancy": 4,
        "infer": 2, "lmms_task": 1, "report": 1}  # reduce_redundancy: 2 models x 2 methods


def test_bad_manifest_is_rejected_before_any_job(tmp_path):
    (tmp_path / "manifest.csv").write_text("video,question,options,answer\nv.mp4,What?,a|b|c,E\n")
    cfg = tiny_config("bad")
    cfg["dataset"] = {"source": "manifest", "manifest": "manifest.csv"}
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    assert "manifest.csv:2: field 'answer' is 'E'; expected a letter A-C" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_manifest_duplicate_ids_name_both_lines_and_unknown_fields_are_rejected(tmp_path):
    from hybridreduce.dataset.manifest import read_manifest
    from hybridreduce.errors import ConfigError

    row = {"video": "videos/a.mp4", "question": "Which?", "options": ["x", "y"], "answer": "A"}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in [row, {**row, "video": "b.mp4"}, {**row, "sample_id": "a"}]))
    with pytest.raises(ConfigError, match=r"m\.jsonl:3: sample_id 'a' is already used on line 1"):
        read_manifest(str(manifest))
    manifest.write_text(json.dumps({**row, "Answer": "B"}) + "\n")
    with pytest.raises(ConfigError, match=r"m\.jsonl:1: unknown field\(s\) 'Answer'; a row has video, question, "
                                          r"options, answer and optionally sample_id, split, qtype"):
        read_manifest(str(manifest))


def test_paper_config_dry_runs_without_weights_on_the_real_tasks_documents(tmp_path):
    overlay, docs = fake_task_overlay(tmp_path)
    proc = run_snakemake(tmp_path, None, "--configfile", str(REPO / "config/paper.yaml"), str(overlay), "-n")
    jobs = planned_jobs(proc.stdout)
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    inference = paper["inference"]
    assert inference["budgets"] == [1.0, 0.5, 0.25, 0.1] and inference["with_pre_llm"] is None
    # one job per setting (inference.job_per: setting): models x pre-LLM inputs x (none + each method x 3 budgets)
    assert jobs["infer"] == len(inference["models"]) * len(inference["pre_llm"]) * (
        1 + (len(inference["methods"]) - 1) * 3) and "build_model" not in jobs
    # the benchmark's own videos pass through the DAG: a sample and a frame extraction per document
    assert jobs["task_sample"] == len(docs) and jobs["synthesize_sample"] == paper["dataset"]["synthetic"]["num_videos"]
    assert jobs["extract_frames"] == jobs["synthesize_sample"] + len(docs)
    for i, doc in enumerate(docs):
        assert re.search(rf"rule extract_frames:\n\s+input: results/paper/dataset/samples/videomme/{i}\.json, "
                         rf"\S+/videomme/data/{doc['videoID']}\.mp4\n\s+output: results/paper/frames/videomme/{i}\.npz",
                         proc.stdout), i


def test_a_real_task_that_is_not_downloaded_is_rejected_before_any_job(tmp_path):
    proc = run_snakemake(tmp_path, None, "--configfile", str(REPO / "config/paper.yaml"), "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "scoring.tasks: could not read the documents of videomme, mlvu_dev" in out and "docs/scoring.md" in out


def test_failing_lmms_eval_run_fails_its_job_with_the_lmms_eval_error(tiny_study, tmp_path):
    # a real task whose prompt the plugin cannot answer (no option lines): lmms-eval fails inside the infer jobs
    hf_home = tmp_path / "hf"
    make_fake_videomme(str(hf_home), n=1, options=[])
    work = tmp_path / "study"
    shutil.copytree(tiny_study, work, symlinks=True)
    cfg = tiny_config()
    cfg["scoring"] = {"tasks": ["hybridreduce_local", "videomme"], "hf_home": str(hf_home)}
    proc_started = time.time()
    proc = run_snakemake(work, cfg, check=False)
    assert proc.returncode != 0
    failed = [p for p in (work / "results/tiny/logs/infer").rglob("*.log") if p.stat().st_mtime > proc_started]
    assert failed and all("no 'A. ...' option line in the prompt" in p.read_text() for p in failed)
    assert "lmms-eval failed: ValueError" in failed[0].read_text()
    assert not (work / "results/tiny/study.duckdb.tmp").exists()


def test_an_unknown_lmms_eval_task_is_rejected_before_any_job(tmp_path):
    cfg = tiny_config()
    cfg["scoring"] = {"tasks": ["hybridreduce_local", "no_such_task"]}
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert proc.returncode != 0 and not (tmp_path / "results").exists()
    out = proc.stdout + proc.stderr
    assert "scoring.tasks: could not read the documents of no_such_task" in out
    assert "unknown lmms-eval task(s) no_such_task" in out


def test_missing_checkpoint_is_rejected_before_any_job_naming_the_path(tmp_path):
    cfg = tiny_config("nockpt")
    cfg["models"] = {"real": {"kind": "qwen2_5_vl", "path": "checkpoints/absent-model"}}
    cfg["inference"] = {"models": ["real"], "pre_llm": ["none"], "methods": ["none"], "budgets": [1.0]}
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    assert "models.real.path: model checkpoint 'checkpoints/absent-model' does not exist" in proc.stderr
    assert not (tmp_path / "results/nockpt/logs").exists()


def test_snakemake_lint_is_clean(tmp_path):
    proc = run_snakemake(tmp_path, None, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_a_job_script_imports_no_torch_until_its_rule_needs_it():
    """Every job starts a Python process: importing the job functions must stay light (the per-sample jobs would
    otherwise spend seconds importing torch and transformers)."""
    code = "import sys, hybridreduce.jobs; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


COUNT_OPENS = '''
import os
import av

_open = av.open


def _counting_open(file, mode="r", *args, **kwargs):
    if mode == "r" and isinstance(file, str):
        with open(os.environ["AV_OPEN_LOG"], "a") as f:
            f.write(f"{os.getpid()} {os.path.abspath(file)}\\n")
    return _open(file, mode, *args, **kwargs)


av.open = _counting_open
'''


def test_infer_reads_the_extracted_frames_and_applies_the_redundancy_masks(tmp_path, monkeypatch):
    """The DAG is the data flow: the dataset stage lists a real lmms-eval task's documents beside the synthetic
    samples, frame extraction is the only stage that decodes a video (once per video, however many settings infer
    runs), each model encodes every video once, and infer applies the masks the redundancy stage computed on those
    tokens."""
    hf_home = tmp_path / "hf"
    docs = make_fake_videomme(str(hf_home), n=3)
    os.remove(hf_home / "videomme" / "data" / f"{docs[1]['videoID']}.mp4")  # a document whose video is missing
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(COUNT_OPENS)  # counts PyAV read-opens in every Python process
    monkeypatch.setenv("PYTHONPATH", f"{hooks}:{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("AV_OPEN_LOG", str(tmp_path / "opens.log"))
    work = tmp_path / "study"
    work.mkdir()
    cfg = tiny_config()
    for model in cfg["models"].values():
        model["training"] = None  # seeded random models: this test is about the data flow, not accuracy
    cfg["probing"]["enabled"] = False
    cfg["inference"].update(pre_llm=["none", "evs"], methods=["none", "hybrid_progressive", "fastv"])
    cfg["scoring"] = {"tasks": ["hybridreduce_local", "videomme"], "hf_home": str(hf_home)}
    cfg["redundancy"]["methods"] = ["evs", "random", "cdpruner"]  # cdpruner reads the question encode_vision stores
    dag = run_snakemake(work, cfg, "--dag").stdout
    labels = dict(re.findall(r'(\d+)\[label = "([a-z_]+)', dag))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"(\d+) -> (\d+)", dag)}
    assert {("extract_frames", "infer"), ("reduce_redundancy", "infer"), ("extract_frames", "encode_vision"),
            ("build_model", "encode_vision"), ("encode_vision", "reduce_redundancy"), ("encode_vision", "infer"),
            ("task_sample", "extract_frames")} <= edges
    assert not {e for e in edges if e[1] == "reduce_redundancy"} - {("encode_vision", "reduce_redundancy")}
    run_snakemake(work, cfg)

    opened = [line.split() for line in (tmp_path / "opens.log").read_text().splitlines()]
    videos = sorted([*(work / "results/tiny/dataset/videos").glob("*.mp4"), *(hf_home / "videomme/data").glob("*")])
    assert len(videos) == 4 + 2 and sorted({path for _, path in opened}) == sorted(str(v) for v in videos)
    for video in videos:  # one process (its extract_frames job) decoded it, once
        assert len({pid for pid, path in opened if path == str(video)}) == 1
    db = work / "results/tiny/study.duckdb"
    # the task's documents are samples of the study; the one without its video is a named failure
    assert rows(db, "SELECT sample_id, source, answer FROM samples WHERE qtype = 'videomme' ORDER BY 1") == [
        (f"videomme/{i}", "lmms_eval", d["answer"]) for i, d in enumerate(docs)]
    assert rows(db, "SELECT split_part(stage, ' ', 1), kind, bool_and(reason LIKE '%does not exist%'), count(*) "
                    "FROM failures WHERE sample_id = 'videomme/1' GROUP BY ALL ORDER BY 1") == [
        ("infer", "zero_frames", False, 2 * (3 + 2)), ("task_sample", "missing", True, 1)]  # infer: every setting
    # several settings per model and pre-LLM method answered every sample of both tasks from those frames
    assert rows(db, "SELECT model, pre_method, count(DISTINCT (method, budget)), count(DISTINCT sample_id) "
                    "FILTER (task = 'hybridreduce_local'), list(DISTINCT sample_id ORDER BY sample_id) "
                    "FILTER (task = 'videomme') FROM inference GROUP BY ALL ORDER BY ALL") == [
        (model, pre, n, 4, ["videomme/0", "videomme/2"])
        for model in ("tiny_hybrid", "tiny_transformer")
        for pre, n in (("evs", 2), ("none", 3))]  # after EVS: the default's with_pre_llm
    # the tokens entering the LLM after EVS are exactly those the redundancy stage kept for that model and sample
    assert rows(db, """SELECT count(*), bool_and(i.vision_tokens_in = r.tokens_kept) FROM inference i
                       JOIN visual_reduction r ON r.model = i.model AND r.sample_id = i.sample_id
                       AND r.method = i.pre_method AND r.q = i.pre_q""") == [(2 * 2 * (4 + 2), True)]
    # the query-conditioned method ran on every usable sample of both tasks, on each model's tokens
    assert rows(db, "SELECT model, count(DISTINCT sample_id), bool_and(tokens_kept = (SELECT max(tokens_kept) FROM "
                    "visual_reduction e WHERE e.method = 'evs' AND e.q = r.q AND e.model = r.model AND e.sample_id = "
                    "r.sample_id)) FROM visual_reduction r WHERE method = 'cdpruner' GROUP BY ALL ORDER BY ALL") == [
        ("tiny_hybrid", 4 + 2, True), ("tiny_transformer", 4 + 2, True)]

    # what a change reruns: frame sampling reruns extraction, the masks and inference, not the data or the models
    more_frames = json.loads(json.dumps(cfg))
    more_frames["frames"]["num_frames"] = 12
    jobs = planned_jobs(run_snakemake(work, more_frames, "-n").stdout)
    assert jobs["extract_frames"] == 4 + 3 and jobs["encode_vision"] == 2 and jobs["reduce_redundancy"] == 6
    assert jobs["infer"] == 4
    assert "synthesize_sample" not in jobs and "task_sample" not in jobs and "build_model" not in jobs
    # the pruning rates rerun the masks and the infer jobs that apply them, not the unreduced ones
    rates = json.loads(json.dumps(cfg))
    rates["redundancy"]["q"] = [0.5, 0.9]
    jobs = planned_jobs(run_snakemake(work, rates, "-n").stdout)
    assert jobs == {"reduce_redundancy": 6, "infer": 2, "collect": 1, "report": 1, "all": 1}
    # one method's own rates: that method's masks (each model's) and the infer jobs that apply them
    rates = json.loads(json.dumps(cfg))
    rates["redundancy"]["method_q"] = {"evs": [0.5, 0.9]}
    jobs = planned_jobs(run_snakemake(work, rates, "-n").stdout)
    assert jobs == {"reduce_redundancy": 2, "infer": 2, "collect": 1, "report": 1, "all": 1}
