"""In-LLM ablations of issue 22, against references built from the models' own forward passes: ``zero_out`` (the
paper's method with the dropped tokens zeroed in place, not removed) and ``mamba_clip`` (the clip score of Zhan et
al., EMNLP 2024: the sum of a Mamba block's output clamped at 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridreduce.models import SeqState, load_adapter
from hybridreduce.models.build import build_tiny_model
from hybridreduce.models.stack import MAMBA
from hybridreduce.reduction.engine import Scorer, prefill, score_layer
from hybridreduce.reduction.methods import plan
from test_reduction import tiny_adapter  # noqa: F401 (a fixture: both tiny model kinds)

CFG = {"first_layer": 1, "num_stages": 2, "min_layer_share": 0}


def _prompt(adapter, seed: int = 0):
    frames = np.random.default_rng(seed).integers(0, 255, (8, 56, 56, 3), dtype=np.uint8)
    return adapter.build_prompt(adapter.encode_video(frames), None, "What colour was the circle that appeared?",
                                ["red", "green", "blue", "yellow"])


def zeroed_reference_logits(adapter, prompt, stage_keep: dict[int, torch.Tensor]) -> torch.Tensor:
    """The model's own forward (``model(inputs_embeds=...)``) with a pre-hook on every decoder layer that zeroes the
    hidden states of the vision tokens dropped at or before that layer: the definition of zeroing instead of
    removing. ``stage_keep``: stage layer -> the input indices of the vision tokens kept there."""
    stack, layout = adapter.stack, prompt.layout
    length = prompt.embeds.shape[1]
    dropped_from = {}
    for layer, kept in sorted(stage_keep.items()):
        alive = torch.zeros(length, dtype=torch.bool)
        alive[kept] = True
        for v in layout.vision_idx.tolist():
            if not alive[v]:
                dropped_from.setdefault(v, layer)

    def hook(layer: int):
        def zero(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            hidden = hidden.clone()
            for v, first in dropped_from.items():
                if layer >= first:
                    hidden[:, v] = 0
            return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})
        return zero

    handles = [m.register_forward_pre_hook(hook(i), with_kwargs=True) for i, m in enumerate(stack.layers)]
    try:
        kwargs = {} if layout.position_ids is None else {"position_ids": layout.position_ids[None]
                                                         if layout.position_ids.ndim == 1 else layout.position_ids}
        with torch.no_grad():
            return stack.model(inputs_embeds=prompt.embeds, **kwargs).logits[0, -1]
    finally:
        for h in handles:
            h.remove()


def test_zero_out_equals_the_models_own_forward_with_the_dropped_tokens_zeroed(tiny_adapter):
    prompt = _prompt(tiny_adapter)
    n = len(prompt.layout.vision_idx)
    schedule, scorer = plan("zero_out", tiny_adapter.stack.layer_types, 0.5, n, CFG)
    assert schedule.zero_out and len(schedule.stage_layers) == 2
    with torch.no_grad():
        result = prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, schedule, scorer)
    # each stage kept its count, and a later stage keeps a subset of an earlier one's tokens
    first, second = (result.stage_keep[layer] for layer in schedule.stage_layers)
    assert [len(first), len(second)] == list(schedule.keep_counts)
    assert set(second.tolist()) <= set(first.tolist()) <= set(prompt.layout.vision_idx.tolist())
    assert result.vision_per_layer == schedule.tokens_per_layer()
    reference = zeroed_reference_logits(tiny_adapter, prompt, result.stage_keep)
    torch.testing.assert_close(result.logits, reference, rtol=1e-4, atol=1e-4)


def test_zero_out_chooses_as_the_papers_method_where_nothing_differs_yet(tiny_adapter):
    """The first stage sees the same input under either method, so it keeps the same tokens; removing and zeroing
    then give different outputs (the sequence the later layers see differs)."""
    prompt = _prompt(tiny_adapter, seed=1)
    n = len(prompt.layout.vision_idx)
    layer_types = tiny_adapter.stack.layer_types
    with torch.no_grad():
        zeroed = prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, *plan("zero_out", layer_types, 0.5, n, CFG))
        removed = prefill(tiny_adapter.stack, prompt.embeds, prompt.layout,
                          *plan("hybrid_progressive", layer_types, 0.5, n, CFG))
    stage = min(removed.stage_keep)
    assert torch.equal(zeroed.stage_keep[stage], removed.stage_keep[stage])
    assert zeroed.vision_per_layer == removed.vision_per_layer
    assert not torch.allclose(zeroed.logits, removed.logits)


def test_zero_out_replays_its_reduction_when_generating(tiny_adapter):
    prompt = _prompt(tiny_adapter, seed=2)
    n = len(prompt.layout.vision_idx)
    schedule, scorer = plan("zero_out", tiny_adapter.stack.layer_types, 0.5, n, CFG)
    with torch.no_grad():
        first = prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, schedule, scorer)
        replay = prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, schedule, scorer,
                         fixed_keep=first.stage_keep)
    torch.testing.assert_close(replay.logits, first.logits)


@pytest.fixture(scope="module")
def hybrid_adapter(tmp_path_factory):
    path = tmp_path_factory.mktemp("hybrid")
    build_tiny_model({"image_size": 56, "llm": {"family": "nemotron_h", "pattern": "M*M-M*", "num_layers": 6}},
                     str(path), seed=0)
    return load_adapter("nemotron_h", {"kind": "tiny", "path": str(path)})


def reference_clip_score(stack, i: int, hidden: torch.Tensor, vision_idx: torch.Tensor) -> torch.Tensor:
    """The block's own forward (residual + mixer(norm(h))) minus its input is the mixer's output y; the clip score
    of token s is sum_d max(0, y[s, d]), normalised over the vision tokens."""
    index = torch.arange(hidden.shape[1])
    y = stack.run_layer(i, hidden, stack.begin(hidden, SeqState(index, index))) - hidden  # (1, L, D)
    ref = y[0, vision_idx].clamp_min(0).sum(-1)
    return ref / ref.sum()


def test_mamba_clip_score_is_the_clamped_sum_of_the_blocks_own_output(hybrid_adapter):
    stack, prompt = hybrid_adapter.stack, _prompt(hybrid_adapter, seed=3)
    layout = prompt.layout
    mamba_layers = [i for i, t in enumerate(stack.layer_types) if t == MAMBA]
    assert len(mamba_layers) >= 2
    hidden = prompt.embeds
    index = torch.arange(hidden.shape[1])
    with torch.no_grad():
        for i in range(len(stack.layers)):
            ctx = stack.begin(hidden, SeqState(index, index))
            if i in mamba_layers:
                args = (stack, i, hidden, ctx, layout.query_idx, layout.vision_idx, int(layout.query_idx.min()))
                ours = score_layer(*args, Scorer(mamba_clip=True), None)
                torch.testing.assert_close(ours, reference_clip_score(stack, i, hidden, layout.vision_idx),
                                           rtol=1e-4, atol=1e-6)
                assert not torch.allclose(ours, score_layer(*args, Scorer(), None))  # not the paper's score
            hidden = stack.run_layer(i, hidden, ctx)


@pytest.mark.parametrize("budget", [0.25, 0.5])
def test_mamba_clip_keeps_the_top_clip_scores_at_a_mamba_stage(hybrid_adapter, budget):
    stack, prompt = hybrid_adapter.stack, _prompt(hybrid_adapter, seed=4)
    n = len(prompt.layout.vision_idx)
    schedule, scorer = plan("mamba_clip", stack.layer_types, budget, n,
                            {"first_layer": 0, "num_stages": 1, "min_layer_share": 0})
    assert schedule.stage_layers == (0,) and stack.layer_types[0] == MAMBA
    with torch.no_grad():
        result = prefill(stack, prompt.embeds, prompt.layout, schedule, scorer)
        ref = reference_clip_score(stack, 0, prompt.embeds, prompt.layout.vision_idx)
    top = prompt.layout.vision_idx[torch.argsort(ref, descending=True, stable=True)[:schedule.keep_counts[0]]]
    assert sorted(result.stage_keep[0].tolist()) == sorted(top.tolist())
