"""In-LLM reduction: layer-wise prefill, schedules, the methods registry, on real transformers model classes."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM, NemotronHConfig, NemotronHForCausalLM, Qwen2Config, Qwen2ForCausalLM

from hybridreduce.errors import ConfigError
from hybridreduce.models import SeqState, load_adapter, stack_for
from hybridreduce.models.build import build_tiny_model, text_config
from hybridreduce.reduction.engine import PromptLayout, Scorer, greedy_generate, prefill
from hybridreduce.reduction.importance import attention_importance, mamba_importance
from hybridreduce.reduction.methods import REGISTRY, method_prefill, plan, realised_schedule
from hybridreduce.reduction.schedule import KINDS, Schedule, solve_schedule, stage_layers_for


def nemotron_h(attn: str = "sdpa") -> NemotronHForCausalLM:
    torch.manual_seed(0)
    cfg = NemotronHConfig(
        vocab_size=64, hidden_size=64, hybrid_override_pattern="M*M-M*-M", num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, intermediate_size=128, ssm_state_size=16, mamba_num_heads=4,
        mamba_head_dim=16, n_groups=2, chunk_size=16, attn_implementation=attn)
    return NemotronHForCausalLM(cfg).eval()


def qwen2(attn: str = "sdpa") -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, attn_implementation=attn)
    return Qwen2ForCausalLM(cfg).eval()


LAYOUT = PromptLayout(vision_idx=torch.arange(4, 44), query_idx=torch.arange(44, 56))


def embeds_for(model, length=56):
    ids = torch.randint(0, 64, (1, length), generator=torch.Generator().manual_seed(1))
    return model.get_input_embeddings()(ids)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("build", [nemotron_h, qwen2])
def test_no_reduction_reproduces_the_models_own_logits(build, attn):
    model = build(attn)
    embeds = embeds_for(model)
    with torch.no_grad():
        reference = model(inputs_embeds=embeds).logits[0, -1]
    out = prefill(stack_for(model), embeds, LAYOUT)
    torch.testing.assert_close(out.logits, reference, rtol=0, atol=1e-5)
    assert out.vision_per_layer == [40] * len(stack_for(model).layers)


@pytest.mark.parametrize("build", [nemotron_h, qwen2])
def test_dropping_at_the_input_is_removal_with_original_positions(build):
    """A stage at layer 0 that keeps some vision tokens equals the model run on only those tokens, at their
    original positions (not zero-masking, not renumbering)."""
    model = build()
    embeds = embeds_for(model)
    kept_vision = torch.tensor([4, 9, 10, 20, 33, 43])
    keep = torch.cat([torch.arange(4), kept_vision, torch.arange(44, 56)])
    schedule = Schedule("fixed", (0,), (len(kept_vision),), len(stack_for(model).layers), 40)
    out = prefill(stack_for(model), embeds, LAYOUT, schedule, fixed_keep={0: kept_vision})
    with torch.no_grad():
        reference = model(inputs_embeds=embeds[:, keep], position_ids=keep[None],
                          attention_mask=torch.ones(1, len(keep), dtype=torch.long)).logits[0, -1]
    torch.testing.assert_close(out.logits, reference, rtol=0, atol=1e-5)
    assert out.vision_per_layer[0] == len(kept_vision)


@pytest.mark.parametrize("build", [nemotron_h, qwen2])
def test_stage_keeps_the_top_scored_tokens_of_that_layer(build):
    model = build()
    stack = stack_for(model)
    embeds = embeds_for(model)
    scoring = [i for i, t in enumerate(stack.layer_types) if t != "mlp"]
    layer = scoring[1]
    schedule = Schedule("fixed", (layer,), (10,), len(stack.layers), 40)
    out = prefill(stack, embeds, LAYOUT, schedule, Scorer("unified"))
    # independent: run the layers before the stage, then score with the library functions
    hidden, ctx = embeds, None
    from hybridreduce.models.stack import SeqState

    state = SeqState(torch.arange(56), torch.arange(56))
    ctx = stack.begin(hidden, state)
    with torch.no_grad():
        for i in range(layer):
            hidden = stack.run_layer(i, hidden, ctx)
    mixer, normed = stack.mixer_input(layer, hidden)
    if stack.layer_types[layer] == "attention":
        scores = attention_importance(mixer, normed, LAYOUT.query_idx, LAYOUT.vision_idx, ctx.get("rotary"))
    else:
        scores = mamba_importance(mixer, normed, LAYOUT.query_idx, LAYOUT.vision_idx)
    expected = LAYOUT.vision_idx[torch.argsort(scores, descending=True, stable=True)[:10]].sort().values
    assert torch.equal(out.stage_keep[layer], expected)


@pytest.mark.parametrize("kind", KINDS)
def test_realised_budget_equals_request_within_one_token_per_layer(kind):
    for num_layers, n, stages, first, budget in itertools.product(
            [8, 12, 52], [64, 1000, 8192], [1, 2, 4], [0, 1, 2], [0.9, 0.5, 0.25, 0.1]):
        allowed = list(range(num_layers))
        try:
            sched = solve_schedule(kind, budget, num_layers, n, stage_layers_for(num_layers, stages, first, allowed))
        except ConfigError as e:
            assert "below the smallest reachable" in str(e)
            assert budget < (first + 1) / num_layers + 1 / n  # only when the layers before the first stage eat it
            continue
        assert abs(sum(sched.tokens_per_layer()) - budget * num_layers * n) <= num_layers, (num_layers, n, budget)
        counts = sched.keep_counts
        assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_progressive_prunes_more_at_each_later_stage_and_high_to_low_the_reverse():
    stages = stage_layers_for(32, 4, 2, list(range(32)))
    prog = solve_schedule("progressive", 0.35, 32, 4096, stages).keep_ratios
    assert all(a > b for a, b in zip(prog, prog[1:]))
    rev = solve_schedule("high_to_low", 0.35, 32, 4096, stages).keep_ratios
    assert all(a < b for a, b in zip(rev, rev[1:]))
    uni = solve_schedule("uniform", 0.35, 32, 4096, stages).keep_ratios
    assert max(uni) - min(uni) < 0.01


def test_stage_boundaries_skip_layers_that_cannot_score():
    types = ["mamba", "mlp", "mlp", "attention", "mamba", "mlp", "mamba", "attention"]
    schedule, _ = plan("hybrid_progressive", types, 0.5, 100, {"first_layer": 1, "num_stages": 2, "min_layer_share": 0})
    # wanted at layers 1 and 5 (evenly over the depth after layer 1); both are MLP-only, so the next scoring
    # layers (3 and 6) take the stages
    assert schedule.stage_layers == (3, 6)
    schedule, _ = plan("attention_only", types, 0.5, 100, {"first_layer": 1, "num_stages": 2, "min_layer_share": 0})
    assert schedule.stage_layers == (3, 7)


def test_infeasible_schedule_names_the_reason():
    with pytest.raises(ConfigError, match="below the smallest reachable"):
        plan("fastv", ["attention"] * 8, 0.1, 100, {"fastv_layer": 2})


@pytest.fixture(scope="module", params=["nemotron_h", "qwen2"])
def tiny_adapter(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    build_tiny_model({"image_size": 56, "llm": {"family": request.param, "pattern": "M*M-M*", "num_layers": 6}},
                     str(path), seed=0)
    return load_adapter(request.param, {"kind": "tiny", "path": str(path)})


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_registry_method_runs_on_both_model_kinds(tiny_adapter, method):
    frames = np.random.default_rng(0).integers(0, 255, (8, 56, 56, 3), dtype=np.uint8)
    grid = tiny_adapter.encode_video(frames)
    prompt = tiny_adapter.build_prompt(grid, None, "What colour was the circle that appeared?",
                                       ["red", "green", "blue", "yellow"])
    n = len(prompt.layout.vision_idx)
    if method == "oracle":  # the control ranks by the benchmark's ground truth: any evidence mask will do here
        prompt.layout = replace(prompt.layout, evidence=torch.arange(n) % 7 == 0)
    cfg = {"first_layer": 1, "num_stages": 2, "min_layer_share": 0}
    schedule, scorer = plan(method, tiny_adapter.stack.layer_types, 0.5, n, cfg)
    if REGISTRY[method].runner is None:  # the engine's methods also generate (replaying the reduction)
        tokens, result = greedy_generate(tiny_adapter.stack, prompt.embeds, prompt.layout, 2, schedule, scorer,
                                         allowed_tokens=tiny_adapter.option_token_ids(4))
        assert tokens[0] in tiny_adapter.option_token_ids(4).tolist() and len(tokens) == 2
    # as inference runs every method: planned, run, and its stages read from the run where the input decides them
    run = method_prefill(method, tiny_adapter.stack, prompt.embeds, prompt.layout, schedule, scorer, 0.5, cfg,
                         torch.arange(n) % (grid.shape[1] * grid.shape[2]))
    result = run()
    schedule = realised_schedule(schedule, result)
    assert result.vision_per_layer == schedule.tokens_per_layer()
    assert sorted(result.stage_keep) == list(schedule.stage_layers)
    assert abs(sum(result.vision_per_layer) - 0.5 * n * len(result.vision_per_layer)) <= len(result.vision_per_layer) \
        or method == "none"


def test_oracle_keeps_every_evidence_token_that_fits_then_random_ones(tiny_adapter):
    frames = np.random.default_rng(1).integers(0, 255, (8, 56, 56, 3), dtype=np.uint8)
    prompt = tiny_adapter.build_prompt(tiny_adapter.encode_video(frames), None, "How many circles appeared?",
                                       ["1", "2", "3", "4"])
    n = len(prompt.layout.vision_idx)
    evidence = torch.zeros(n, dtype=torch.bool)
    evidence[torch.tensor([3, 40, 41, 90, 127])] = True
    layout = replace(prompt.layout, evidence=evidence)
    schedule, scorer = plan("oracle", tiny_adapter.stack.layer_types, 0.5, n, {"first_layer": 1, "num_stages": 2})
    assert schedule.keep_counts[-1] >= 5
    result = prefill(tiny_adapter.stack, prompt.embeds, layout, schedule, scorer)
    for layer, kept in result.stage_keep.items():  # every stage keeps all five, whatever else it keeps
        assert set((layout.vision_idx[evidence]).tolist()) <= set(kept.tolist()), layer
    # without ground truth the control refuses to run rather than rank at random
    with pytest.raises(ValueError, match="evidence"):
        prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, schedule, scorer)


def test_pre_llm_reduction_keeps_full_video_positions(tiny_adapter):
    from hybridreduce.redundancy import keep_mask

    frames = np.random.default_rng(0).integers(0, 255, (8, 56, 56, 3), dtype=np.uint8)
    grid = tiny_adapter.encode_video(frames)
    full = tiny_adapter.build_prompt(grid, None, "How many shapes appeared?", ["1", "2", "3", "4"])
    keep = keep_mask("evs", grid, 0.75)
    reduced = tiny_adapter.build_prompt(grid, keep, "How many shapes appeared?", ["1", "2", "3", "4"])
    kept_flat = torch.nonzero(keep.flatten()).flatten()
    assert torch.equal(reduced.layout.position_ids[reduced.layout.vision_idx],
                       full.layout.position_ids[full.layout.vision_idx][kept_flat])
    assert torch.equal(reduced.layout.position_ids[reduced.layout.query_idx],
                       full.layout.position_ids[full.layout.query_idx])


def test_missing_checkpoint_is_named():
    with pytest.raises(ConfigError, match="models.big.path: model checkpoint '/nowhere/ckpt' does not exist"):
        load_adapter("big", {"kind": "tiny", "path": "/nowhere/ckpt"})


def test_schema_lists_exactly_the_registered_in_llm_methods():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    allowed = schema["properties"]["inference"]["properties"]["methods"]["items"]["enum"]
    assert sorted(allowed) == sorted(REGISTRY)


@pytest.mark.parametrize("seq_len", [1, 5, 49, 152, 300])
def test_cpu_inference_scan_and_conv_equal_transformers_reference(seq_len):
    """Without gradients, the mixer's conv and chunked scan on CPU tensors are models.mamba_cpu's
    (models.mamba_kernels): the same outputs and final state as transformers' reference, from a given initial
    state, for one chunk, several, and a partial last one. With gradients (training) transformers' own functions
    run, bit for bit."""
    import inspect

    from transformers.models.nemotron_h import modeling_nemotron_h

    from hybridreduce.models import mamba_cpu
    from hybridreduce.models.mamba_kernels import implementation

    g = torch.Generator().manual_seed(seq_len)
    heads, head_dim, groups, state = 6, 8, 3, 16
    x = torch.randn(2, seq_len, heads, head_dim, generator=g)
    dt = torch.randn(2, seq_len, heads, generator=g)
    A = -4 * torch.rand(heads, generator=g)
    B, C = (torch.randn(2, seq_len, groups, state, generator=g) for _ in range(2))
    kwargs = dict(chunk_size=128, D=torch.randn(heads, generator=g), dt_bias=torch.randn(heads, generator=g),
                  dt_softplus=True, dt_limit=(0.0, float("inf")), return_final_states=True,
                  initial_states=torch.randn(2, heads, head_dim, state, generator=g))
    channels = torch.randn(2, seq_len, 40, generator=g).transpose(1, 2)  # the mixer's transposed view
    conv_weight, conv_bias = torch.randn(40, 4, generator=g), torch.randn(40, generator=g)

    for name, ours, args, kw in (
        ("mamba2_chunk_scan", mamba_cpu.chunk_scan, (x, dt, A, B, C), kwargs),
        ("causal_conv1d_fn", mamba_cpu.causal_conv1d_fn, (channels, conv_weight, conv_bias), {"activation": "silu"}),
    ):
        function = getattr(modeling_nemotron_h, name)
        reference = inspect.unwrap(function)
        expected = reference(*args, **kw)
        with torch.no_grad():
            routed = function(*args, **kw)
        assert implementation(name, "cpu") is ours
        for got, want in zip(*(r if isinstance(r, tuple) else (r,) for r in (routed, expected)), strict=True):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        # with gradients (training) transformers' reference runs, exactly as transformers would run it
        training = function(*args, **kw)
        assert implementation(name, "cpu", training=True) is reference
        for got, want in zip(*(r if isinstance(r, tuple) else (r,) for r in (training, expected)), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("seq_len", [1, 49, 152, 300])
def test_cpu_inference_mixer_forward_equals_transformers_forward(seq_len):
    """Without gradients a CPU Nemotron-H mixer runs models.mamba_cpu.mixer_forward (two projections, in-place
    activation and gated norm): the output of transformers' own forward with its own functions, for a batch with
    a padding mask, in float32 and in bfloat16."""
    from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHMamba2Mixer

    from hybridreduce.models import mamba_cpu

    assert NemotronHMamba2Mixer.forward.__wrapped__ is NemotronHMamba2Mixer.forward.routed_from
    reference = NemotronHMamba2Mixer.forward.routed_from
    torch.manual_seed(seq_len)
    llm = {"family": "nemotron_h", "pattern": "M", "hidden_size": 48, "ssm_state_size": 8, "mamba_num_heads": 6,
           "mamba_head_dim": 8, "n_groups": 3, "chunk_size": 32}
    mixer = NemotronHMamba2Mixer(text_config(llm, vocab_size=16), layer_idx=0).eval()
    with torch.no_grad():  # heads that differ
        mixer.A_log.copy_(torch.log(torch.rand(6) * 2 + 0.2))
        mixer.dt_bias.copy_(torch.randn(6) - 1.0)
        mixer.D.copy_(torch.randn(6))
        mixer.norm.weight.copy_(1 + 0.2 * torch.randn(48))
    h = torch.randn(2, seq_len, 48)
    mask = torch.ones(2, seq_len, dtype=torch.long)
    mask[1, : seq_len // 3] = 0  # left padding in the second sequence
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        mixer.to(dtype)
        x = h.to(dtype)
        expected = reference(mixer, x, attention_mask=mask).detach()  # with gradients: transformers' functions
        with torch.no_grad():
            ours = mixer(x, attention_mask=mask)
            torch.testing.assert_close(mamba_cpu.mixer_forward(mixer, x, mask), ours, rtol=0, atol=0)
        assert ours.dtype == dtype
        torch.testing.assert_close(ours, expected, rtol=tol, atol=tol)


def test_nemotron_h_forward_on_cpu_equals_the_reference_path():
    """A whole Nemotron-H forward without gradients against the same forward with gradients (transformers' PyTorch
    code): the logits agree, with a cache (transformers' mixer forward on models.mamba_cpu's conv and scan) and
    without one (models.mamba_cpu.mixer_forward, as the engine's layer-wise prefill runs)."""
    torch.manual_seed(0)
    llm = {"family": "nemotron_h", "pattern": "M*M-M-", "hidden_size": 64, "num_attention_heads": 2,
           "ssm_state_size": 16, "mamba_num_heads": 4, "mamba_head_dim": 16, "n_groups": 2, "chunk_size": 32}
    model = AutoModelForCausalLM.from_config(text_config(llm, vocab_size=64)).eval()
    ids = torch.randint(0, 64, (1, 150), generator=torch.Generator().manual_seed(1))
    reference = model(ids).logits
    for use_cache in (True, False):
        with torch.no_grad():
            ours = model(ids, use_cache=use_cache).logits
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_top_k_mask_selects_what_a_stable_descending_sort_selects():
    """The engine's top-k keeps exactly the set the stable sort would (ties towards the lower index), with ties at
    the boundary, NaN and inf scores, k = 0 and k >= n."""
    from hybridreduce.reduction.engine import top_k_mask

    g = torch.Generator().manual_seed(0)
    for trial in range(600):
        n = int(torch.randint(1, 60, (1,), generator=g))
        scores = torch.randint(0, 5, (n,), generator=g).float() if trial % 2 else torch.rand(n, generator=g)
        if trial % 7 == 0 and n > 2:
            scores[1] = float("nan")
        if trial % 11 == 0:
            scores[0] = float("inf")
        k = int(torch.randint(0, n + 2, (1,), generator=g))
        expected = torch.zeros(n, dtype=torch.bool)
        expected[torch.argsort(scores, descending=True, stable=True)[:k]] = True
        assert torch.equal(top_k_mask(scores, k), expected), (scores, k)


class HostReads(TorchDispatchMode):
    """Counts the operators that read a tensor's values back to the host: a scalar read (``int()``, ``float()``,
    ``bool()``, ``.item()``) or a shape that depends on values (``nonzero``, ``masked_select``, indexing with a
    boolean mask, which calls ``nonzero`` below this mode). On a GPU each one waits for every queued kernel, and
    none may run while a CUDA graph is captured."""

    READS = frozenset({"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::is_nonzero"})
    INDEXING = frozenset({"aten::index", "aten::index_put", "aten::index_put_"})

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        indices = args[1] if name in self.INDEXING and len(args) > 1 else ()
        if name in self.READS or any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("query", ["question", "last_token"])
@pytest.mark.parametrize("build", [nemotron_h, qwen2])
def test_a_reduced_prefill_reads_nothing_back_from_the_device(build, query):
    """Scoring, top-k and gathers at every stage take their shapes from the schedule and the layout, so the host
    never waits for the device (and the prefill can be captured in a CUDA graph). The first prefill of a layout
    reads its first query position and lets the stack learn which lengths need no attention mask; a replay with
    fixed kept tokens reads counts, which shows that the counter sees reads."""
    model = build()
    stack, embeds = stack_for(model), embeds_for(model)
    schedule = plan("hybrid_progressive", stack.layer_types, 0.25, len(LAYOUT.vision_idx),
                    {"first_layer": 1, "num_stages": 3, "min_layer_share": 0})[0]
    scorer = Scorer("unified", query)
    layout = PromptLayout(LAYOUT.vision_idx, LAYOUT.query_idx)
    with HostReads() as first:
        warm = prefill(stack, embeds, layout, schedule, scorer)
    with HostReads() as again:
        result = prefill(stack, embeds, layout, schedule, scorer)
    with HostReads() as replay:
        replayed = prefill(stack, embeds, layout, schedule, fixed_keep=result.stage_keep)
    assert first.seen  # layout.query_start, and transformers' mask builder once per sequence length
    assert again.seen == []
    assert replay.seen  # the counter does see reads
    assert result.vision_per_layer == schedule.tokens_per_layer() == replayed.vision_per_layer
    for layer, kept in result.stage_keep.items():
        assert torch.equal(kept, warm.stage_keep[layer]) and torch.equal(kept, replayed.stage_keep[layer])
    torch.testing.assert_close(result.logits, replayed.logits, rtol=0, atol=0)


def test_a_replay_of_tokens_that_are_not_present_vision_tokens_is_refused():
    model = qwen2()
    stack, embeds = stack_for(model), embeds_for(model)
    schedule = Schedule("fixed", (1,), (3,), len(stack.layers), 40)
    # a query token; a repeated index; no token at all
    for bad in (torch.tensor([4, 5, 50]), torch.tensor([4, 5, 5]), torch.tensor([4, 5, 99])):
        with pytest.raises(ValueError, match=r"fixed_keep\[1\] must hold distinct input indices of vision tokens"):
            prefill(stack, embeds, LAYOUT, schedule, fixed_keep={1: bad})


def test_a_cuda_graph_prefill_refuses_what_it_cannot_capture():
    """The capture itself needs a GPU (tests/test_gpu.py); what it cannot capture is refused by name."""
    from hybridreduce.reduction.cuda_graph import CapturedPrefill

    model = qwen2()
    stack, embeds = stack_for(model), embeds_for(model)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        CapturedPrefill(stack, embeds, LAYOUT)
    with pytest.raises(ValueError, match="random scorer"):
        CapturedPrefill(stack, embeds, LAYOUT, scorer=Scorer("random"))


def test_a_layout_with_query_tokens_before_vision_tokens_is_refused():
    with pytest.raises(ValueError, match="query tokens must follow every vision token"):
        _ = PromptLayout(vision_idx=torch.arange(4, 44), query_idx=torch.arange(30, 56)).query_start


def test_reduced_prefill_with_eager_attention_after_sdpa_equals_a_fresh_eager_stack():
    """A stack remembers the lengths for which transformers builds no attention mask (SDPA); switching the model
    to eager attention must still give every stage its causal mask: the same reduced prefill as a fresh stack."""
    model = nemotron_h("sdpa")
    stack, embeds = stack_for(model), embeds_for(model)
    schedule = plan("hybrid_progressive", stack.layer_types, 0.25, len(LAYOUT.vision_idx),
                    {"first_layer": 1, "num_stages": 2, "min_layer_share": 0})[0]
    prefill(stack, embeds, LAYOUT, schedule)  # fills the maskless lengths under SDPA
    model.set_attn_implementation("eager")
    again = prefill(stack, embeds, LAYOUT, schedule)
    fresh = prefill(stack_for(model), embeds, LAYOUT, schedule)
    assert stack.begin(embeds, SeqState(torch.arange(56), torch.arange(56)))["mask"] is not None
    torch.testing.assert_close(again.logits, fresh.logits, rtol=0, atol=0)
