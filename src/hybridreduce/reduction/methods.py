"""Registry of in-LLM reduction methods: each is a schedule kind + a scorer (STUDY.md §3).

``plan`` turns a method, a model's layer types and a token budget into the concrete :class:`Schedule` and
:class:`Scorer` the engine runs. Stage layers are placed on layers that can score for that method (MLP-only
layers carry no score; attention-only methods skip Mamba layers), so "a stage boundary there uses the next
scoring layer".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ..errors import ConfigError
from ..layout import PromptLayout
from ..models.stack import MLP, DecoderStack
from ..plugins import IN_LLM, load_plugins
from .engine import PrefillResult, Scorer, prefill
from .framefusion import framefusion_method
from .schedule import Schedule, no_reduction, solve_schedule, stage_layers_for

# A method whose reduction depends on the input (where and how many tokens go is decided while the layers run):
# ``runner(stack, embeds (1, L, D), layout, budget, cfg, patch_ids (N,)) -> PrefillResult``, with ``cfg`` the study's
# ``reduction`` section and ``patch_ids`` each vision token's spatial position in its frame. It raises
# InfeasibleBudget for a budget it cannot reach on this input, ConfigError for invalid settings.
Runner = Callable[[DecoderStack, torch.Tensor, PromptLayout, float, dict, torch.Tensor], PrefillResult]


@dataclass(frozen=True)
class InLLMMethod:
    """A method: ``schedule`` kind (None = no reduction), its ``scorer``, and where its stages go.

    ``first_layer`` / ``num_stages`` of None take the study's ``reduction`` config; ``first_layer`` may be a
    fraction of depth (``0.25`` = a quarter of the layers). ``rank``: which layer ranks a stage's tokens,
    ``stage`` (the stage layer's own mixer, before it runs: the paper's method and its ablations) or ``previous``
    (the last scoring layer before the stage layer, on the tokens present before the stage, after which the
    stage drops: FastV's layer K-1 and PDrop's last layer of each stage, as their official code does).
    ``zero_out``: the stages zero the dropped tokens instead of removing them (:attr:`Schedule.zero_out`).
    ``runner``: the prefill of a method whose stages depend on the input (:data:`Runner`; ``schedule`` then names
    it): :func:`plan` gives no stages, :func:`realised_schedule` reads them from the run.
    """

    schedule: str | None
    scorer: Scorer
    doc: str
    first_layer: float | int | None = None
    num_stages: int | None = None
    rank: str = "stage"
    zero_out: bool = False
    runner: Runner | None = None


REGISTRY: dict[str, InLLMMethod] = {
    "none": InLLMMethod(None, Scorer(), "no in-LLM reduction (baseline)"),
    "hybrid_progressive": InLLMMethod(
        "progressive", Scorer("unified", "question"),
        "the paper's method: progressive low-to-high schedule, one query-conditioned score for attention and "
        "Mamba layers, decay-free Mamba score"),
    # FastV and PDrop as their authors run them: the last token's attention, head mean, of the layer before the
    # stage (FastV: layer K-1 ranks, layers K.. see the kept tokens; PDrop: each stage's last layer ranks for the
    # next). On a hybrid the layer before a stage may be a Mamba-2 layer (it ranks with the unified score, decay-free)
    # or an MLP layer (the nearest earlier Mamba-2 or attention layer ranks): the same layer at every budget.
    "fastv": InLLMMethod(
        "single", Scorer("unified", "last_token"),
        "FastV: one stage at layer K (config reduction.fastv_layer), ranked by layer K-1's last-token score",
        num_stages=1, rank="previous"),
    "pdrop": InLLMMethod(
        "uniform", Scorer("unified", "last_token"),
        "PDrop: pyramid of 3 stages at 1/4, 1/2, 3/4 depth with one keep ratio, each ranked by the last-token "
        "score of the layer before it", first_layer=0.25, num_stages=3, rank="previous"),
    "random": InLLMMethod("progressive", Scorer("random"), "the paper's schedule, random choice of tokens"),
    "oracle": InLLMMethod(
        "progressive", Scorer("oracle"),
        "control (synthetic benchmark only): the paper's schedule keeping the ground-truth evidence tokens first, "
        "the rest at random; the ceiling of a selection at each budget"),
    "attention_only": InLLMMethod(
        "progressive", Scorer("attention", "question"), "ablation: paper's schedule, score from attention layers only"),
    "mamba_decay": InLLMMethod(
        "progressive", Scorer("unified", "question", mamba_decay=True),
        "ablation: paper's schedule, Mamba score with the position-dependent decay"),
    # Mamba score variants (issue 28): where the paper's |C.B| dt ranks the evidence below the background, which
    # part of it does.
    "mamba_signed": InLLMMethod(
        "progressive", Scorer("unified", "question", mamba_signed=True),
        "ablation: paper's schedule, Mamba score with the signed C.B (no magnitude)"),
    "mamba_head_max": InLLMMethod(
        "progressive", Scorer("unified", "question", mamba_head_max=True),
        "ablation: paper's schedule, Mamba score with the maximum over heads instead of the mean"),
    "mamba_x_norm": InLLMMethod(
        "progressive", Scorer("unified", "question", mamba_x_norm=True),
        "ablation: paper's schedule, Mamba score times ||x_s|| per head"),
    # Mamba clip score (Zhan et al., EMNLP 2024, "Rethinking Token Reduction for State Space Models"): a token's
    # importance is the sum over channels of the Mamba block's output clamped at 0, query-blind.
    "mamba_clip": InLLMMethod(
        "progressive", Scorer("unified", "question", mamba_clip=True),
        "ablation: paper's schedule, Mamba layers rank by the clip score (sum of the mixer's output clamped at 0, "
        "query-blind; attention layers as in the paper's method)"),
    # Claim 3: removing tokens shortens the recurrence; zeroing them keeps every step (and its decay) in place. The
    # two differ only in what the state sees of the sequence's length and order.
    "zero_out": InLLMMethod(
        "progressive", Scorer("unified", "question"),
        "ablation: the paper's method with the dropped tokens zeroed in place instead of removed (same sequence "
        "length and positions, no speedup): separates what the Mamba state keeps from what removal shifts",
        zero_out=True),
    "framefusion": InLLMMethod(
        "framefusion", Scorer("unified", "question"),
        "FrameFusion (Fu et al., ICCV 2025): from layer 0, merge each vision token into the previous frame's token of "
        "its position when their hidden states are similar, then prune the rest by the unified query-conditioned "
        "score to the budget; where and how much depends on the video (reduction.framefusion)",
        runner=framefusion_method),
    "dart": InLLMMethod(
        "single", Scorer("dart", "question"),
        "DART (Wen et al., 2025): one stage at layer K (config reduction.fastv_layer, 2 of 32 as in its paper); "
        "pivots (4 vision and 4 question tokens of largest L1 norm) and the vision tokens least similar to them, "
        "on the states entering layer K", num_stages=1),
    "early_aggressive": InLLMMethod(
        "single", Scorer("unified", "question"), "ablation: one early stage (FastV-like), unified score", num_stages=1),
    "uniform_ratio": InLLMMethod("uniform", Scorer("unified", "question"), "ablation: equal keep ratio per stage"),
    "high_to_low": InLLMMethod(
        "high_to_low", Scorer("unified", "question"), "ablation: pruning shrinks with depth (reverse of the paper)"),
}


# The study's `reduction` defaults (the config schema fills the same values): three stages from layer 0, FastV's K
# at 1/16 of the depth (its K = 2 of 32 layers), and no layer below 0.2 x the budget (5% of the vision tokens at
# b = 0.25). Stages from layer 1 would leave no low-to-high schedule at b = 0.25 above that floor on 16 layers.
DEFAULTS = {"first_layer": 0, "num_stages": 3, "fastv_layer": 0.0625, "min_layer_share": 0.2}


def registry() -> dict[str, InLLMMethod]:
    """The built-in methods and those of installed plugins (:mod:`hybridreduce.plugins`)."""
    load_plugins(IN_LLM, REGISTRY, InLLMMethod)
    return REGISTRY


def get_method(name: str) -> InLLMMethod:
    if name not in registry():
        raise ConfigError(f"reduction.methods: unknown method '{name}' (known: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def _layer(value: float | int, num_layers: int) -> int:
    return int(round(value * num_layers)) if isinstance(value, float) and value < 1 else int(value)


def plan(name: str, layer_types: list[str], budget: float, num_vision: int, cfg: dict, seed: int = 0
         ) -> tuple[Schedule, Scorer]:
    """Schedule and scorer of method ``name`` at ``budget`` for a model with ``layer_types``.

    ``cfg`` is the study's ``reduction`` section (``first_layer``, ``num_stages``, ``fastv_layer``).
    """
    method = get_method(name)
    num_layers = len(layer_types)
    scorer = replace(method.scorer, seed=seed)
    if method.schedule is None or budget >= 1:
        return no_reduction(num_layers, num_vision), scorer
    if method.runner is not None:  # the run decides the stages
        return Schedule(method.schedule, (), (), num_layers, num_vision), scorer
    scoring = [i for i, t in enumerate(layer_types)
               if t != MLP and (scorer.kind in ("random", "oracle") or t in scorer.scoring_types())]
    if name in ("fastv", "dart"):
        # K scales with depth when given as a fraction (FastV's and DART's K = 2 of 32 layers); at least one layer
        first = max(1, _layer(cfg.get("fastv_layer", DEFAULTS["fastv_layer"]), num_layers))
    else:
        first = _layer(method.first_layer if method.first_layer is not None
                       else cfg.get("first_layer", DEFAULTS["first_layer"]), num_layers)
    num_stages = method.num_stages or cfg.get("num_stages", DEFAULTS["num_stages"])
    if scorer.kind == "attention":  # a hybrid has few attention layers: a stage at each, as many as there are
        num_stages = max(1, min(num_stages, sum(layer >= first for layer in scoring)))
    stages = stage_layers_for(num_layers, num_stages, first, scoring)
    schedule = solve_schedule(method.schedule, budget, num_layers, num_vision, stages,
                              cfg.get("min_layer_share", DEFAULTS["min_layer_share"]))
    if method.rank == "previous":
        schedule = replace(schedule, rank_layers=ranking_layers_before(schedule.stage_layers, scoring))
    return replace(schedule, zero_out=method.zero_out), scorer


def method_prefill(name: str, stack: DecoderStack, embeds: torch.Tensor, layout: PromptLayout, schedule: Schedule,
                   scorer: Scorer, budget: float, cfg: dict, patch_ids: torch.Tensor) -> Callable[[], PrefillResult]:
    """The prefill of method ``name`` as :func:`plan` planned it, ready to time: the engine's on the planned
    ``schedule``, or the method's own :attr:`~InLLMMethod.runner` (at ``budget``; ``patch_ids`` ``(N,)`` the vision
    tokens' spatial positions)."""
    runner = get_method(name).runner
    if runner is None or not budget < 1:
        return lambda: prefill(stack, embeds, layout, schedule, scorer)
    return lambda: runner(stack, embeds, layout, budget, cfg, patch_ids)


def realised_schedule(schedule: Schedule, result: PrefillResult) -> Schedule:
    """``schedule`` with the stages a run realised: those of an input-dependent method (no planned stages) are the
    layers at whose input its count of vision tokens changed, keeping that count."""
    if schedule.stage_layers or not result.stage_keep:
        return schedule
    counts = result.vision_per_layer
    layers = tuple(i for i, n in enumerate(counts) if n != (counts[i - 1] if i else schedule.num_vision))
    return replace(schedule, stage_layers=layers, keep_counts=tuple(counts[i] for i in layers))


def ranking_layers_before(stage_layers: tuple[int, ...], scoring: list[int]) -> tuple[int, ...]:
    """For each stage layer ``l_k``, the last layer of ``scoring`` before it and not before the previous stage
    layer (whose tokens it must see): the layer that ranks for the stage, as in FastV and PDrop. A stage with no
    such layer (a scoring layer right after the previous stage) ranks at its own layer."""
    out = []
    for k, layer in enumerate(stage_layers):
        low = stage_layers[k - 1] if k else 0
        before = [r for r in scoring if low <= r < layer]
        out.append(before[-1] if before else layer)
    return tuple(out)
