"""Qwen3.5 (Gated DeltaNet + gated full attention, 3:1) through the layer-wise decoder interface, checked against
transformers' real classes on tiny random configs (float32, CPU).

The proofs: the stack run layer by layer gives the logits of the model's own forward (with the full sequence, and
with dropped tokens at their original positions); reduced prefills process exactly the planned vision tokens per
layer; a stage at a DeltaNet layer (or an attention layer) keeps the top tokens of that layer's own score on its
input; the Qwen3.5 attention score equals the module's own attention probabilities.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

from hybridreduce.errors import ConfigError
from hybridreduce.models import DELTANET, stack_for
from hybridreduce.models.stack import ATTENTION, Qwen3_5Stack, SeqState, layer_pattern
from hybridreduce.reduction.deltanet import deltanet_importance, gated_attention_importance
from hybridreduce.reduction.engine import PromptLayout, Scorer, prefill
from hybridreduce.reduction.methods import method_prefill, plan
from hybridreduce.reduction.schedule import Schedule
from hybridreduce.scoring.flops import layer_flops

VOCAB, LENGTH = 64, 56
LAYOUT = PromptLayout(vision_idx=torch.arange(4, 44), query_idx=torch.arange(44, 56))
TYPES = ["linear_attention"] * 3 + ["full_attention"] + ["linear_attention"] * 3 + ["full_attention"]


def text_config(attn: str = "sdpa", **kwargs) -> Qwen3_5TextConfig:
    return Qwen3_5TextConfig(**{
        "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": len(TYPES),
        "layer_types": TYPES, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16,
        "linear_value_head_dim": 8, "linear_conv_kernel_dim": 4, "attn_implementation": attn,
        # M-RoPE on 4 of the 16 head channels (partial_rotary_factor 0.25, as Qwen3.5): sections sum to 2
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                            "mrope_section": [1, 1, 0]},
    } | kwargs)


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights a fresh init leaves degenerate: zero-centred norm weights (all zero: a norm of ones), the DeltaNet
    gates and betas (slow and fast heads), so the checks see every term."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # the layers' pre-norms, q/k norms, final and gated norms
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("A_log"):
                p.copy_(torch.log(torch.rand(p.shape, generator=g) * 0.5 + 0.02))
            elif name.endswith("dt_bias"):
                p.copy_(torch.randn(p.shape, generator=g) - 1.0)
            elif name.endswith(("in_proj_b.weight", "in_proj_a.weight")):
                p.mul_(4.0)
    return model


def qwen3_5(attn: str = "sdpa") -> Qwen3_5ForCausalLM:
    torch.manual_seed(0)
    return randomise(Qwen3_5ForCausalLM(text_config(attn))).eval()


@pytest.fixture(scope="module")
def model() -> Qwen3_5ForCausalLM:
    return qwen3_5()


def embeds_for(model, length: int = LENGTH) -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (1, length), generator=torch.Generator().manual_seed(1))
    return model.get_input_embeddings()(ids)


def mrope_positions(length: int = LENGTH) -> torch.Tensor:
    """``(3, L)`` ids as a video prompt has them: text steps on all axes, a 2 x 4 x 5 grid in the vision block."""
    t, h, w = torch.meshgrid(torch.arange(2), torch.arange(4), torch.arange(5), indexing="ij")
    vision = torch.stack([t.flatten(), h.flatten(), w.flatten()]) + 4
    text_after = torch.arange(length - 44)[None].expand(3, -1) + int(vision.max()) + 1
    return torch.cat([torch.arange(4)[None].expand(3, -1), vision, text_after], dim=1)


def test_stack_types_each_layer_by_its_token_mixer(model):
    stack = stack_for(model)
    assert isinstance(stack, Qwen3_5Stack)
    assert stack.layer_types == [DELTANET] * 3 + [ATTENTION] + [DELTANET] * 3 + [ATTENTION]
    assert layer_pattern(stack.layer_types) == "DDD*DDD*"


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_reduction_reproduces_the_models_own_logits(attn):
    model = qwen3_5(attn)
    embeds = embeds_for(model)
    with torch.no_grad():
        reference = model(inputs_embeds=embeds).logits[0, -1]
    out = prefill(stack_for(model), embeds, LAYOUT)
    torch.testing.assert_close(out.logits, reference, rtol=1e-5, atol=1e-6)
    assert out.vision_per_layer == [40] * len(TYPES)


def test_no_reduction_with_mrope_positions_reproduces_the_models_own_logits(model):
    embeds, pos = embeds_for(model), mrope_positions()
    with torch.no_grad():
        reference = model(inputs_embeds=embeds, position_ids=pos[:, None]).logits[0, -1]
        plain = model(inputs_embeds=embeds).logits[0, -1]
    layout = PromptLayout(vision_idx=LAYOUT.vision_idx, query_idx=LAYOUT.query_idx, position_ids=pos)
    out = prefill(stack_for(model), embeds, layout)
    torch.testing.assert_close(out.logits, reference, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(plain, reference, atol=1e-4)  # the M-RoPE ids do reach the attention layers


def test_dropping_at_the_input_is_removal_with_original_positions(model):
    """A stage at layer 0 equals the model run on the kept tokens only, at their original positions: the DeltaNet
    layers run their conv and recurrence over the shorter sequence."""
    embeds = embeds_for(model)
    kept_vision = torch.tensor([4, 9, 10, 20, 33, 43])
    keep = torch.cat([torch.arange(4), kept_vision, torch.arange(44, LENGTH)])
    schedule = Schedule("fixed", (0,), (len(kept_vision),), len(TYPES), 40)
    out = prefill(stack_for(model), embeds, LAYOUT, schedule, fixed_keep={0: kept_vision})
    with torch.no_grad():
        reference = model(inputs_embeds=embeds[:, keep], position_ids=keep[None],
                          attention_mask=torch.ones(1, len(keep), dtype=torch.long)).logits[0, -1]
    torch.testing.assert_close(out.logits, reference, rtol=1e-5, atol=1e-6)
    assert out.vision_per_layer[0] == len(kept_vision)


def test_dropping_later_equals_the_layers_run_by_hand_on_the_kept_tokens(model):
    """A stage at layer 2 (a DeltaNet layer) keeps the tokens' positions for the attention layers after it."""
    stack, embeds, pos = stack_for(model), embeds_for(model), mrope_positions()
    kept_vision = torch.tensor([5, 6, 17, 30, 41])
    keep = torch.cat([torch.arange(4), kept_vision, torch.arange(44, LENGTH)])
    layout = PromptLayout(vision_idx=LAYOUT.vision_idx, query_idx=LAYOUT.query_idx, position_ids=pos)
    out = prefill(stack, embeds, layout, Schedule("fixed", (2,), (5,), len(TYPES), 40), fixed_keep={2: kept_vision})
    decoder = model.model
    with torch.no_grad():
        h, rotary = embeds, decoder.rotary_emb(embeds, pos[:, None])
        for i, layer in enumerate(decoder.layers):
            if i == 2:
                h, rotary = h[:, keep], tuple(r[:, keep] for r in rotary)
            n = h.shape[1]  # attention layers: an additive causal mask (1, 1, n, n); DeltaNet layers: none
            causal = torch.zeros(n, n).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
            mask = None if TYPES[i] == "linear_attention" else causal[None, None]
            h = layer(h, position_embeddings=rotary, attention_mask=mask)
        reference = model.lm_head(decoder.norm(h))[0, -1]
    torch.testing.assert_close(out.logits, reference, rtol=1e-5, atol=1e-6)
    assert out.vision_per_layer == [40, 40] + [5] * 6


