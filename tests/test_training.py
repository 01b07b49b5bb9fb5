"""Training the tiny VLMs: the loss goes down, runs are deterministic, checkpoints round-trip."""

import pytest
import torch

from hybridreduce.dataset.synthetic import SyntheticSpec
from hybridreduce.models.adapter import TinyVLMAdapter
from hybridreduce.models.build import new_tiny_model
from hybridreduce.training import Pool, train, train_tiny_model

SPEC = {"duration_s": 6.0, "fps": 4, "width": 56, "height": 56, "event_duration_s": 1.5}
LLM = {"nemotron_h": {"family": "nemotron_h", "pattern": "M*M-", "hidden_size": 32},
       "qwen2": {"family": "qwen2", "num_layers": 2, "hidden_size": 32}}


def model_cfg(family, **training):
    return {"image_size": 56, "patch_size": 28, "llm": LLM[family],
            "training": {"steps": 40, "batch_size": 8, "lr": 3e-3, "log_every": 10, "warmup": 5,
                         "train_videos": 64, "val_videos": 16, **training}}


@pytest.fixture(scope="module")
def pools():
    return (Pool(SyntheticSpec.from_config({**SPEC, "split": "train"}, 0), 64, 4, 56),
            Pool(SyntheticSpec.from_config({**SPEC, "split": "val"}, 0), 16, 4, 56))


@pytest.mark.parametrize("family", ["nemotron_h", "qwen2"])
def test_loss_decreases_and_training_is_deterministic(pools, family):
    def run():
        torch.set_num_threads(1)
        model, tok = new_tiny_model(model_cfg(family), seed=0)
        return list(train(TinyVLMAdapter.from_model(model, tok), *pools, model_cfg(family)["training"], seed=0))

    log = run()
    train_rows = [r for r in log if r["split"] == "train"]
    val = {r["qtype"]: r["accuracy"] for r in log if r["split"] == "val"}
    assert len(train_rows) == 4 and set(val) == {"all", "colour", "location", "count", "order"}
    assert all(0 <= a <= 1 for a in val.values())
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert [r["loss"] for r in train_rows] == [r["loss"] for r in run() if r["split"] == "train"]


def test_trained_checkpoint_round_trips_through_from_pretrained(tmp_path):
    cfg = model_cfg("nemotron_h", steps=5)
    log = list(train_tiny_model(cfg, SPEC, 4, str(tmp_path), seed=0))
    assert log[-1]["split"] == "val"
    loaded = TinyVLMAdapter(str(tmp_path))
    # the same training run in memory gives the same weights as the saved checkpoint
    model, tok = new_tiny_model(cfg, seed=0)
    in_memory = TinyVLMAdapter.from_model(model, tok)
    spec = {k: v for k, v in SPEC.items()}
    train_pool = Pool(SyntheticSpec.from_config({**spec, "split": "train"}, 0), 64, 4, 56)
    val_pool = Pool(SyntheticSpec.from_config({**spec, "split": "val"}, 0), 16, 4, 56)
    list(train(in_memory, train_pool, val_pool, cfg["training"], seed=0))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_finetuning_under_reduction_runs_through_the_reduction_loop(pools):
    cfg = model_cfg("nemotron_h", steps=3, log_every=1, reduction_budgets=[0.5, 0.25])
    model, tok = new_tiny_model(cfg, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log = list(train(TinyVLMAdapter.from_model(model, tok), *pools, cfg["training"], seed=0,
                     reduction_cfg={"first_layer": 1, "num_stages": 1}))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log if r["split"] == "train")
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_training_questions_are_answerable_from_the_ground_truth():
    spec = SyntheticSpec.from_config({**SPEC, "split": "train"}, 0)
    pool = Pool(spec, 40, 4, 56)
    for sample, turns in zip(pool.samples, pool.turns):
        asked = [e for e in sample.events if e["role"] == "target"]  # the white distractors are never asked about
        questions = {question.split()[0] for question, _, _ in turns}
        assert questions == ({"What", "Where", "How", "Which"} if len(asked) == 1 else {"Where", "How", "Which"})
        for question, options, letter in turns:
            answer = options["ABCD".index(letter)]
            if question.startswith("How many"):
                assert answer == str(len(asked))
            elif question.startswith("Which colour"):
                assert answer == min(asked, key=lambda e: e["start_s"])["colour"]
            elif question.startswith("Where"):
                named = [e for e in sample.events if f"the {e['colour']} {e['shape']} " in question]
                assert len(named) == 1 and answer == named[0]["quadrant"]
            else:
                assert answer == asked[0]["colour"]


