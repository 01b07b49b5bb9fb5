"""Reduction schedules: at which layers vision tokens are dropped, and how many survive each stage.

Convention: a stage at layer ``l`` scores the vision tokens with layer ``l``'s own mixer on its input and keeps
the top ones *before* layer ``l`` runs, so layer ``l`` and every later layer process the reduced set.

The token budget ``b`` (STUDY.md §3) is the mean over all ``L`` layers of the fraction of the original ``N``
vision tokens that layer processes (compute ∝ b). Each kind of schedule has one free parameter, solved by
bisection so the realised mean equals ``b``; the last stage's count is then nudged so the realised number of
tokens is within one token per layer of ``b·N``.

**No degenerate schedules.** Every layer must process at least ``min_share·b·N`` vision tokens (config
``reduction.min_layer_share``: at the default 0.2 and ``b = 0.25``, 5% of the vision tokens). A budget that
the schedule cannot reach that way is infeasible
(:class:`~hybridreduce.errors.ConfigError`, recorded by the study as ``infeasible_schedule``), never realised with
fewer tokens. The progressive and high-to-low schedules have a steepness ``s`` (how much faster the pruning grows
from stage to stage); ``s = 1`` is the default shape, and where it would leave a layer below the floor the
steepest shape in ``s = 0.9, 0.8, … 0.1`` that keeps every layer above it is used (still strictly low-to-high,
resp. high-to-low); the realised keep ratios are recorded with every setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

KINDS = ("progressive", "uniform", "high_to_low", "single")


@dataclass(frozen=True)
class Schedule:
    """Where and how much to reduce.

    Attributes:
        stage_layers: layer indices ``l_1 < … < l_K`` at whose input tokens are dropped.
        keep_counts: vision tokens kept by each stage (absolute, non-increasing).
        num_layers: ``L``.
        num_vision: ``N``, the vision tokens entering the LLM.
        rank_layers: the layer whose mixer ranks the tokens for each stage, on its input (the tokens present
            before the stage), ``r_k`` with ``l_{k-1} <= r_k <= l_k``; empty: each stage ranks at its own layer
            (the paper's method). FastV and PDrop rank at the layer before the stage, as their official code does.
        zero_out: a stage zeroes the hidden states of the tokens it drops instead of removing them (the ``zero_out``
            ablation): the sequence keeps its length and every token its place in the recurrence, and a dropped
            token is zeroed again at the input of every later layer, so it carries no content past its stage.
    """

    kind: str
    stage_layers: tuple[int, ...]
    keep_counts: tuple[int, ...]
    num_layers: int
    num_vision: int
    rank_layers: tuple[int, ...] = ()
    zero_out: bool = False

    @property
    def ranking_layers(self) -> tuple[int, ...]:
        """The layer that ranks each stage's tokens (``rank_layers``, else the stage layers)."""
        return self.rank_layers or self.stage_layers

    def tokens_per_layer(self) -> list[int]:
        """Vision tokens processed by each layer 0..L-1."""
        counts, current, stages = [], self.num_vision, dict(zip(self.stage_layers, self.keep_counts))
        for layer in range(self.num_layers):
            current = stages.get(layer, current)
            counts.append(current)
        return counts

    @property
    def realised_budget(self) -> float:
        return sum(self.tokens_per_layer()) / (self.num_layers * max(self.num_vision, 1))

    @property
    def final_kept_fraction(self) -> float:
        return (self.keep_counts[-1] if self.keep_counts else self.num_vision) / max(self.num_vision, 1)

    @property
    def keep_ratios(self) -> tuple[float, ...]:
        """Ratio kept at each stage relative to the tokens present before it."""
        before = (self.num_vision, *self.keep_counts[:-1])
        return tuple(k / b if b else 0.0 for k, b in zip(self.keep_counts, before))


def no_reduction(num_layers: int, num_vision: int) -> Schedule:
    return Schedule("none", (), (), num_layers, num_vision)


def stage_layers_for(num_layers: int, num_stages: int, first_layer: int, allowed: list[int]) -> tuple[int, ...]:
    """``num_stages`` layers spread evenly from ``first_layer`` over the remaining depth, each moved to the
    next layer in ``allowed`` (layers that can score: MLP-only layers carry no score)."""
    wanted = [first_layer + round(k * (num_layers - first_layer) / num_stages) for k in range(num_stages)]
    out: list[int] = []
    for layer in wanted:
        nxt = [a for a in allowed if a >= layer and (not out or a > out[-1])]
        if not nxt:
            break
        out.append(nxt[0])
    if len(out) < num_stages:
        raise ConfigError(
            f"reduction: cannot place {num_stages} stages from layer {first_layer} on the scoring layers "
            f"{allowed} of a {num_layers}-layer model; lower num_stages or first_layer"
        )
    return tuple(out)


STEEPNESS = tuple(round(1.0 - 0.1 * i, 1) for i in range(10))  # 1.0, 0.9, ..., 0.1: tried in this order


def _ratios(kind: str, p: float, k: int, steepness: float = 1.0) -> list[float]:
    """Keep ratio of each of ``k`` stages for free parameter ``p`` in [0, 1] (0 = keep all, 1 = drop all).

    ``progressive``: ``r_i = (1 - p) ** e_i`` with ``e_i = (1 - s) + s·i/k`` for i = 1..k (``s`` = steepness; at
    ``s = 1``, ``e_i = i/k``), so each stage prunes a larger share than the one before (low-to-high);
    ``high_to_low`` reverses the exponents; ``uniform`` and ``single`` use ``1 - p``.
    """
    if kind in ("uniform", "single"):
        return [1.0 - p] * k
    exponents = [(1 - steepness) + steepness * (i + 1) / k for i in range(k)]
    if kind == "high_to_low":
        exponents.reverse()
    return [(1.0 - p) ** e for e in exponents]


def _counts(ratios: list[float], n: int) -> list[int]:
    counts, current = [], float(n)
    for r in ratios:
        current *= r
        counts.append(max(1, round(current)))
    for i in range(1, len(counts)):  # never grow
        counts[i] = min(counts[i], counts[i - 1])
    return counts


def solve_schedule(
    kind: str, budget: float, num_layers: int, num_vision: int, stage_layers: tuple[int, ...], min_share: float = 0.0
) -> Schedule:
    """The schedule of ``kind`` on ``stage_layers`` whose realised budget equals ``budget`` (±1 token/layer), with
    every layer processing at least ``min_share·budget·num_vision`` tokens (see the module docstring)."""
    if kind not in KINDS:
        raise ConfigError(f"reduction: unknown schedule '{kind}' (known: {', '.join(KINDS)})")
    if not 0 < budget <= 1:
        raise ConfigError(f"reduction.budgets: {budget} is outside (0, 1]")
    if budget == 1 or num_vision == 0:
        return no_reduction(num_layers, num_vision)
    if kind == "single":
        stage_layers = stage_layers[:1]
    floor_tokens = max(1, math.ceil(min_share * budget * num_vision - 1e-9))
    shapes = STEEPNESS if kind in ("progressive", "high_to_low") else (1.0,)
    for steepness in shapes:
        sched = _solve(kind, budget, num_layers, num_vision, stage_layers, steepness)
        if min(sched.tokens_per_layer()) >= floor_tokens:
            return sched
    raise ConfigError(
        f"reduction: budget {budget} cannot be reached by a '{kind}' schedule on layers {list(stage_layers)} of a "
        f"{num_layers}-layer model with every layer processing at least {floor_tokens} of the {num_vision} vision "
        f"tokens (reduction.min_layer_share {min_share} x the budget); the last stage would keep "
        f"{sched.keep_counts[-1]}")


def _solve(kind: str, budget: float, num_layers: int, num_vision: int, stage_layers: tuple[int, ...],
           steepness: float) -> Schedule:
    k = len(stage_layers)

    def make(p: float) -> Schedule:
        counts = tuple(_counts(_ratios(kind, p, k, steepness), num_vision))
        return Schedule(kind, stage_layers, counts, num_layers, num_vision)

    floor = make(1.0).realised_budget
    if budget < floor - 1.0 / num_vision:
        raise ConfigError(
            f"reduction: budget {budget} is below the smallest reachable with a '{kind}' schedule on layers "
            f"{list(stage_layers)} ({floor:.3f}); move the first stage earlier or raise the budget"
        )
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if make(mid).realised_budget > budget:
            lo = mid
        else:
            hi = mid
    sched = make(hi)
    # Fix the rounding residual on the last stage: it spans the most layers, so one token there moves the mean most.
    span = num_layers - stage_layers[-1]
    residual = budget * num_layers * num_vision - sum(sched.tokens_per_layer())
    counts = list(sched.keep_counts)
    lower_bound = 1
    upper_bound = counts[-2] if k > 1 else num_vision
    counts[-1] = min(upper_bound, max(lower_bound, counts[-1] + round(residual / span)))
    return Schedule(kind, stage_layers, tuple(counts), num_layers, num_vision)
