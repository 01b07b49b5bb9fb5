"""lmms-eval as the scoring engine: its own CLI runs the ``hybridreduce`` plugin model on the local task and on
the real ``videomme`` task definition (offline, against a tiny fake copy of its dataset layout)."""

from __future__ import annotations

import json
import subprocess

import pytest
from fake_videomme import make_fake_videomme

from hybridreduce.dataset import SyntheticSpec, generate_sample
from hybridreduce.models.build import build_tiny_model
from hybridreduce.lmms.model import split_choices
from hybridreduce.lmms.run import (LmmsEvalError, lmms_env, lmms_eval_command, read_records,
                                           run_lmms_eval_cli, score_rows, write_local_task)

MODEL = {"kind": "tiny", "image_size": 56, "patch_size": 14, "vision_hidden_size": 32,
         "llm": {"family": "nemotron_h", "pattern": "M*M-M*", "hidden_size": 32}}


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    """A tiny model checkpoint and the local task over 6 synthetic mp4 samples."""
    root = tmp_path_factory.mktemp("lmms")
    build_tiny_model(MODEL, str(root / "model"), seed=0)
    spec = SyntheticSpec.from_config({"num_videos": 6, "duration_s": 6.0, "fps": 4, "width": 64, "height": 64,
                                      "event_duration_s": 1.5}, seed=0)
    samples = [generate_sample(spec, i, str(root / f"v{i}.mp4")).to_row() for i in range(6)]
    write_local_task(samples, str(root / "task"))
    return root, samples


def test_split_choices_reads_question_and_options():
    question, options = split_choices("Where did it appear?\nA. top left\nB. top right\n(C) bottom\nAnswer now.")
    assert question == "Where did it appear?" and options == ["top left", "top right", "bottom"]
    with pytest.raises(ValueError, match="no 'A. ...' option line"):
        split_choices("What is this?")