# On 8 layers: attention_only's first stage is layer 3 (the first attention layer), too late for 0.25 with the
# paper's schedule; PDrop's last stage would keep 1 token, under the floor of min_layer_share.
INFEASIBLE = {("attention_only", 0.25), ("pdrop", 0.25)}


@pytest.mark.parametrize("method", ["hybrid_progressive", "mamba_decay", "attention_only", "fastv", "pdrop",
                                    "random", "uniform_ratio", "zero_out"])
@pytest.mark.parametrize("budget", [0.5, 0.25])
def test_reduced_prefill_follows_its_schedule(model, method, budget):
    stack = stack_for(model)
    if (method, budget) in INFEASIBLE:
        with pytest.raises(ConfigError, match="budget 0.25"):
            plan(method, stack.layer_types, budget, 40, {})
        return
    schedule, scorer = plan(method, stack.layer_types, budget, 40, {})
    result = method_prefill(method, stack, embeds_for(model), LAYOUT, schedule, scorer, budget, {},
                            torch.arange(40))()
    assert result.vision_per_layer == schedule.tokens_per_layer()
    assert torch.isfinite(result.logits).all()
    if method == "attention_only":  # skips the DeltaNet layers, like Mamba-2 layers
        assert all(stack.layer_types[i] == ATTENTION for i in schedule.stage_layers)
    elif method in ("hybrid_progressive", "mamba_decay"):
        assert any(stack.layer_types[i] == DELTANET for i in schedule.stage_layers)


def _layer_input(stack, embeds, layer: int) -> tuple[torch.Tensor, dict]:
    """The input of ``layer`` in an unreduced run, and its context."""
    hidden = embeds
    ctx = stack.begin(hidden, SeqState(torch.arange(LENGTH), torch.arange(LENGTH)))
    with torch.no_grad():
        for i in range(layer):
            hidden = stack.run_layer(i, hidden, ctx)
    return hidden, ctx