def test_a_conversation_of_one_turn_is_the_benchmark_prompt():
    model, tok = new_tiny_model(model_cfg("qwen2"), seed=0)
    adapter = TinyVLMAdapter.from_model(model, tok)
    vision = torch.randn(12, 32)
    single, num_prefix, num_query = adapter.embed_prompt(vision, "How many shapes appeared?", ["1", "2", "3", "4"])
    turns = [("How many shapes appeared?", ["1", "2", "3", "4"], "B"),
             ("Which colour appeared first?", ["red", "green", "blue", "yellow"], "C")]
    row, ends = adapter.embed_conversation(vision, turns)
    assert ends[0] == num_prefix + 12 + num_query - 1 and ends[1] == len(row) - 1
    torch.testing.assert_close(row[: len(single)], single)  # the first turn is exactly the benchmark prompt
    colon = adapter.stack.embed_tokens(torch.tensor([tok.convert_tokens_to_ids(":")]))[0]
    for end in ends:  # every answer is predicted after "answer :"
        torch.testing.assert_close(row[end], colon)
    answer_b = adapter.stack.embed_tokens(torch.tensor([tok.convert_tokens_to_ids("B")]))[0]
    torch.testing.assert_close(row[ends[0] + 1], answer_b)  # earlier answers are given as text


def test_finetuning_starts_from_the_base_checkpoint(tmp_path):
    base_cfg = model_cfg("nemotron_h", steps=3)
    list(train_tiny_model(base_cfg, SPEC, 4, str(tmp_path / "base"), seed=0))
    ft_cfg = {"training": {"init_from": "base", "reduction_budgets": [0.5], "steps": 1, "batch_size": 2,
                           "lr": 1e-4, "train_videos": 8, "val_videos": 4}}
    log = list(train_tiny_model(ft_cfg, SPEC, 4, str(tmp_path / "ft"), seed=0,
                                reduction_cfg={"first_layer": 1, "num_stages": 1},
                                init_from=str(tmp_path / "base")))
    assert {r["split"] for r in log} == {"train", "val"}
    base, ft = TinyVLMAdapter(str(tmp_path / "base")).model, TinyVLMAdapter(str(tmp_path / "ft")).model
    fresh, _ = new_tiny_model(base_cfg, seed=1)
    gap_to_base = sum((a - b).abs().sum() for a, b in zip(ft.parameters(), base.parameters()))
    gap_to_fresh = sum((a - b).abs().sum() for a, b in zip(ft.parameters(), fresh.parameters()))
    assert 0 < gap_to_base < gap_to_fresh / 100  # one small step away from the base


@pytest.mark.parametrize("models, message", [
    ({"ft": {"kind": "tiny", "training": {"init_from": "nope"}}}, "models.ft.training.init_from: unknown model 'nope'"),
    ({"a": {"kind": "tiny", "training": {"init_from": "b"}}, "b": {"kind": "tiny", "training": {"init_from": "a"}}},
     "leads back to"),
    ({"base": {"kind": "tiny"}, "ft": {"kind": "tiny", "llm": {}, "training": {"init_from": "base"}}},
     "models.ft: llm cannot be set on a model finetuned from 'base'"),
    ({"ckpt": {"kind": "tiny", "path": "some/folder", "training": {"steps": 1}}},
     r"models.ckpt: a model loaded from its path \('some/folder'\) is not trained by the study"),
])
def test_bad_init_from_is_rejected_with_its_field(models, message):
    from hybridreduce.config import base_model
    from hybridreduce.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        for name in models:
            base_model({"models": models}, name)


