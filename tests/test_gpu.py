"""The CUDA path, against the same model on the CPU: the layer-wise prefill, both importance scores and a reduced
prefill; and a reduced prefill captured in a CUDA graph. transformers' Mamba-2 mixer runs mamba-ssm's Triton scan
on the GPU when mamba-ssm imports, its PyTorch reference scan otherwise;
``test_mamba_ssm_runs_on_gpu_and_the_reference_on_cpu`` checks which one ran.

Skipped without a CUDA device (CI machines have none). Tolerances: float32 on both sides, but cuDNN convolutions and
Triton's float32 dot products use TF32 on the GPU (about 1e-3 relative).
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM

from hybridreduce.models.build import text_config
from hybridreduce.models.mamba_kernels import implementation
from hybridreduce.models.stack import ATTENTION, MAMBA, SeqState, stack_for
from hybridreduce.reduction.engine import PromptLayout, prefill
from hybridreduce.reduction.importance import attention_importance, mamba_importance
from hybridreduce.reduction.methods import plan

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI machines have none)")

PREFIX, VISION, QUERY = 8, 400, 16  # 424 tokens: several Mamba-2 chunks of 64, the last one partial
LLMS = {
    "nemotron_h": {"family": "nemotron_h", "pattern": "M*M-M*M-", "hidden_size": 128, "num_attention_heads": 4,
                   "ssm_state_size": 32, "mamba_num_heads": 8, "mamba_head_dim": 32, "n_groups": 2,
                   "chunk_size": 64},
    "qwen2": {"family": "qwen2", "num_layers": 4, "hidden_size": 128, "num_attention_heads": 4},
}
REL_TOL = 1e-2


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module", params=list(LLMS))
def pair(request):
    """The same random-weight decoder on the CPU and on the GPU, and one prompt for both."""
    torch.manual_seed(0)
    cpu = AutoModelForCausalLM.from_config(text_config(LLMS[request.param], vocab_size=256)).eval()
    gpu = copy.deepcopy(cpu).to("cuda")
    length = PREFIX + VISION + QUERY
    embeds = torch.randn(1, length, cpu.config.hidden_size, generator=torch.Generator().manual_seed(1))
    return cpu, gpu, embeds


def layout(device) -> PromptLayout:
    return PromptLayout(vision_idx=torch.arange(PREFIX, PREFIX + VISION, device=device),
                        query_idx=torch.arange(PREFIX + VISION, PREFIX + VISION + QUERY, device=device))


def test_prefill_on_gpu_matches_cpu(pair):
    cpu, gpu, embeds = pair
    on_cpu = prefill(stack_for(cpu), embeds, layout("cpu"))
    on_gpu = prefill(stack_for(gpu), embeds.cuda(), layout("cuda"))
    assert on_gpu.logits.is_cuda and torch.isfinite(on_gpu.logits).all()
    assert rel_err(on_gpu.logits, on_cpu.logits) < REL_TOL


def test_importance_scores_on_gpu_match_cpu(pair):
    """Every scoring layer type's score (attention; Mamba-2 without and with the decay term) at its first layer."""
    cpu, gpu, embeds = pair
    scores = {}
    for name, model, device in (("cpu", cpu, "cpu"), ("gpu", gpu, "cuda")):
        stack, h = stack_for(model), embeds.to(device)
        index = torch.arange(h.shape[1], device=device)
        ctx, lay = stack.begin(h, SeqState(index, index)), layout(device)
        for kind in (ATTENTION, MAMBA):
            if kind not in stack.layer_types:
                continue
            i = stack.layer_types.index(kind)
            hidden = h
            with torch.no_grad():
                for j in range(i):
                    hidden = stack.run_layer(j, hidden, ctx)
                mixer, normed = stack.mixer_input(i, hidden)
                if kind == ATTENTION:
                    scores[name, kind] = attention_importance(mixer, normed, lay.query_idx, lay.vision_idx,
                                                              ctx.get("rotary"))
                else:
                    for decay in (False, True):
                        scores[name, kind, decay] = mamba_importance(mixer, normed, lay.query_idx, lay.vision_idx,
                                                                     decay=decay)
    keys = [k[1:] for k in scores if k[0] == "gpu"]
    assert keys, "no scoring layer found"
    for key in keys:
        on_gpu, on_cpu = scores[("gpu", *key)], scores[("cpu", *key)]
        assert on_gpu.is_cuda and on_gpu.shape == (VISION,)
        assert rel_err(on_gpu, on_cpu) < REL_TOL, key
        top = VISION // 4  # the tokens a budget of 0.25 keeps: near-ties may swap, the set barely moves
        overlap = len(set(on_gpu.topk(top).indices.tolist()) & set(on_cpu.topk(top).indices.tolist())) / top
        assert overlap >= 0.95, (key, overlap)


