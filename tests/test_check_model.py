"""``python -m hybridreduce check-model``: a study's models read without their weights, as a user runs it before a
cluster job, on the shipped tiny checkpoints and on tiny checkpoints of the real transformers classes standing in for
config/paper.yaml's."""

import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO
from test_hf_vlms import frames, nemotron_case, qwen_case

from hybridreduce.config import inference_settings, load_config
from hybridreduce.models import layer_pattern, load_adapter


def check_model(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hybridreduce", "check-model", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def method_lines(out: str, model: str) -> dict[tuple[str, float], str]:
    """``(method, budget) -> the rest of its line`` in ``model``'s block."""
    block = out.split(f"\n{model} (", 1)[-1] if not out.startswith(f"{model} (") else out[len(model) + 2:]
    block = block.split("\n\n", 1)[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"  (\w+)\s+([0-9.]+)\s+(.*)$", line)
        if m and m.group(1) not in ("method",):
            rows[(m.group(1), float(m.group(2)))] = m.group(3)
    return rows


def test_the_default_study_checks_from_its_shipped_checkpoints():
    proc = check_model()
    assert proc.returncode == 0, proc.stderr
    config = load_config(str(REPO))
    for model in config["inference"]["models"]:
        # the model as the study loads it (weights and all): its layers, and the grid it encodes the frames into
        cfg = config["models"][model]
        path = cfg["path"] or config["models"][cfg["training"]["init_from"]]["path"]
        adapter = load_adapter(model, {**cfg, "path": str(REPO / path)})
        t, h, w = adapter.encode_video(np.zeros((64, 64, 64, 3), dtype=np.uint8)).shape
        assert f"  decoder: {len(adapter.stack.layer_types)} layers {layer_pattern(adapter.stack.layer_types)} " \
            in proc.stdout
        assert f"vision tokens: {t} x {h} x {w} = {t * h * w} for uniform sampling, 64 frames of 64 x 64 px" \
            in proc.stdout
        rows = method_lines(proc.stdout, model)
        expected = {(m, b) for mm, pre, m, b in inference_settings(config) if mm == model and pre == "none"}
        assert set(rows) == expected, model
        for (method, budget), rest in rows.items():
            if rest.startswith(("infeasible", "decided")):
                continue
            realised, flops = map(float, rest.split()[-2:])
            assert abs(realised - budget) <= 1 / (t * h * w) and 0 < flops <= 1, (model, method, budget, rest)
    assert "finetuned by the study from tiny_hybrid" in proc.stdout


@pytest.fixture(scope="module")
def real_class_checkpoints(tmp_path_factory):
    """The two paper models' classes as tiny random checkpoints (model + processor), with an overlay config
    pointing config/paper.yaml's models at them."""
    root = tmp_path_factory.mktemp("paper_models")
    cases = {"nemotron_nano_vl": nemotron_case(), "qwen2_5_vl_7b": qwen_case()}
    for name, case in cases.items():
        case.model.save_pretrained(root / name)
        case.processor.save_pretrained(root / name)
    overlay = root / "models.yaml"
    overlay.write_text(yaml.safe_dump({"models": {
        "nemotron_nano_vl": {"kind": "nemotron_h_omni", "path": str(root / "nemotron_nano_vl")},
        "qwen2_5_vl_7b": {"kind": "qwen2_5_vl", "path": str(root / "qwen2_5_vl_7b")}}}))
    return root, overlay, cases


def test_the_paper_config_checks_on_checkpoints_of_the_real_classes(real_class_checkpoints):
    root, overlay, cases = real_class_checkpoints
    proc = check_model("--configfile", "config/paper.yaml", str(overlay))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    max_frames, (height, width) = paper["frames"]["max_frames"], paper["frames"]["size"]
    for name, case in cases.items():
        # the grid the loaded model encodes paper-sized frames into, at the most frames fps sampling gives
        t, h, w = case.adapter.encode_video(frames(max_frames, height, width)).shape
        assert f"vision tokens: {t} x {h} x {w} = {t * h * w} for fps sampling" in proc.stdout, name
        assert f"layers {layer_pattern(case.adapter.stack.layer_types)} " in proc.stdout
        rows = method_lines(proc.stdout, name)
        assert {m for m, _ in rows} == set(paper["inference"]["methods"]), name
        assert rows[("framefusion", 0.25)].startswith("decided per video")


def test_a_missing_path_or_the_wrong_architecture_fails_naming_the_model(real_class_checkpoints):
    root, _, _ = real_class_checkpoints
    proc = check_model("--configfile", "config/paper.yaml")  # its checkpoints are not on this machine
    assert proc.returncode == 1
    assert "nemotron_nano_vl: FAILED: models.nemotron_nano_vl.path: model checkpoint 'checkpoints/nemotron-nano-vl' " \
           "does not exist" in proc.stdout
    assert "failed: nemotron_nano_vl, qwen2_5_vl_7b" in proc.stderr
    swapped = root / "swapped.yaml"
    swapped.write_text(yaml.safe_dump({"models": {"nemotron_nano_vl": {"kind": "nemotron_h_omni",
                                                                       "path": str(root / "qwen2_5_vl_7b")}}}))
    proc = check_model("--configfile", "config/paper.yaml", str(swapped), "--models", "nemotron_nano_vl")
    assert proc.returncode == 1
    assert re.search(r"nemotron_nano_vl: FAILED: models.nemotron_nano_vl: the checkpoint at \S+ is a 'qwen2_5_vl' "
                     r"model; this adapter \(NemotronHOmniAdapter\) reads '\w+'", proc.stdout), proc.stdout
    proc = check_model("--configfile", "no/such.yaml")
    assert proc.returncode == 2 and "--configfile no/such.yaml: no such file" in proc.stderr