@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("layer", [0, 2])
def test_stage_at_a_deltanet_layer_keeps_the_top_tokens_of_its_score(model, layer, decay):
    stack, embeds = stack_for(model), embeds_for(model)
    out = prefill(stack, embeds, LAYOUT, Schedule("fixed", (layer,), (10,), len(TYPES), 40),
                  Scorer("unified", mamba_decay=decay))
    # the stage layer's input as an unreduced prefill's observer sees it (the same layers before the stage)
    seen = {}
    prefill(stack, embeds, LAYOUT, observer=lambda i, h, ctx, s: seen.setdefault(i, h))
    hidden = seen[layer]
    torch.testing.assert_close(hidden, _layer_input(stack, embeds, layer)[0])
    block = model.model.layers[layer]
    with torch.no_grad():
        scores = deltanet_importance(block.linear_attn, block.input_layernorm(hidden), query_idx=LAYOUT.query_idx,
                                     vision_idx=LAYOUT.vision_idx, decay=decay)
    expected = LAYOUT.vision_idx[torch.argsort(scores, descending=True, stable=True)[:10]].sort().values
    assert torch.equal(out.stage_keep[layer], expected)


def test_stage_at_an_attention_layer_keeps_the_top_tokens_of_its_score(model):
    stack, embeds, layer = stack_for(model), embeds_for(model), 3
    out = prefill(stack, embeds, LAYOUT, Schedule("fixed", (layer,), (10,), len(TYPES), 40), Scorer("unified"))
    hidden, ctx = _layer_input(stack, embeds, layer)
    block = model.model.layers[layer]
    with torch.no_grad():
        scores = gated_attention_importance(block.self_attn, block.input_layernorm(hidden), LAYOUT.query_idx,
                                            LAYOUT.vision_idx, ctx["rotary"])
    expected = LAYOUT.vision_idx[torch.argsort(scores, descending=True, stable=True)[:10]].sort().values
    assert torch.equal(out.stage_keep[layer], expected)


