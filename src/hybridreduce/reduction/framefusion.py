"""FrameFusion in the LLM (Fu et al., "FrameFusion: Combining Similarity and Importance for Video Token Reduction on
Large Vision Language Models", 2024 / ICCV 2025), on the layer-wise decoder view of :mod:`.engine`.

FrameFusion first *merges* vision tokens that repeat the same spatial position of the frame before (similarity), layer
after layer from the input of layer 0, then *prunes* the rest by importance to meet a compute budget. At the input of
each layer ``i`` while merging goes on:

1. Every present vision token gets the cosine similarity of its hidden state (the residual stream entering layer ``i``)
   to the previous present vision token of the same spatial position (the previous frame's token, or the token that
   one was merged into); the first token of a position has none (-2, never a candidate). Tokens with similarity
   ``>= similarity_lower_bound`` are merge candidates.
2. The *sparsity upper bound* is the share of the present vision tokens that layer ``i`` would have to drop so that
   layers ``i .. L-1``, each processing the same number, spend exactly what is left of the budget (the authors'
   ``_compute_pruning_ratio``). If the candidates' share is below it, all candidates merge and merging finishes when
   that share is below ``ratio_lower_bound``; otherwise only the ``floor(bound x present)`` most similar merge, which
   meets the budget, and both merging and pruning finish.
3. Merging: in each spatial position, in frame order, every maximal run of consecutive merged tokens folds into the
   non-merged token before the run: that token becomes the mean of itself and the run and keeps its own position
   (and input index); the run's tokens leave the sequence.

At the input of the layer after merging finished (unless the merge already met the budget) the vision tokens are
pruned to ``round(left / layers left)`` by importance, which spends the budget exactly over the remaining layers.

The budget ``b`` follows :mod:`.schedule`: the mean over the ``L`` layers of the fraction of the ``N`` original vision
tokens each layer processes. All book-keeping is in tokens: ``left = b·L·N - (tokens processed so far)``; the authors'
fractions (``1 - remain / ((L - i) s)`` with ``s`` the product of the kept shares) are the same numbers divided by N.

Choices and differences from the authors' code (``thu-nics/FrameFusion``, ``framefusion/main.py`` and
``models/qwen2/modeling_qwen2.py``):

- **Where it runs.** The authors run FrameFusion at layer 0 before its attention and then after the attention of every
  layer (before that layer's MLP), on Qwen2 decoder layers that hold both. Our stacks are lists of layers (a Nemotron-H
  layer is one mixer or one MLP), so it runs at the input of every layer ``0, 1, 2, ...``; the cost book-keeping is
  the same (entry ``i`` of their ``sparsity_list`` is layer ``i``'s share).
- **Importance.** The authors prune by the attention of the layer just run, for the *last* query row only
  (``utils.scaled_dot_product_attention(num=1)``), averaged over heads. Our hybrids have Mamba layers, so we use the
  study's one scoring interface, :func:`~.engine.score_layer` with ``Scorer("unified", "question")`` (every question
  token asks; attention or Mamba-2), of the last scoring layer (attention or Mamba, not MLP) before the pruning
  layer, on that layer's input — the tokens present there include all present at the pruning layer (merges only
  remove tokens; a target keeps its input index), and those are ranked by that score. Should no layer before the
  pruning layer score (an MLP first layer: none of the study's models), the first scoring layer from the pruning layer
  on scores the pruning layer's input.
- **Layer count.** The authors' ``_compute_pruning_ratio`` takes ``num_layers = 28`` (Qwen2-7B) by default and is
  called without it; we use the model's ``L``.
- **Numerics.** Similarities and merged means are computed in float32 (the authors: in the model's dtype, in place),
  a merged state cast back to the model's dtype. A zero hidden state has similarity 0 (the authors divide by a zero
  norm: NaN). Ties among the most similar tokens (top-k branch) and among the pruning scores go to the lower
  position (``torch.topk`` leaves them unspecified). ``floor(bound x present)`` gets a ``1e-9`` slack so that a
  product that is an integer up to float error is not floored one below. Pruning keeps
  ``max(1, round(left / layers left))`` (Python's ``round``, half to even, as theirs) vision tokens: never none.
- **Infeasible budgets.** The authors raise ``ValueError("The cost is too small")`` when the tokens already processed
  exceed the budget (merging all candidates of a layer can overspend a small budget); we raise
  :class:`~hybridreduce.errors.InfeasibleBudget` (a ``ConfigError``) then, and also when merging never finished by the
  last layer so that the realised budget exceeds ``b`` by more than ``1/N`` (the authors would not notice: nothing runs
  after the last layer). Both depend on the input (how similar its frames are): a budget can be reachable for one
  video and not another, so the study records them per sample (``failures``, ``infeasible_schedule``).

Realised budget: when merging finishes, ``mean(vision_per_layer) / N`` is within ``1/N`` of ``b``: the top-k branch
over-spends by less than one token per remaining layer (the floor), pruning by at most half a token per remaining
layer either way (the rounding; at most one over when it keeps its single token).

The stage layers (where tokens change) depend on the input; the prefill reads values back from the device at every
merging layer, so unlike :func:`~.engine.prefill` it cannot be captured in a CUDA graph.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..device import synchronize
from ..errors import ConfigError, InfeasibleBudget
from ..layout import PromptLayout
from ..models.stack import ATTENTION, MAMBA, DecoderStack, SeqState
from .engine import PrefillResult, Scorer, prefill, score_layer, top_k_mask

NO_PREVIOUS = -2.0  # the similarity of a position's first token (the authors' IGNORE_TOKEN): never a merge candidate
SCORER = Scorer("unified", "question")
FLOOR_SLACK = 1e-9
# the authors' defaults (framefusion/main.py), which the config schema's reduction.framefusion repeats
DEFAULTS = {"similarity_lower_bound": 0.6, "ratio_lower_bound": 0.1}


def framefusion_method(stack: DecoderStack, embeds: torch.Tensor, layout: PromptLayout, budget: float, cfg: dict,
                       patch_ids: torch.Tensor) -> PrefillResult:
    """The registered method ``framefusion`` (:data:`~.methods.Runner`): :func:`framefusion_prefill` with the study's
    ``reduction.framefusion`` settings (its two bounds; this function's defaults where absent)."""
    options = dict(cfg.get("framefusion") or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"reduction.framefusion: unknown setting(s) {', '.join(unknown)} (known: "
                          f"{', '.join(DEFAULTS)})")
    return framefusion_prefill(stack, embeds, layout, budget, **{**DEFAULTS, **options}, patch_ids=patch_ids)


def patch_ids_for(tokens_per_frame: int, num_vision: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(N,)`` int64 spatial position of each vision token for vision tokens in ``(t, i, j)`` order with
    ``tokens_per_frame = h·w`` tokens a frame (the tiny adapter's order: token ``k`` sits at ``k % (h·w)``)."""
    return torch.arange(num_vision, device=device) % tokens_per_frame


def framefusion_prefill(
    stack: DecoderStack,
    embeds: torch.Tensor,
    layout: PromptLayout,
    budget: float,
    similarity_lower_bound: float = DEFAULTS["similarity_lower_bound"],
    ratio_lower_bound: float = DEFAULTS["ratio_lower_bound"],
    observer: Callable[[int, torch.Tensor, dict, SeqState], None] | None = None,
    fixed_keep: dict[int, torch.Tensor] | None = None,
    *,
    tokens_per_frame: int | None = None,
    patch_ids: torch.Tensor | None = None,
) -> PrefillResult:
    """Run the decoder on ``embeds`` ``(1, L, D)`` with FrameFusion at ``budget`` (see the module docstring).

    Args:
        stack: the decoder, run one layer at a time.
        embeds: ``(1, L, D)`` the LLM input ``[prefix][V][Q]``; batch size 1.
        layout: where the ``N`` vision tokens and the query tokens sit.
        budget: ``b``, the mean fraction of the ``N`` vision tokens the layers process; ``>= 1``: no reduction (the
            model's own forward, layer by layer).
        similarity_lower_bound: cosine similarity from which a token is a merge candidate, in ``[-1, 1]``.
        ratio_lower_bound: merging finishes once a layer's candidates are a smaller share than this, in ``[0, 1]``.
        observer: ``observer(i, hidden, ctx, state)`` sees every layer ``i``'s input after that layer's merge/prune.
        fixed_keep: a previous prefill's ``stage_keep`` (generating further tokens). The method is deterministic and
            causal, and appended tokens are not query tokens, so it recomputes and checks: a different reduction
            raises ``ValueError``.
        tokens_per_frame: ``h·w`` when the vision tokens are in ``(t, i, j)`` order (all of a video's tokens).
        patch_ids: ``(N,)`` the spatial position of each vision token instead (e.g. after a pre-LLM reduction:
            ``kept_flat_index % (h·w)``). Exactly one of the two is needed when ``budget < 1``.

    Returns:
        :class:`~.engine.PrefillResult`: ``vision_per_layer`` realised, ``stage_keep`` = layer -> ``(k,)`` input
        indices of the vision tokens present after that layer's merge or prune (a merged run's index is its target's),
        for every layer where they changed; ``score_s`` the time spent on similarities, merging and scoring.

    Raises:
        ConfigError: invalid settings. InfeasibleBudget (a ConfigError): a budget this input cannot reach (see the
            module docstring).
        ValueError: no spatial positions given, or ``fixed_keep`` differs from the recomputed reduction.
    """
    _check_settings(budget, similarity_lower_bound, ratio_lower_bound)
    if embeds.shape[0] != 1:
        raise ValueError(f"framefusion_prefill runs batch size 1, got embeds of shape {tuple(embeds.shape)}")
    num_vision = len(layout.vision_idx)
    with torch.no_grad():
        if budget >= 1 or num_vision == 0:
            result = prefill(stack, embeds, layout, observer=observer)
        else:
            patch = _patch_ids(num_vision, tokens_per_frame, patch_ids, embeds.device)
            result = _FrameFusion(stack, embeds, layout, budget, similarity_lower_bound, ratio_lower_bound,
                                  patch).run(observer)
    if fixed_keep is not None:
        _check_replay(result.stage_keep, fixed_keep)
    return result


def _check_settings(budget: float, similarity_lower_bound: float, ratio_lower_bound: float) -> None:
    try:
        ok = math.isfinite(float(budget)) and float(budget) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"framefusion: the budget must be a number > 0 (>= 1: no reduction), got {budget!r}")
    if not -1 <= similarity_lower_bound <= 1:
        raise ConfigError("reduction.framefusion.similarity_lower_bound: a cosine similarity in [-1, 1], got "
                          f"{similarity_lower_bound!r}")
    if not 0 <= ratio_lower_bound <= 1:
        raise ConfigError(f"reduction.framefusion.ratio_lower_bound: a share in [0, 1], got {ratio_lower_bound!r}")


def _patch_ids(num_vision: int, tokens_per_frame: int | None, patch_ids: torch.Tensor | None,
               device: torch.device) -> torch.Tensor:
    """``(N,)`` int64 spatial position of each vision token, from exactly one of the two arguments."""
    if (tokens_per_frame is None) == (patch_ids is None):
        raise ValueError("framefusion_prefill needs the vision tokens' spatial positions: exactly one of "
                         "tokens_per_frame (h*w, tokens in (t, i, j) order) or patch_ids ((N,) per token)")
    if patch_ids is None:
        if tokens_per_frame < 1:
            raise ValueError(f"framefusion_prefill: tokens_per_frame must be >= 1, got {tokens_per_frame}")
        return patch_ids_for(tokens_per_frame, num_vision, device)
    if patch_ids.shape != (num_vision,) or patch_ids.is_floating_point() or (num_vision and int(patch_ids.min()) < 0):
        raise ValueError(f"framefusion_prefill: patch_ids must be ({num_vision},) non-negative integers, one per "
                         f"vision token; got shape {tuple(patch_ids.shape)}, dtype {patch_ids.dtype}")
    return patch_ids.to(device=device, dtype=torch.long)


def _check_replay(stage_keep: dict[int, torch.Tensor], fixed_keep: dict[int, torch.Tensor]) -> None:
    """Recomputing FrameFusion on the grown sequence must give the first prefill's reduction."""
    if sorted(stage_keep) != sorted(fixed_keep):
        raise ValueError(f"framefusion: fixed_keep changes tokens at layers {sorted(fixed_keep)}, the recomputed "
                         f"reduction at {sorted(stage_keep)}")
    for layer, kept in stage_keep.items():
        if not torch.equal(kept.cpu(), fixed_keep[layer].to(device="cpu", dtype=kept.dtype)):
            raise ValueError(f"framefusion: fixed_keep[{layer}] differs from the recomputed reduction at layer {layer}")


def same_patch_similarity(states: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every vision token to the previous one of its spatial position.

    Args:
        states: ``(n, D)`` the present vision tokens' hidden states, in sequence (frame) order.
        patch: ``(n,)`` int64 their spatial positions.
    Returns:
        ``(n,)`` float32 similarities, :data:`NO_PREVIOUS` for each position's first token.
    """
    order = torch.argsort(patch, stable=True)  # position-major, frame order within a position
    s = states.index_select(0, order).float()
    dot = (s[1:] * s[:-1]).sum(-1)
    norms = s.norm(dim=-1)
    cos = dot / (norms[1:] * norms[:-1]).clamp_min(torch.finfo(torch.float32).tiny)  # a zero state: 0, not NaN
    sorted_patch = patch.index_select(0, order)
    cos = torch.where(sorted_patch[1:] == sorted_patch[:-1], cos, NO_PREVIOUS)
    in_order = torch.cat([cos.new_full((1,), NO_PREVIOUS), cos])
    return torch.empty_like(in_order).index_copy_(0, order, in_order)


def merge_targets(patch: torch.Tensor, merge: torch.Tensor) -> torch.Tensor:
    """``(n,)`` for each vision token, the index (among the ``n``) of the token it merges into: for a merged token
    the last non-merged token before it of the same spatial position, for any other token itself.

    Args:
        patch: ``(n,)`` spatial positions, tokens in frame order; merge: ``(n,)`` bool, never a position's first.
    """
    order = torch.argsort(patch, stable=True)
    idx = torch.arange(len(patch), device=patch.device)
    # the last non-merged token at or before each place in position-major order (a position's first token is one)
    anchor = torch.cummax(torch.where(merge.index_select(0, order), -1, idx), dim=0).values
    return torch.empty_like(idx).index_copy_(0, order, order.index_select(0, anchor))


def merge_tokens(hidden: torch.Tensor, vision: torch.Tensor, target: torch.Tensor, merge: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold every merged vision token into its target: the target becomes the mean of itself and its merged tokens.

    Args:
        hidden: ``(1, L', D)``; vision: ``(n,)`` the vision tokens' positions in it; target: ``(n,)`` from
            :func:`merge_targets`; merge: ``(n,)`` bool.
    Returns:
        ``(hidden (1, L', D)`` with the targets' means, ``keep (L' - merged,)`` the positions that stay).
    """
    rows = hidden[0]
    members = vision[merge]
    targets = vision.index_select(0, target)[merge]
    uniq, slot = torch.unique(targets, return_inverse=True)
    acc = rows.index_select(0, uniq).float().index_add_(0, slot, rows.index_select(0, members).float())
    counts = torch.bincount(slot, minlength=len(uniq)) + 1  # the target itself and its members
    merged = rows.index_copy(0, uniq, (acc / counts[:, None]).to(rows.dtype))
    keep = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device).index_fill_(0, members, False)
    return merged[None], torch.nonzero(keep).view(-1)


def sparsity_upper_bound(left: float, layers_left: int, present: int) -> float:
    """The share of the ``present`` vision tokens to drop so that each of the ``layers_left`` layers processing the
    rest spends exactly the ``left`` token-layers of the budget (the authors' ``_compute_pruning_ratio``, in tokens);
    0 when even all of them fit."""
    per_layer = left / layers_left
    return 0.0 if per_layer > present else 1.0 - per_layer / present


@dataclass
class _Snapshot:
    """A scoring layer's input, kept for pruning at a later layer."""

    layer: int
    hidden: torch.Tensor  # (1, L_r, D)
    ctx: dict
    state: SeqState


class _FrameFusion:
    """One FrameFusion prefill (the state of its layer loop)."""

    def __init__(self, stack: DecoderStack, embeds: torch.Tensor, layout: PromptLayout, budget: float,
                 similarity_lower_bound: float, ratio_lower_bound: float, patch: torch.Tensor):
        self.stack, self.layout = stack, layout
        self.similarity_lower_bound, self.ratio_lower_bound = similarity_lower_bound, ratio_lower_bound
        self.num_layers, self.num_vision = len(stack.layers), len(layout.vision_idx)
        self.budget = budget
        self.total = budget * self.num_layers * self.num_vision  # token-layers the budget allows
        length, device = embeds.shape[1], embeds.device
        self.is_vision = torch.zeros(length, dtype=torch.bool, device=device).index_fill_(0, layout.vision_idx, True)
        self.is_query = torch.zeros(length, dtype=torch.bool, device=device).index_fill_(0, layout.query_idx, True)
        # spatial position by input index (-1 for text tokens, which it is never read for)
        self.patch_of = torch.full((length,), -1, dtype=torch.long, device=device).index_copy_(
            0, layout.vision_idx, patch)
        index = torch.arange(length, device=device)
        self.hidden = embeds
        self.state = SeqState(index, layout.position_ids if layout.position_ids is not None else index)
        self.ctx = stack.begin(self.hidden, self.state)
        self.present = self.num_vision  # vision tokens in the current sequence
        self.spent = 0  # token-layers processed so far
        self.merging, self.pruning = True, True  # still to come
        self.snapshot: _Snapshot | None = None
        self.scoring = {i for i, t in enumerate(stack.layer_types) if t in (ATTENTION, MAMBA)}
        if not self.scoring:
            raise ConfigError("framefusion: the model has no attention or Mamba layer to rank vision tokens with")

    def run(self, observer) -> PrefillResult:
        per_layer, stage_keep, score_s = [], {}, 0.0
        device = self.hidden.device
        for i in range(self.num_layers):
            if self.merging or self.pruning:
                synchronize(device)  # score_s holds the method's work only (not the layers before)
                t0 = time.perf_counter()
                changed = self.merge(i) if self.merging else self.prune(i)
                if changed:
                    stage_keep[i] = self.state.index.index_select(0, self.vision_positions())
                synchronize(device)
                score_s += time.perf_counter() - t0
            if i == self.num_layers - 1:
                self.check_met(i)
            self.spent += self.present
            per_layer.append(self.present)
            if self.pruning and i in self.scoring:  # the pruning layer ranks with the last scoring layer's input
                self.snapshot = _Snapshot(i, self.hidden, self.ctx, self.state)
            if observer is not None:
                observer(i, self.hidden, self.ctx, self.state)
            self.hidden = self.stack.run_layer(i, self.hidden, self.ctx)
        logits = self.stack.logits(self.hidden[:, -1:])[0, -1]
        return PrefillResult(logits=logits, vision_per_layer=per_layer, stage_keep=stage_keep, score_s=score_s,
                             last_hidden=self.hidden[0, -1])

    def vision_positions(self, state: SeqState | None = None) -> torch.Tensor:
        """``(n,)`` positions of the present vision tokens in the current sequence (or ``state``'s)."""
        state = state or self.state
        return torch.nonzero(self.is_vision.index_select(0, state.index)).view(-1)

    def left(self, i: int) -> float:
        """Token-layers of the budget left for layers ``i..L-1``; the budget is unreachable if none are."""
        left = self.total - self.spent
        if left < 0:
            raise InfeasibleBudget(
                f"framefusion: budget {self.budget} cannot be reached on this input: layers 0..{i - 1} already "
                f"processed {self.spent} vision-token-layers by merging similar tokens, more than the budget's "
                f"{self.total:.1f} ({self.budget} x {self.num_layers} layers x {self.num_vision} vision tokens); "
                "raise the budget or reduction.framefusion.similarity_lower_bound")
        return left

    def check_met(self, last: int) -> None:
        """After the last layer's merge: a run that never finished merging must still have met the budget."""
        if not self.pruning:
            return
        over = (self.spent + self.present) / (self.num_layers * self.num_vision) - self.budget
        if over > 1 / self.num_vision + 1e-12:
            raise InfeasibleBudget(
                f"framefusion: budget {self.budget} cannot be reached on this input: merging had not finished by the "
                f"last layer ({last}), so the layers process a mean share of {self.budget + over:.4f} of the "
                f"{self.num_vision} vision tokens; raise the budget or lower "
                "reduction.framefusion.ratio_lower_bound")

    def merge(self, i: int) -> bool:
        """Layer ``i``'s merge (steps 1-3 of the module docstring); whether tokens left the sequence."""
        bound = sparsity_upper_bound(self.left(i), self.num_layers - i, self.present)
        vision = self.vision_positions()
        patch = self.patch_of.index_select(0, self.state.index.index_select(0, vision))
        similarity = same_patch_similarity(self.hidden[0].index_select(0, vision), patch)
        merge = similarity >= self.similarity_lower_bound
        share = int(merge.sum()) / self.present
        if share < bound:
            self.merging = share >= self.ratio_lower_bound
        else:  # the most similar ones meet the budget: nothing is left to prune
            merge = top_k_mask(similarity, math.floor(bound * self.present + FLOOR_SLACK))
            self.merging = self.pruning = False
        n_merged = int(merge.sum())
        if n_merged == 0:
            return False
        self.hidden, keep = merge_tokens(self.hidden, vision, merge_targets(patch, merge), merge)
        self.reduce(keep, self.present - n_merged)
        return True

    def prune(self, i: int) -> bool:
        """Layer ``i``'s pruning by importance, to the count that spends the budget over layers ``i..L-1``."""
        self.pruning = False
        keep_count = min(self.present, max(1, round(self.left(i) / (self.num_layers - i))))
        if keep_count == self.present:
            return False
        scores = self.importance(i)
        vision = self.vision_positions()
        chosen = vision[top_k_mask(scores, keep_count)]
        keep = torch.nonzero(~self.is_vision.index_select(0, self.state.index)).view(-1)
        self.reduce(torch.sort(torch.cat([keep, chosen])).values, keep_count)
        return True

    def importance(self, i: int) -> torch.Tensor:
        """``(present,)`` scores of the present vision tokens for pruning at layer ``i``: by the last scoring layer
        before ``i`` on its input (the snapshot), or by the first scoring layer from ``i`` on, on layer ``i``'s input."""
        snap = self.snapshot
        if snap is None:  # no scoring layer before i: they all lie after it (the model has one, __init__ checks)
            snap = _Snapshot(min(self.scoring), self.hidden, self.ctx, self.state)
        vision = self.vision_positions(snap.state)
        query = torch.nonzero(self.is_query.index_select(0, snap.state.index)).view(-1)
        first = self.layout.query_start - (self.num_vision - len(vision))  # only vision tokens left before it
        scores = score_layer(self.stack, snap.layer, snap.hidden, snap.ctx, query, vision, first, SCORER, None)
        # the snapshot's tokens include every present one: pick theirs by input index
        by_input = torch.full((len(self.is_vision),), float("nan"), device=scores.device)
        by_input.index_copy_(0, snap.state.index.index_select(0, vision), scores.float())
        return by_input.index_select(0, self.state.index.index_select(0, self.vision_positions()))

    def reduce(self, keep: torch.Tensor, present: int) -> None:
        """Keep the tokens at positions ``keep`` (with their original position ids), ``present`` of them vision."""
        self.hidden, self.state = self.hidden.index_select(1, keep), self.state.select(keep)
        self.ctx = self.stack.begin(self.hidden, self.state)
        self.present = present
