"""FrameFusion in the LLM (reduction/framefusion.py) against a reference written from the paper's algorithm in plain
loops over tokens and layers, on both tiny model kinds (and a hybrid whose layer 1 is an MLP), plus behaviour tests:
merged values, the budget, infeasible budgets, the plain forward at budget 1, replay."""

import math
import zlib

import numpy as np
import pytest
import torch
from test_reduction import tiny_adapter  # noqa: F401

from hybridreduce.dataset.sample import LETTERS
from hybridreduce.errors import ConfigError
from hybridreduce.inference import SettingRunner
from hybridreduce.layout import PromptLayout
from hybridreduce.models import SeqState, load_adapter
from hybridreduce.models.build import build_tiny_model
from hybridreduce.models.stack import ATTENTION, MAMBA
from hybridreduce.reduction.engine import Scorer, prefill, score_layer
from hybridreduce.reduction.framefusion import framefusion_prefill
from hybridreduce.redundancy import reduce_grid
from hybridreduce.setting import RunOptions, Setting

QUESTION, OPTIONS = "What colour was the circle that appeared?", ["red", "green", "blue", "yellow"]
PER_FRAME = 16  # the tiny adapter's 56 px frames in 14 px patches: 4 x 4 tokens a frame


def static_frames(seed: int = 0, static: int = 5, noise: int = 3) -> np.ndarray:
    """8 frames of 56 x 56 px: ``static`` of the 16 patch cells repeat the first frame's content (up to pixel
    noise: similar, not identical, tokens), the others are new noise every frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (56, 56, 3)).astype(np.int16)
    out = []
    for _ in range(8):
        frame = rng.integers(0, 255, (56, 56, 3)).astype(np.int16)
        for cell in range(static):
            i, j = divmod(cell, 4)
            frame[14 * i:14 * i + 14, 14 * j:14 * j + 14] = base[14 * i:14 * i + 14, 14 * j:14 * j + 14]
        frame += rng.integers(-noise, noise + 1, frame.shape).astype(np.int16)
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(out)


def video_prompt(adapter, frames: np.ndarray | None = None):
    grid = adapter.encode_video(static_frames() if frames is None else frames)
    assert grid.shape == (8, 4, 4)
    return adapter.build_prompt(grid, None, QUESTION, OPTIONS)


# ---------------------------------------------------------------------------------------------------------------
# The reference: the algorithm as the paper and the authors' code state it, one token at a time
# ---------------------------------------------------------------------------------------------------------------


def authors_pruning_ratio(sparsity: list[float], cost: float, num_layers: int) -> float:
    """The share of the present tokens to drop at the next layer so that it and every later layer spend the budget
    exactly, from the kept shares so far (the authors' ``_compute_pruning_ratio``, in fractions of N)."""
    kept, total = 1.0, 0.0
    for share in sparsity:
        kept *= 1 - share
        total += kept
    remain = num_layers * cost - total
    if remain < 0:
        raise ConfigError("framefusion reference: the cost is too small")
    per_layer = remain / ((num_layers - len(sparsity)) * kept)
    return 0.0 if per_layer > 1 else 1 - per_layer


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


@torch.no_grad()
def reference_framefusion(stack, embeds, layout, budget, similarity_lower_bound, ratio_lower_bound=0.1,
                          per_frame=PER_FRAME):
    """Returns (kept input indices by layer, vision tokens per layer, logits, trace of (event, layer, merged))."""
    num_layers, n_vision = len(stack.layers), len(layout.vision_idx)
    vision_inputs = [int(v) for v in layout.vision_idx]
    patch_of = {v: k % per_frame for k, v in enumerate(vision_inputs)}  # token k of (t, i, j) order
    query_inputs = {int(q) for q in layout.query_idx}
    hidden = embeds.clone()
    state = SeqState(torch.arange(embeds.shape[1]), layout.position_ids)
    ctx = stack.begin(hidden, state)
    sparsity, merging, pruning = [], True, True
    kept_by_layer, per_layer, trace, inputs_seen = {}, [], [], []

    def vision_now() -> list[int]:  # positions of the present vision tokens in the current sequence
        return [p for p, idx in enumerate(state.index.tolist()) if idx in patch_of]

    def drop(positions: set[int]):
        nonlocal hidden, state, ctx
        keep = torch.tensor([p for p in range(hidden.shape[1]) if p not in positions])
        hidden, state = hidden[:, keep], state.select(keep)
        ctx = stack.begin(hidden, state)

    for layer in range(num_layers):
        changed = False
        if merging:
            bound = authors_pruning_ratio(sparsity, budget, num_layers)
            vision = vision_now()
            similarity, previous = {}, {}
            for p in vision:  # sequence order is frame order
                patch = patch_of[int(state.index[p])]
                similarity[p] = cosine(hidden[0, p], hidden[0, previous[patch]]) if patch in previous else -2.0
                previous[patch] = p
            candidates = [p for p in vision if similarity[p] >= similarity_lower_bound]
            share = len(candidates) / len(vision)
            if share < bound:
                chosen = set(candidates)
                sparsity.append(share)
                merging = share >= ratio_lower_bound
                trace.append(("merge", layer, len(chosen)))
            else:
                k = math.floor(bound * len(vision) + 1e-9)
                chosen = set(sorted(vision, key=lambda p: (-similarity[p], p))[:k])
                merging = pruning = False
                trace.append(("topk", layer, len(chosen)))
            runs: dict[int, list[int]] = {}  # target -> its merged tokens
            for patch in sorted(set(patch_of.values())):
                target = None
                for p in vision:
                    if patch_of[int(state.index[p])] != patch:
                        continue
                    if p in chosen:
                        runs[target].append(p)
                    else:
                        target = p
                        runs[target] = []
            for target, members in runs.items():
                if members:
                    total = hidden[0, target].float().clone()
                    for m in members:
                        total += hidden[0, m].float()
                    hidden[0, target] = total / (len(members) + 1)
            if chosen:
                drop(chosen)
                changed = True
        elif pruning:
            pruning = False
            ratio = authors_pruning_ratio(sparsity, budget, num_layers)
            vision = vision_now()
            keep_count = min(len(vision), max(1, round(len(vision) * (1 - ratio))))
            if keep_count < len(vision):
                # the last attention or Mamba layer before this one, on its input, the question tokens asking
                ranker = max(r for r in range(layer) if stack.layer_types[r] in (ATTENTION, MAMBA))
                r_hidden, r_state = inputs_seen[ranker]
                r_index = r_state.index.tolist()
                r_vision = torch.tensor([p for p, idx in enumerate(r_index) if idx in patch_of])
                r_query = torch.tensor([p for p, idx in enumerate(r_index) if idx in query_inputs])
                scores = score_layer(stack, ranker, r_hidden, stack.begin(r_hidden, r_state), r_query, r_vision,
                                     int(r_query[0]), Scorer("unified", "question"), None)
                score_of = {r_index[int(p)]: float(s) for p, s in zip(r_vision, scores)}
                ranked = sorted(vision, key=lambda p: (-score_of[int(state.index[p])], p))
                drop(set(ranked[keep_count:]))
                changed = True
                trace.append(("prune", layer, len(vision) - keep_count))
        vision = vision_now()
        if changed:
            kept_by_layer[layer] = [int(state.index[p]) for p in vision]
        per_layer.append(len(vision))
        if layer == num_layers - 1 and pruning and sum(per_layer) / (num_layers * n_vision) - budget > 1 / n_vision:
            raise ConfigError("framefusion reference: merging never finished and the budget is overspent")
        inputs_seen.append((hidden, state))
        hidden = stack.run_layer(layer, hidden, ctx)
    return kept_by_layer, per_layer, stack.logits(hidden[:, -1:])[0, -1], trace


@pytest.fixture(scope="module")
def mlp_first_hybrid(tmp_path_factory):
    """A Nemotron-H hybrid ``M-M*M*`` whose layer 1 is an MLP: pruning at layer 2 ranks with layer 0, whose input
    holds tokens that layer 1's merge removed."""
    path = str(tmp_path_factory.mktemp("nemotron_h_mlp_second"))
    build_tiny_model({"image_size": 56, "llm": {"family": "nemotron_h", "pattern": "M-M*M*", "num_layers": 6}},
                     path, seed=0)
    return load_adapter("nemotron_h", {"kind": "tiny", "path": path})


def assert_matches_reference(adapter, budget, similarity_lower_bound) -> list[tuple[str, int, int]]:
    prompt = video_prompt(adapter)
    kept, per_layer, logits, trace = reference_framefusion(adapter.stack, prompt.embeds, prompt.layout, budget,
                                                           similarity_lower_bound)
    result = framefusion_prefill(adapter.stack, prompt.embeds, prompt.layout, budget, similarity_lower_bound,
                                 tokens_per_frame=PER_FRAME)
    assert result.vision_per_layer == per_layer
    assert sorted(result.stage_keep) == sorted(kept)
    for layer, indices in kept.items():
        assert result.stage_keep[layer].tolist() == indices, layer
    torch.testing.assert_close(result.logits, logits, rtol=1e-4, atol=1e-4)
    assert sum(n for event, _, n in trace if event in ("merge", "topk")) > 0  # merging did happen
    return trace


def test_matches_the_reference_on_both_model_kinds(tiny_adapter):
    """Two budgets x two similarity thresholds. Between them the cases merge over several layers and then prune (on
    the hybrid also at layer 3, after its MLP layer), or meet the budget with the most similar tokens."""
    traces = {}
    for budget in (0.3, 0.5):
        for similarity_lower_bound in (0.7, 0.8):
            traces[budget, similarity_lower_bound] = assert_matches_reference(tiny_adapter, budget,
                                                                              similarity_lower_bound)
    events = [[event for event, _, n in trace if n > 0] for trace in traces.values()]
    assert any(e[:2] == ["merge", "merge"] and e[-1] == "prune" for e in events), traces
    assert any(e[-1] == "topk" for e in events), traces


def test_matches_the_reference_when_an_mlp_layer_lies_before_the_pruning_layer(mlp_first_hybrid):
    trace = assert_matches_reference(mlp_first_hybrid, 0.3, 0.8)
    assert [e[:2] for e in trace] == [("merge", 0), ("merge", 1), ("prune", 2)] and trace[1][2] > 0


# ---------------------------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------------------------


def hand_built(adapter, vision: torch.Tensor) -> tuple[torch.Tensor, PromptLayout]:
    """The tiny adapter's prompt text around hand-made vision tokens ``(N, D)``."""
    prompt = video_prompt(adapter)
    first, last = int(prompt.layout.vision_idx[0]), int(prompt.layout.vision_idx[-1]) + 1
    embeds = torch.cat([prompt.embeds[:, :first], vision[None].to(prompt.embeds.dtype), prompt.embeds[:, last:]], 1)
    n_query = prompt.embeds.shape[1] - last
    layout = PromptLayout(vision_idx=torch.arange(first, first + len(vision)),
                          query_idx=torch.arange(first + len(vision), first + len(vision) + n_query))
    return embeds, layout


def test_a_run_merges_into_the_token_before_it_as_their_mean(tiny_adapter):
    """4 frames of 2 positions. Position 0: a, a', a'', b: the run (a', a'') merges into a. Position 1: c, d, d', e:
    d' merges into d. The merged states are the means, at the targets' places and positions."""
    torch.manual_seed(0)
    dim = tiny_adapter.stack.model.config.hidden_size
    a, b, c, d, e = (torch.randn(dim) for _ in range(5))
    a1, a2, d1 = (x + 0.05 * torch.randn(dim) for x in (a, a, d))
    # tokens in (t, position) order
    vision = torch.stack([a, c, a1, d, a2, d1, b, e])
    embeds, layout = hand_built(tiny_adapter, vision)
    first = int(layout.vision_idx[0])
    seen = {}
    # 3 candidates of 8 (share 0.375) < the bound 1 - 0.6: all merge; 0.375 >= 0.1: merging goes on
    result = framefusion_prefill(tiny_adapter.stack, embeds, layout, 0.6, observer=lambda i, h, ctx, s: seen.setdefault(
        i, (h.clone(), s)), tokens_per_frame=2)
    kept = [first + k for k in (0, 1, 3, 6, 7)]  # a, c, d, b, e
    assert result.stage_keep[0].tolist() == kept
    hidden, state = seen[0]  # layer 0's input, after its merge
    assert state.index[first:first + 5].tolist() == kept and state.position_ids[first:first + 5].tolist() == kept
    torch.testing.assert_close(hidden[0, first], (a + a1 + a2) / 3)
    torch.testing.assert_close(hidden[0, first + 2], (d + d1) / 2)
    for pos, token in ((first + 1, c), (first + 3, b), (first + 4, e)):
        assert torch.equal(hidden[0, pos], token)
    assert torch.equal(hidden[0, :first], embeds[0, :first])  # text untouched
    assert result.vision_per_layer[0] == 5


def test_the_most_similar_merge_when_they_meet_the_budget(tiny_adapter):
    """Budget 0.75 of 8 tokens: the bound 0.25 leaves room for floor(0.25 x 8) = 2 merges, fewer than the 3
    candidates, so the 2 most similar merge and nothing is pruned later."""
    torch.manual_seed(1)
    dim = tiny_adapter.stack.model.config.hidden_size
    a, b, c, d, e = (torch.randn(dim) for _ in range(5))
    a1, a2, d1 = a + 0.01 * torch.randn(dim), a + 0.2 * torch.randn(dim), d + 0.02 * torch.randn(dim)
    embeds, layout = hand_built(tiny_adapter, torch.stack([a, c, a1, d, a2, d1, b, e]))
    first = int(layout.vision_idx[0])
    seen = {}
    result = framefusion_prefill(tiny_adapter.stack, embeds, layout, 0.75, observer=lambda i, h, ctx, s: seen.setdefault(
        i, h.clone()), tokens_per_frame=2)
    # a1 (most similar to a) and d1 merge; a2 (compared with a1) stays
    assert list(result.stage_keep) == [0]
    assert result.stage_keep[0].tolist() == [first + k for k in (0, 1, 3, 4, 6, 7)]
    assert result.vision_per_layer == [6] * len(tiny_adapter.stack.layers)
    torch.testing.assert_close(seen[0][0, first], (a + a1) / 2)
    torch.testing.assert_close(seen[0][0, first + 2], (d + d1) / 2)


@pytest.mark.parametrize("budget", [0.25, 0.3, 0.45, 0.5, 0.62, 0.8, 0.95])
def test_the_realised_budget_is_the_asked_one(tiny_adapter, budget):
    prompt = video_prompt(tiny_adapter)
    n, layers = len(prompt.layout.vision_idx), len(tiny_adapter.stack.layers)
    result = framefusion_prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, budget, 0.8,
                                 tokens_per_frame=PER_FRAME)
    assert result.stage_keep  # tokens were reduced
    assert abs(sum(result.vision_per_layer) / (layers * n) - budget) <= 1 / n
    # the same spatial positions given per token
    again = framefusion_prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, budget, 0.8,
                                patch_ids=torch.arange(n) % PER_FRAME)
    assert again.vision_per_layer == result.vision_per_layer and torch.equal(again.logits, result.logits)