def test_lmms_eval_cli_scores_the_local_task_as_an_independent_count(local_study):
    root, samples = local_study
    record = root / "records.jsonl"
    args = {"model": root / "model", "method": "hybrid_progressive", "budget": 0.5, "num_frames": 8,
            "frame_size": 56, "record": record}
    out = root / "out"
    cmd = lmms_eval_command(["hybridreduce_local"], args, str(out), include_path=str(root / "task"))
    assert cmd[1:3] == ["-m", "lmms_eval"]  # lmms-eval's own CLI, the model found through its entry point
    proc = subprocess.run(cmd, env=lmms_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(next(out.rglob("*_results.json")).read_text())
    logs = [json.loads(line) for line in next(out.rglob("*_samples_hybridreduce_local.jsonl")).open()]

    records, sample_ids = read_records(str(record))
    predicted = {row["sample_id"]: row["predicted"] for table, row in records if table == "inference"}
    assert sorted(predicted) == sorted(s["sample_id"] for s in samples)
    independent = sum(predicted[s["sample_id"]] == s["answer"] for s in samples) / len(samples)

    key = {"model": "m", "pre_method": "none", "method": "hybrid_progressive", "budget": 0.5}
    scores, per_sample = score_rows(results, {"hybridreduce_local": logs}, key, sample_ids)
    assert [(r["task"], r["metric"], r["num_samples"]) for r in scores] == [("hybridreduce_local", "accuracy", 6)]
    assert scores[0]["value"] == pytest.approx(independent)
    by_id = {r["sample_id"]: r for r in per_sample}
    answers = {s["sample_id"]: s["answer"] for s in samples}
    for sid, row in by_id.items():
        assert row["score"] == float(predicted[sid] == answers[sid]) and row["response"] == predicted[sid]
    # the same run recorded the reduction itself: every layer after the first stage saw fewer tokens
    rows = [row for table, row in records if table == "inference"]
    assert all(r["realised_budget"] == pytest.approx(0.5, abs=1 / 64) for r in rows)


def test_real_videomme_task_runs_offline_on_a_fake_layout(local_study, tmp_path):
    root, _ = local_study
    hf_home = tmp_path / "hf"
    docs = make_fake_videomme(str(hf_home), n=3)
    record = tmp_path / "records.jsonl"
    args = {"model": root / "model", "method": "none", "num_frames": 8, "frame_size": 56, "record": record}
    results, logs = run_lmms_eval_cli(["videomme"], args, str(tmp_path / "out"), env=lmms_env(hf_home=str(hf_home)))
    assert "videomme_perception_score,none" in results["results"]["videomme"]
    records, sample_ids = read_records(str(record))
    inference = [row for table, row in records if table == "inference"]
    # every document reached our model: decoded by our extractor, 8 frames of 4x4 tokens
    assert sorted(r["sample_id"] for r in inference) == ["videomme/0", "videomme/1", "videomme/2"]
    assert {r["vision_tokens_full"] for r in inference} == {128}
    key = {"model": "m", "pre_method": "none", "method": "none", "budget": 1.0}
    scores, per_sample = score_rows(results, logs, key, sample_ids)
    assert [s["metric"] for s in scores] == ["videomme_perception_score"]
    predicted = {r["sample_id"]: r["predicted"] for r in inference}
    expected = 100 * sum(predicted[f"videomme/{i}"] == d["answer"] for i, d in enumerate(docs)) / len(docs)
    assert scores[0]["value"] == pytest.approx(expected)
    assert all(json.loads(r["detail"])["pred_answer"] == predicted[r["sample_id"]] for r in per_sample)


@pytest.mark.parametrize("args, message", [
    ({"methd": "fastv"}, r"unknown key\(s\) methd; accepted: budget, config, .*method"),
    ({"method": "no_such_method"}, "reduction.methods: unknown method 'no_such_method'"),
    ({"pre": "no_such_pre"}, "unknown pre-LLM method 'no_such_pre'"),
])
def test_the_plugin_refuses_unknown_args_and_methods_before_any_document(local_study, tmp_path, args, message):
    root, _ = local_study
    record = tmp_path / "records.jsonl"
    with pytest.raises(LmmsEvalError, match=message):
        run_lmms_eval_cli(["hybridreduce_local"], {"model": root / "model", "record": record, **args},
                          str(tmp_path / "out"), include_path=str(root / "task"))
    assert not record.exists() or record.read_text() == ""  # no document was answered


def test_failed_lmms_eval_run_raises_with_its_error(local_study, tmp_path):
    root, _ = local_study
    with pytest.raises(LmmsEvalError, match="no_such_task"):
        run_lmms_eval_cli(["no_such_task"], {"model": root / "model"}, str(tmp_path / "out"),
                          include_path=str(root / "task"))


def test_decoded_frames_are_kept_per_process_and_redecoded_when_the_file_changes(tmp_path):
    """The plugin decodes each video once per process (a job answers the same videos in every setting); the
    frames equal a fresh decode, and a rewritten file is decoded again."""
    import os

    import numpy as np
    from conftest import ramp_frames

    from hybridreduce.lmms.model import decoded_frames
    from hybridreduce.video import FrameSampling, decode_frames, write_video

    path = str(tmp_path / "v.mp4")
    write_video(path, ramp_frames(12), fps=4)
    sampling = FrameSampling.from_config({"sampling": "uniform", "num_frames": 4, "size": [32, 32]})
    first = decoded_frames(path, sampling)
    assert np.array_equal(first.frames, decode_frames(path, sampling).frames)
    assert decoded_frames(path, sampling) is first  # kept, not decoded again
    write_video(path, ramp_frames(12, step=16), fps=4)
    os.utime(path, ns=(1, 1))  # a new modification time even on a coarse clock
    again = decoded_frames(path, sampling)
    assert again is not first and np.array_equal(again.frames, decode_frames(path, sampling).frames)
    assert not np.array_equal(again.frames, first.frames)


def test_a_corrupt_video_through_the_cli_is_a_warning_with_its_document_and_a_wrong_answer(local_study, tmp_path):
    root, samples = local_study
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)  # an mp4 header, then garbage
    rows = [dict(samples[0]), {**samples[1], "video_path": str(broken)}]
    write_local_task(rows, str(tmp_path / "task"))
    out = tmp_path / "out"
    cmd = lmms_eval_command(["hybridreduce_local"], {"model": root / "model", "num_frames": 8, "frame_size": 56},
                            str(out), include_path=str(tmp_path / "task"))  # no record file: the CLI alone
    proc = subprocess.run(cmd, env=lmms_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert f"document 1 ({samples[1]['sample_id']}): the video could not be used (" in log
    assert str(broken) in log and "1 of 2 documents had a video that could not be used" in log
    results = json.loads(next(out.rglob("*_results.json")).read_text())
    per_doc = [json.loads(line) for line in next(out.rglob("*_samples_hybridreduce_local.jsonl")).open()]
    assert results["n-samples"]["hybridreduce_local"]["effective"] == 2  # counted, not skipped
    assert [d["accuracy"] for d in per_doc if d["doc_id"] == 1] == [0.0]
