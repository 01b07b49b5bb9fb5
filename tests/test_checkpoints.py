"""The shipped checkpoints (checkpoints/): made by the pretraining recipe in the repository (config/pretrain-tiny.yaml),
as their provenance says, and as accurate on freshly rendered validation videos as it records; and the recipe
itself is deterministic (a few steps twice give bit-identical weights)."""

import json

import pytest
import torch
import yaml
from conftest import REPO, run_snakemake
from safetensors.torch import load_file

from hybridreduce.config import load_config, training_data
from hybridreduce.dataset.synthetic import SyntheticSpec
from hybridreduce.models.adapter import TinyVLMAdapter
from hybridreduce.models.provenance import read_provenance, recipe, recipe_hash
from hybridreduce.training import Pool, evaluate

PRETRAIN = REPO / "config" / "pretrain-tiny.yaml"
CONFIG = load_config(str(REPO), str(PRETRAIN))
SHIPPED = CONFIG["pretraining"]["models"]
# Well above the 4-option chance of 0.25. Issue 20's target is 0.9 on every question type; the shipped checkpoints
# reach about 0.8 with location near chance (docs/pretraining.md), so the target itself is not asserted here.
TRAINED = 0.7


@pytest.mark.parametrize("model", SHIPPED)
def test_the_shipped_checkpoint_was_made_by_the_recipe_in_the_repository(model):
    path = REPO / CONFIG["pretraining"]["out_dir"] / model
    prov = read_provenance(str(path))
    assert prov is not None, f"{path} has no provenance.json"
    expected = recipe(CONFIG["models"][model], training_data(CONFIG, model), CONFIG["seed"])
    assert prov.recipe == expected and prov.recipe_hash == recipe_hash(expected)
    assert prov.code_commit and not prov.code_commit.endswith("+dirty")
    assert prov.val_accuracy["all"] >= TRAINED, prov.val_accuracy
    # the default study loads exactly these folders
    default = load_config(str(REPO))
    assert (REPO / default["models"][model]["path"]).resolve() == path.resolve()


@pytest.mark.parametrize("model", SHIPPED)
def test_the_shipped_checkpoint_scores_its_recorded_validation_accuracy_on_fresh_videos(model):
    torch.set_num_threads(2)
    path = REPO / CONFIG["pretraining"]["out_dir"] / model
    prov = read_provenance(str(path))
    adapter = TinyVLMAdapter(str(path))
    training = CONFIG["models"][model]["training"]
    spec = SyntheticSpec.for_split(CONFIG["dataset"]["synthetic"], "val", CONFIG["seed"])
    pool = Pool(spec, training["val_videos"], CONFIG["frames"]["num_frames"], adapter.model.config.image_size)
    measured = evaluate(adapter, pool)
    assert measured["all"] >= TRAINED
    for qtype, accuracy in prov.val_accuracy.items():
        assert measured[qtype] == pytest.approx(accuracy, abs=0.01), qtype


def test_pretraining_a_few_steps_twice_gives_bit_identical_weights(tmp_path):
    """The real pretraining target (config/pretrain-tiny.yaml through Snakemake), shortened to a few steps."""
    # the text-only retrieval stage (issue 28) included, at the recipe's sequence length
    short = {"pretraining": {"models": ["tiny_hybrid_retrieval"], "out_dir": "ckpt"},
             "models": {"tiny_hybrid_retrieval": {"training": {
                 "steps": 3, "batch_size": 4, "train_videos": 8, "val_videos": 4, "log_every": 1,
                 "retrieval": [{"seq_len": 1024, "steps": 2, "batch_size": 2, "lr": 0.002, "warmup": 1,
                                "log_every": 1, "val_sequences": 3}],
                 "stages": [{"num_frames": 64, "steps": 2, "batch_size": 2, "lr": 0.001, "warmup": 1}]}}}}
    weights = []
    for run in ("a", "b"):
        workdir = tmp_path / run
        workdir.mkdir()
        (workdir / "short.yaml").write_text(yaml.safe_dump(short))
        run_snakemake(workdir, None, "--configfile", str(PRETRAIN), "short.yaml")
        weights.append(load_file(workdir / "ckpt" / "tiny_hybrid_retrieval" / "model.safetensors"))
        prov = json.loads((workdir / "ckpt" / "tiny_hybrid_retrieval" / "provenance.json").read_text())
        assert [r["num_frames"] for r in prov["curve"] if r["split"] == "val"] == [16] * 5 + [64] * 5
        # the retrieval stage's held-out accuracy per task, steps counted on into the video stages
        text_val = [r for r in prov["curve"] if r["split"] == "retrieval_val"]
        assert sorted(r["qtype"] for r in text_val) == ["all", "copy", "count", "mqar"]
        assert {r["step"] for r in text_val} == {2}
        assert min(r["step"] for r in prov["curve"] if r["split"] == "train") == 3
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_code_commit_flags_changed_code_not_a_checkpoint_being_rewritten(tmp_path):
    import subprocess

    from hybridreduce.models.provenance import code_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("steps = 1\n")
    (tmp_path / "checkpoints" / "m").mkdir(parents=True)
    (tmp_path / "checkpoints" / "m" / "model.safetensors").write_bytes(b"old weights")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    # Snakemake deletes the output folder before the job that rewrites it: the code is unchanged
    (tmp_path / "checkpoints" / "m" / "model.safetensors").unlink()
    assert code_commit(str(tmp_path / "src")) == head
    (tmp_path / "src" / "train.py").write_text("steps = 2\n")
    assert code_commit(str(tmp_path / "src")) == head + "+dirty"