def test_a_budget_the_merges_already_overspend_is_refused(tiny_adapter):
    """At 0.05 the bound at layer 0 is 0.95: all 40 candidates merge (share 0.31), and layer 0 alone then processes
    88 tokens, more than the budget's 0.05 x 6 x 128 = 38.4 for all layers."""
    prompt = video_prompt(tiny_adapter)
    with pytest.raises(ConfigError, match=r"framefusion: budget 0.05 cannot be reached.*already processed"):
        framefusion_prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, 0.05, 0.8, tokens_per_frame=PER_FRAME)
    with pytest.raises(ConfigError):  # the reference agrees
        reference_framefusion(tiny_adapter.stack, prompt.embeds, prompt.layout, 0.05, 0.8)


def test_merging_that_never_finishes_is_refused(tiny_adapter):
    """ratio_lower_bound 0: merging only ends by meeting the budget; at 0.7 and similarity 0.9 the layers after the
    first merge find nothing to merge, so the budget is overspent at the last layer."""
    prompt = video_prompt(tiny_adapter)
    with pytest.raises(ConfigError, match="merging had not finished by the last layer"):
        framefusion_prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, 0.7, 0.9, 0.0,
                            tokens_per_frame=PER_FRAME)
    with pytest.raises(ConfigError, match="never finished"):
        reference_framefusion(tiny_adapter.stack, prompt.embeds, prompt.layout, 0.7, 0.9, 0.0)