def test_reduced_prefill_on_gpu_follows_the_schedule(pair):
    cpu, gpu, embeds = pair
    stack_cpu, stack_gpu = stack_for(cpu), stack_for(gpu)
    schedule, scorer = plan("hybrid_progressive", stack_gpu.layer_types, 0.25, VISION,
                            {"first_layer": 1, "num_stages": 3})
    on_gpu = prefill(stack_gpu, embeds.cuda(), layout("cuda"), schedule, scorer)
    on_cpu = prefill(stack_cpu, embeds, layout("cpu"), schedule, scorer)
    assert on_gpu.vision_per_layer == schedule.tokens_per_layer() == on_cpu.vision_per_layer
    assert torch.isfinite(on_gpu.logits).all()
    for layer, kept in on_cpu.stage_keep.items():
        same = len(set(kept.tolist()) & set(on_gpu.stage_keep[layer].tolist())) / len(kept)
        assert same >= 0.9, (layer, same)


def test_captured_reduced_prefill_replays_the_eager_one(pair):
    """A CUDA graph of the reduced prefill (scored, and replaying fixed kept tokens) gives the eager prefill's kept
    tokens and logits, on the input it was captured with and on a new one copied in. The capture itself shows that
    the prefill never synchronises: CUDA refuses any synchronisation while a stream is captured."""
    from hybridreduce.reduction.cuda_graph import CapturedPrefill

    _, gpu, embeds = pair
    stack = stack_for(gpu)
    schedule, scorer = plan("hybrid_progressive", stack.layer_types, 0.25, VISION, {"first_layer": 1, "num_stages": 3})
    lay = layout("cuda")
    first, second = embeds.cuda(), torch.randn_like(embeds).cuda()
    captured = CapturedPrefill(stack, first, lay, schedule, scorer)
    for h in (first, second, first):
        eager = prefill(stack, h, lay, schedule, scorer)
        replay = captured(h)
        assert replay.vision_per_layer == eager.vision_per_layer == schedule.tokens_per_layer()
        for layer, kept in eager.stage_keep.items():  # the same kernels: at most a near-tie may swap
            same = len(set(kept.tolist()) & set(replay.stage_keep[layer].tolist())) / len(kept)
            assert same >= 0.98, (layer, same)
        assert rel_err(replay.logits, eager.logits) < REL_TOL
    kept = prefill(stack, second, lay, schedule, scorer).stage_keep
    oracle = CapturedPrefill(stack, second, lay, schedule, fixed_keep=kept)
    replayed = prefill(stack, second, lay, schedule, fixed_keep=kept)
    assert rel_err(oracle().logits, replayed.logits) < REL_TOL


def test_mamba_ssm_runs_on_gpu_and_the_reference_on_cpu():
    """With mamba-ssm installed, the mixer takes its Triton scan on CUDA tensors (not silently the reference) and
    our CPU scan on CPU tensors (the CPU side of the tests above ran in this same process), transformers' PyTorch scan
    on CPU tensors with gradients."""
    if importlib.util.find_spec("mamba_ssm") is None:
        pytest.skip("mamba-ssm is not installed: the tests above ran transformers' PyTorch reference scan")
    assert implementation("mamba2_chunk_scan", "cuda").__module__.startswith("mamba_ssm")
    assert implementation("mamba2_chunk_scan", "cpu").__module__ == "hybridreduce.models.mamba_cpu"
    assert implementation("mamba2_chunk_scan", "cpu", training=True).__module__.startswith("transformers")