def test_pointing_a_model_at_a_checkpoint_needs_only_its_path(tmp_path):
    """The default study's models are shipped checkpoints; a study that points one at another folder sets its path
    and nothing else, and the finetuned copy then starts from that folder."""
    from conftest import REPO

    from hybridreduce.config import base_model, load_config, model_paths

    override = tmp_path / "mine.yaml"
    override.write_text("models:\n  tiny_hybrid: {path: my/checkpoint}\n")
    config = load_config(str(REPO), str(override))
    assert base_model(config, "tiny_hybrid_ft") == "tiny_hybrid"
    assert model_paths(config, "results/default", str(REPO))["tiny_hybrid"] == "my/checkpoint"


def test_an_unreachable_finetuning_budget_fails_before_training(pools):
    from hybridreduce.errors import ConfigError

    cfg = model_cfg("nemotron_h", steps=3, reduction_budgets=[0.5, 0.01])
    model, tok = new_tiny_model(cfg, seed=0)
    with pytest.raises(ConfigError, match=r"training.reduction_budgets: 0.01 cannot be reached"):
        next(train(TinyVLMAdapter.from_model(model, tok), *pools, cfg["training"], seed=0,
                   reduction_cfg={"first_layer": 1, "num_stages": 1}))


def test_training_stages_continue_the_run_with_their_own_settings(tmp_path):
    # main run 10 steps, then a curriculum stage of 5 steps that weights location up (training.stages)
    cfg = model_cfg("qwen2", steps=10, log_every=5,
                    stages=[{"steps": 5, "lr": 1e-3, "warmup": 1, "qtype_weights": {"location": 4.0}}])
    log = list(train_tiny_model(cfg, SPEC, 4, str(tmp_path), seed=0))
    train_rows = [r for r in log if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [5, 10, 15]
    assert [r["samples_seen"] for r in train_rows] == [40, 80, 120]
    assert sorted({r["step"] for r in log if r["split"] == "val"}) == [10, 15]  # validated after each stage
    elapsed = [r["elapsed_s"] for r in log]
    assert elapsed == sorted(elapsed)
    # the stage trained on: its checkpoint differs from the main run's alone
    main_only = model_cfg("qwen2", steps=10, log_every=5)
    list(train_tiny_model(main_only, SPEC, 4, str(tmp_path / "main"), seed=0))
    staged, plain = TinyVLMAdapter(str(tmp_path)).model, TinyVLMAdapter(str(tmp_path / "main")).model
    assert any(not torch.equal(a, b) for a, b in zip(staged.state_dict().values(), plain.state_dict().values()))


def test_question_type_weights_scale_each_question_in_the_loss(pools):
    model, tok = new_tiny_model(model_cfg("qwen2"), seed=0)
    adapter = TinyVLMAdapter.from_model(model, tok)
    cfg = {**model_cfg("qwen2")["training"], "steps": 1, "log_every": 1, "lr": 1e-12}
    plain = next(train(adapter, *pools, cfg, seed=0))["loss"]
    model.load_state_dict(new_tiny_model(model_cfg("qwen2"), seed=0)[0].state_dict())
    weighted = next(train(adapter, *pools, {**cfg, "qtype_weights": {"location": 1000.0}}, seed=0))["loss"]
    # the same batch (same seed); with location weighted ~1000x the loss is the mean over location questions alone
    model.load_state_dict(new_tiny_model(model_cfg("qwen2"), seed=0)[0].state_dict())
    only_location = next(train(adapter, *pools, {**cfg, "qtype_weights": {q: 1e-9 for q in
                                                                           ("colour", "count", "order")}}, seed=0))["loss"]
    assert weighted != pytest.approx(plain, rel=1e-4)
    assert weighted == pytest.approx(only_location, rel=1e-3)