def test_budget_one_is_the_models_own_forward(tiny_adapter):
    prompt = video_prompt(tiny_adapter)
    seen = []
    result = framefusion_prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, 1.0,
                                 observer=lambda i, h, ctx, s: seen.append(i))
    reference = tiny_adapter.stack.model(inputs_embeds=prompt.embeds).logits[0, -1]
    torch.testing.assert_close(result.logits, reference, rtol=1e-4, atol=1e-4)
    n = len(prompt.layout.vision_idx)
    assert result.vision_per_layer == [n] * len(tiny_adapter.stack.layers) and result.stage_keep == {}
    assert seen == list(range(len(tiny_adapter.stack.layers)))
    assert torch.equal(result.logits, prefill(tiny_adapter.stack, prompt.embeds, prompt.layout).logits)


def grown(adapter, prompt, token: int) -> tuple[torch.Tensor, PromptLayout]:
    """The prompt with one generated token appended (a new position; not a query token)."""
    new = adapter.stack.embed_tokens(torch.tensor([[token]]))
    pos = prompt.layout.position_ids
    layout = PromptLayout(prompt.layout.vision_idx, prompt.layout.query_idx, torch.cat([pos, pos.max()[None] + 1]))
    return torch.cat([prompt.embeds, new.to(prompt.embeds.dtype)], 1), layout