def test_gated_attention_score_is_the_modules_own_attention_probabilities():
    """Against ``Qwen3_5Attention``'s eager attention weights (gate, q/k norms, partial M-RoPE all in play)."""
    model = qwen3_5("eager")
    stack, embeds, layer, pos = stack_for(model), embeds_for(model), 3, mrope_positions()
    layout = PromptLayout(vision_idx=LAYOUT.vision_idx, query_idx=LAYOUT.query_idx, position_ids=pos)
    seen = {}
    prefill(stack, embeds, layout, observer=lambda i, h, ctx, s: seen.setdefault(i, (h, ctx)))
    hidden, ctx = seen[layer]
    block = model.model.layers[layer]
    with torch.no_grad():
        normed = block.input_layernorm(hidden)
        _, weights = block.self_attn(normed, ctx["rotary"], ctx["mask"])  # (1, heads, L, L)
        score = gated_attention_importance(block.self_attn, normed, LAYOUT.query_idx, LAYOUT.vision_idx,
                                           ctx["rotary"])
    expected = weights[0][:, LAYOUT.query_idx].mean(dim=(0, 1))[LAYOUT.vision_idx]
    torch.testing.assert_close(score, expected / expected.sum(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("option", ["mamba_signed", "mamba_head_max", "mamba_x_norm", "mamba_clip"])
def test_mamba_only_variants_are_refused_on_deltanet_layers(model, option):
    stack = stack_for(model)
    schedule, scorer = plan(option, stack.layer_types, 0.5, 40, {})
    with pytest.raises(ConfigError, match=f"{option}.*Gated DeltaNet"):
        prefill(stack, embeds_for(model), LAYOUT, schedule, scorer)


def test_flops_of_deltanet_and_gated_attention_layers(model):
    stack, n = stack_for(model), 50
    delta, attn = model.model.layers[0], model.model.layers[3]
    mixer = delta.linear_attn
    linear = sum(m.weight.numel() for m in delta.modules() if isinstance(m, torch.nn.Linear))
    expected = (2 * n * linear + 6 * n * mixer.num_v_heads * mixer.head_k_dim * mixer.head_v_dim
                + 2 * n * mixer.conv_dim * mixer.conv_kernel_size)
    assert layer_flops(stack, 0, n) == expected
    linear = sum(m.weight.numel() for m in attn.modules() if isinstance(m, torch.nn.Linear))
    assert layer_flops(stack, 3, n) == 2 * n * linear + 2 * 4 * 16 * n * n  # 4 query heads, not 8 (the gate rows)


# --------------------------------------------------------------------------------------------------------------
# the VLM adapter (Qwen3_5ForConditionalGeneration)
# --------------------------------------------------------------------------------------------------------------
def vlm_case():
    from test_hf_vlms import CHAT, tokenizer
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from hybridreduce.models.hf_vlms import Qwen35Adapter

    tok = tokenizer()
    ids = tok.convert_tokens_to_ids
    text = text_config(vocab_size=len(tok)).to_dict()
    config = Qwen3_5Config(
        text_config=text,
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "num_position_embeddings": 64},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    torch.manual_seed(0)
    model = Qwen3_5ForConditionalGeneration(config).eval()
    randomise(model.model.language_model)
    size = {"shortest_edge": 64 * 64, "longest_edge": 128 * 128}
    video = Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2, merge_size=2, size=size,
                                  do_sample_frames=False)
    image = Qwen2VLImageProcessor(patch_size=16, temporal_patch_size=2, merge_size=2, size=size)
    processor = Qwen3VLProcessor(image_processor=image, tokenizer=tok, video_processor=video, chat_template=CHAT)
    return Qwen35Adapter.from_components(model, processor), model


@pytest.fixture(scope="module")
def vlm():
    return vlm_case()


def _video(n: int, h: int = 96, w: int = 128):
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@torch.no_grad()
@pytest.mark.parametrize("num_frames", [2, 4])
def test_vlm_prefill_reproduces_the_models_own_forward(vlm, num_frames):
    """The model's own forward on the adapter's ids with the video's pixels. One temporal step: the model computes
    its own M-RoPE ids. Two: its get_rope_index cannot place a contiguous block of several steps, so the ids come
    from get_rope_index with each step its own vision group (the second typed and gridded as an image), which
    places consecutive steps as the adapter does."""
    from test_hf_vlms import OPTIONS, QUESTION

    adapter, model = vlm

    video = _video(num_frames)
    grid = adapter.encode_video(video)
    prompt = adapter.build_prompt(grid, None, QUESTION, OPTIONS)
    inputs = adapter.video_processor(videos=[video], return_tensors="pt", do_sample_frames=False)
    thw = inputs["video_grid_thw"]
    assert tuple(grid.shape) == (thw[0, 0], thw[0, 1] // 2, thw[0, 2] // 2) == adapter.grid_shape(num_frames, 96, 128)
    input_ids = adapter.full_input_ids(grid.shape, QUESTION, OPTIONS)
    token_type = (input_ids == adapter.vision_token_id).int() * 2
    kwargs = {}
    if grid.shape[0] > 1:
        per_step = int(grid.shape[1] * grid.shape[2])
        start = int(prompt.layout.vision_idx[0])
        split = token_type.clone()
        split[0, start + per_step: start + 2 * per_step] = 1
        step = torch.tensor([[1, thw[0, 1], thw[0, 2]]])
        pos, _ = model.model.get_rope_index(input_ids, mm_token_type_ids=split, image_grid_thw=step,
                                            video_grid_thw=step)
        torch.testing.assert_close(pos[:, 0], prompt.layout.position_ids, rtol=0, atol=0)
        kwargs["position_ids"] = pos
    own = model(input_ids=input_ids, pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=thw,
                mm_token_type_ids=token_type, **kwargs).logits[0, -1]
    result = prefill(adapter.stack, prompt.embeds, prompt.layout)
    torch.testing.assert_close(result.logits, own, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("budget", [0.5, 0.25])
def test_vlm_reduced_run_follows_schedule(vlm, budget):
    from test_hf_vlms import OPTIONS, QUESTION

    adapter, _ = vlm
    prompt = adapter.build_prompt(adapter.encode_video(_video(4)), None, QUESTION, OPTIONS)
    n = prompt.num_vision_full
    schedule, scorer = plan("hybrid_progressive", adapter.stack.layer_types, budget, n, {})
    result = prefill(adapter.stack, prompt.embeds, prompt.layout, schedule, scorer)
    assert result.vision_per_layer == schedule.tokens_per_layer()


def test_vlm_kind_is_registered_and_loads_without_weights(vlm, tmp_path):
    from hybridreduce.models import ADAPTERS, load_adapter

    adapter, model = vlm
    assert "qwen3_5" in ADAPTERS
    model.save_pretrained(tmp_path)
    adapter.processor.save_pretrained(tmp_path)
    bare = load_adapter("q", {"kind": "qwen3_5", "path": str(tmp_path)}, weights=False)
    assert all(p.device.type == "meta" for p in bare.model.parameters())
    assert bare.stack.layer_types == adapter.stack.layer_types
    assert bare.grid_shape(4, 96, 128) == adapter.encode_video(_video(4)).shape