def test_replay_with_fixed_keep_recomputes_the_same_reduction(tiny_adapter):
    prompt = video_prompt(tiny_adapter)
    first = framefusion_prefill(tiny_adapter.stack, prompt.embeds, prompt.layout, 0.3, 0.7,
                                tokens_per_frame=PER_FRAME)
    embeds, layout = grown(tiny_adapter, prompt, int(first.logits.argmax()))
    replay = framefusion_prefill(tiny_adapter.stack, embeds, layout, 0.3, 0.7, fixed_keep=first.stage_keep,
                                 tokens_per_frame=PER_FRAME)
    assert replay.vision_per_layer == first.vision_per_layer
    assert {k: v.tolist() for k, v in replay.stage_keep.items()} == {k: v.tolist() for k, v in first.stage_keep.items()}
    # tampered: another token kept at the first stage, or a stage left out
    layer = min(first.stage_keep)
    tampered = dict(first.stage_keep)
    tampered[layer] = first.stage_keep[layer].clone()
    tampered[layer][0] += 1
    with pytest.raises(ValueError, match=f"fixed_keep\\[{layer}\\] differs"):
        framefusion_prefill(tiny_adapter.stack, embeds, layout, 0.3, 0.7, fixed_keep=tampered,
                            tokens_per_frame=PER_FRAME)
    with pytest.raises(ValueError, match="fixed_keep changes tokens at layers"):
        framefusion_prefill(tiny_adapter.stack, embeds, layout, 0.3, 0.7, fixed_keep={layer: first.stage_keep[layer]},
                            tokens_per_frame=PER_FRAME)
    with pytest.raises(ValueError, match="fixed_keep changes tokens"):  # no reduction at budget 1
        framefusion_prefill(tiny_adapter.stack, embeds, layout, 1.0, fixed_keep=first.stage_keep)


def test_settings_are_checked(tiny_adapter):
    prompt = video_prompt(tiny_adapter)
    args = (tiny_adapter.stack, prompt.embeds, prompt.layout)
    with pytest.raises(ConfigError, match=r"reduction\.framefusion\.similarity_lower_bound"):
        framefusion_prefill(*args, 0.5, 1.5, tokens_per_frame=PER_FRAME)
    with pytest.raises(ConfigError, match=r"reduction\.framefusion\.ratio_lower_bound"):
        framefusion_prefill(*args, 0.5, 0.6, -0.1, tokens_per_frame=PER_FRAME)
    for budget in (0.0, -0.5, float("nan")):
        with pytest.raises(ConfigError, match="framefusion: the budget"):
            framefusion_prefill(*args, budget, tokens_per_frame=PER_FRAME)
    with pytest.raises(ValueError, match="spatial positions"):
        framefusion_prefill(*args, 0.5)
    with pytest.raises(ValueError, match="patch_ids must be"):
        framefusion_prefill(*args, 0.5, patch_ids=torch.arange(5))


# ---------------------------------------------------------------------------------------------------------------
# The registered method, as the study's inference runs it
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hybrid_model(tmp_path_factory):
    """A tiny hybrid checkpoint (the model config of test_reduction's tiny_adapter), as a study's model entry."""
    path = tmp_path_factory.mktemp("ff_hybrid")
    build_tiny_model({"image_size": 56, "llm": {"family": "nemotron_h", "pattern": "M*M-M*", "num_layers": 6}},
                     str(path), seed=0)
    return {"kind": "tiny", "path": str(path)}


def run_setting(model: dict, frames: np.ndarray, **fields):
    """One sample answered by the study's SettingRunner (no warm-up, one timed run); its rows by table."""
    setting = Setting("ff_hybrid", model, run=RunOptions(warmup=0, repeats=1), **fields)
    predicted, rows = SettingRunner(setting).answer("s0", "colour", frames, QUESTION, OPTIONS)
    return predicted, {table: row for table, row in rows}


@pytest.mark.parametrize("pre", ["none", "evs"])
def test_the_study_runs_framefusion_and_records_the_stages_its_input_gave(hybrid_model, pre):
    """The inference row holds what FrameFusion did on this video (its merge and prune layers and counts), the
    answer is the reduced prefill's, and after a pre-LLM method each kept token still merges with its own spatial
    position (its row and column in the frame, read from the pre-LLM keep mask)."""
    frames = static_frames()
    cfg = {"framefusion": {"similarity_lower_bound": 0.8, "ratio_lower_bound": 0.1}}
    predicted, rows = run_setting(hybrid_model, frames, method="framefusion", budget=0.3, reduction=cfg, pre=pre)
    adapter = load_adapter("nemotron_h", hybrid_model)
    grid = adapter.encode_video(frames)
    keep = None
    if pre == "evs":
        grid, keep = reduce_grid("evs", grid, 0.5, seed=zlib.crc32(b"0:s0"))  # the runner's seed for sample s0
    prompt = adapter.build_prompt(grid, keep, QUESTION, OPTIONS)
    n = len(prompt.layout.vision_idx)
    cells = torch.nonzero(keep if keep is not None else torch.ones(8, 4, 4, dtype=torch.bool))  # (n, 3): t, i, j
    reference = framefusion_prefill(adapter.stack, prompt.embeds, prompt.layout, 0.3, 0.8, 0.1,
                                    patch_ids=cells[:, 1] * 4 + cells[:, 2])
    inference = rows["inference"]
    stages = sorted(reference.stage_keep)
    assert stages and inference["stage_layers"] == stages
    assert inference["keep_counts"] == [reference.vision_per_layer[layer] for layer in stages]
    assert inference["vision_per_layer"] == reference.vision_per_layer and inference["vision_tokens_in"] == n
    assert abs(inference["realised_budget"] - 0.3) <= 1 / n
    assert predicted == LETTERS[int(torch.argmax(reference.logits[adapter.option_token_ids(4)]))]
    assert rows["latency"]["prefill_s"] > 0 and rows["latency"]["score_s"] > 0


def test_a_budget_this_video_cannot_reach_is_a_failure_row_not_an_answer(hybrid_model):
    """FrameFusion's reachable budgets depend on the video: at 0.05 the first layer's merges already overspend it
    (test_a_budget_the_merges_already_overspend_is_refused), which the study records as infeasible for the sample."""
    predicted, rows = run_setting(hybrid_model, static_frames(), method="framefusion", budget=0.05,
                                  reduction={"framefusion": {"similarity_lower_bound": 0.8}})
    assert predicted is None and set(rows) == {"failures"}
    failure = rows["failures"]
    assert failure["kind"] == "infeasible_schedule" and "budget 0.05 cannot be reached" in failure["reason"]
    with pytest.raises(ConfigError, match=r"reduction.framefusion: unknown setting\(s\) lower_bound"):
        run_setting(hybrid_model, static_frames(), method="framefusion", budget=0.3,
                    reduction={"framefusion": {"lower_bound": 0.8}})
