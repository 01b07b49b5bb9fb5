"""Layer-wise prefill with in-LLM token reduction (STUDY.md §3).

The decoder runs one layer at a time. At each stage layer of a :class:`~.schedule.Schedule` the vision tokens
present are scored with that layer's own mixer (query-conditioned, one score for attention and Mamba layers), or
with an earlier layer's (``Schedule.rank_layers``: FastV and PDrop rank with the layer before the stage, on its
input), and only the top ones are passed on; text tokens are never dropped. The reduced sequence keeps the original
positions of its tokens. Generation after prefill uses the reduced sequence. With ``Schedule.zero_out`` (an
ablation) a stage zeroes the tokens it drops instead of removing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ..device import capturing, synchronize
from ..errors import ConfigError
from ..layout import PromptLayout
from ..models.stack import ATTENTION, DELTANET, MAMBA, DecoderStack, SeqState
from .schedule import Schedule


@dataclass(frozen=True)
class Scorer:
    """How a stage ranks vision tokens.

    Attributes:
        kind: ``unified`` (attention, Mamba-2 and Gated DeltaNet layers), ``attention`` (attention layers only),
            ``random``,
            ``oracle`` (a control: the ground-truth evidence tokens of ``PromptLayout.evidence`` first, the others
            in random order), or ``dart`` (DART's pivots and least-duplicated tokens, :func:`dart_keep`).
        query: ``question`` (every query token asks) or ``last_token`` (FastV / PDrop).
        mamba_decay: include the SSM's position-dependent decay in the Mamba score (ablation); on Gated DeltaNet
            layers the full implicit attention, gate and delta-rule correction (:mod:`.deltanet`).
        seed: for ``random``.
        mamba_signed: the signed ``C_t . B_s`` instead of its magnitude (ablation).
        mamba_head_max: the maximum over heads instead of the mean (ablation).
        mamba_x_norm: each source weighted by ``||x_s||`` per head (STUDY.md's option; ablation).
        mamba_clip: Mamba layers rank by the clip score instead (:func:`~.importance.mamba_clip_importance`,
            query-blind; ablation).
        The four Mamba-2 variants (``mamba_signed``, ``mamba_head_max``, ``mamba_x_norm``, ``mamba_clip``) have no
        Gated DeltaNet counterpart: :func:`score_layer` refuses them on a DeltaNet layer.
        image_pivots / text_pivots: for ``dart`` (DART's duplication-based selection, :func:`dart_keep`): its
            vision and question pivot tokens.
    """

    kind: str = "unified"
    query: str = "question"
    mamba_decay: bool = False
    seed: int = 0
    mamba_signed: bool = False
    mamba_head_max: bool = False
    mamba_x_norm: bool = False
    mamba_clip: bool = False
    image_pivots: int = 4
    text_pivots: int = 4

    def scoring_types(self) -> tuple[str, ...]:
        return (ATTENTION,) if self.kind == "attention" else (ATTENTION, MAMBA, DELTANET)

    def mamba_only_options(self) -> list[str]:
        """The Mamba-2 score variants set (each the name of its method option, :mod:`.methods`)."""
        return [name for name in ("mamba_signed", "mamba_head_max", "mamba_x_norm", "mamba_clip")
                if getattr(self, name)]


@dataclass
class PrefillResult:
    """Outcome of one prefill.

    Attributes:
        logits: ``(vocab,)`` next-token logits at the last position.
        vision_per_layer: vision tokens processed by each layer.
        stage_keep: stage layer -> ``(k,)`` input indices of the vision tokens it kept (for replay).
        score_s: wall time spent scoring and gathering tokens.
        last_hidden: ``(D,)`` the last layer's output at the last position (before the final norm).
    """

    logits: torch.Tensor
    vision_per_layer: list[int]
    stage_keep: dict[int, torch.Tensor] = field(default_factory=dict)
    score_s: float = 0.0
    last_hidden: torch.Tensor | None = None


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``(n,)`` bool mask of the ``k`` highest ``scores``, ties broken towards the lower index: the set that
    ``argsort(scores, descending=True, stable=True)[:k]`` selects (NaN above +inf, as there), without sorting all
    ``n`` (a partial top-k and a few passes; in a scratch timing, sorting 8k scores was a tenth of a stage's cost on
    a CPU) and without reading anything back from the device."""
    n = scores.shape[0]
    if k >= n or k <= 0:
        return torch.full((n,), k > 0, dtype=torch.bool, device=scores.device)
    top = torch.topk(scores, k, sorted=False).values  # topk, like sort, takes NaN for the largest value
    top_nan = top.isnan()
    kth = torch.where(top_nan, torch.inf, top).amin()  # the k-th highest, if it is not NaN
    kth_is_nan = top_nan.all()
    nan = scores.isnan()
    above = (scores > kth) | (nan & ~kth_is_nan)
    ties = torch.where(kth_is_nan, nan, scores == kth)
    # the ties that fill the k places left, lowest index first
    return above | (ties & (ties.cumsum(0) <= k - above.sum()))


def dart_keep(stack: DecoderStack, i: int, hidden: torch.Tensor, vision: torch.Tensor, query: torch.Tensor, k: int,
              scorer: Scorer) -> torch.Tensor:
    """``(|V_cur|,)`` float 1/0: the ``k`` vision tokens DART keeps at stage layer ``i`` (Wen et al., 2025), as its
    authors' code runs it at layer K = 2: pivots and cosine similarities on the hidden states entering the layer
    (there: layer K-1's output under the final norm; here: under layer ``i``'s own RMSNorm, which any layer type
    has); the vision and question pivots are the tokens of largest L1 norm of those states (there: of layer K-1's
    key states, which a Mamba layer has not; DART reports the pivot criterion barely matters), each pivot taking
    its share of the least similar vision tokens (:func:`~hybridreduce.redundancy.methods.dart_select`)."""
    from ..redundancy.methods import dart_select

    _, pre = stack.mixer_input(i, hidden)
    states = pre.apply()[0].float()  # (L', D)
    keep = dart_select(states.index_select(0, vision), states.index_select(0, query), k, scorer.image_pivots,
                       scorer.text_pivots)
    return keep.float()


def score_layer(stack: DecoderStack, i: int, hidden: torch.Tensor, ctx: dict, query: torch.Tensor,
                vision: torch.Tensor, query_start: int, scorer: Scorer, generator: torch.Generator | None
                ) -> torch.Tensor:
    """``(|V_cur|,)`` importance of the current vision tokens at layer ``i``; ``query_start`` is the first query
    token's position in the current sequence."""
    if scorer.kind == "random":
        return torch.rand(len(vision), generator=generator).to(hidden.device)
    if scorer.kind == "oracle":
        raise ValueError("the oracle scorer ranks by the layout's evidence: prefill calls it, not score_layer")
    from .deltanet import deltanet_importance, gated_attention_importance, is_gated_attention
    from .importance import attention_importance, mamba_clip_importance, mamba_importance

    mixer, normed = stack.mixer_input(i, hidden)
    kind = stack.layer_types[i]
    if kind == ATTENTION:
        if is_gated_attention(mixer):  # Qwen3.5's: [query | gate] rows, q/k norms, partial rotary
            return gated_attention_importance(mixer, normed.apply(), query, vision, ctx["rotary"],
                                              query_start=query_start)
        return attention_importance(mixer, normed, query, vision, ctx.get("rotary"), query_start=query_start)
    if kind == DELTANET:
        if options := scorer.mamba_only_options():
            raise ConfigError(f"reduction.methods: {', '.join(options)} is a Mamba-2 score variant, not defined for "
                              f"Gated DeltaNet layers (layer {i}); use the unified score or mamba_decay")
        return deltanet_importance(mixer, normed.apply(), query_idx=query, vision_idx=vision,
                                   decay=scorer.mamba_decay)
    if scorer.mamba_clip:
        return mamba_clip_importance(mixer, normed, vision)
    return mamba_importance(mixer, normed, query, vision, decay=scorer.mamba_decay, use_x_norm=scorer.mamba_x_norm,
                            query_start=query_start, signed=scorer.mamba_signed, head_max=scorer.mamba_head_max)


def prefill(
    stack: DecoderStack,
    embeds: torch.Tensor,
    layout: PromptLayout,
    schedule: Schedule | None = None,
    scorer: Scorer | None = None,
    fixed_keep: dict[int, torch.Tensor] | None = None,
    grad: bool = False,
    observer: Callable[[int, torch.Tensor, dict, SeqState], None] | None = None,
) -> PrefillResult:
    """Run the decoder on ``embeds`` ``(1, L, D)``, reducing vision tokens as ``schedule`` says.

    With ``fixed_keep`` the stages keep exactly those input indices instead of scoring (used to replay a
    reduction while generating). With no schedule this is the model's own forward, layer by layer. ``grad``
    keeps the autograd graph (finetuning under reduction; token selection itself is not differentiable).
    ``observer(i, hidden, ctx, state)`` sees the input of every layer ``i`` after that layer's reduction (probing).

    A stage reads nothing back from the device: every shape follows from the schedule and the layout (the number
    of vision tokens each stage keeps, the text tokens that are never dropped), so the prefill can be captured in
    a CUDA graph (:mod:`.cuda_graph`). Only ``layout.query_start`` is read, once per layout, and outside a capture
    a replay checks ``fixed_keep``. Timing ``score_s`` synchronises the device around every stage; in a capture it
    is not measured (0).
    """
    with torch.set_grad_enabled(grad):
        return _prefill(stack, embeds, layout, schedule, scorer, fixed_keep, observer)


def _prefill(stack, embeds, layout, schedule, scorer, fixed_keep, observer) -> PrefillResult:
    length = embeds.shape[1]
    is_vision = torch.zeros(length, dtype=torch.bool, device=embeds.device)
    is_vision[layout.vision_idx] = True
    is_query = torch.zeros(length, dtype=torch.bool, device=embeds.device)
    is_query[layout.query_idx] = True
    stages = dict(zip(schedule.stage_layers, schedule.keep_counts)) if schedule else {}
    scorer = scorer or Scorer()
    generator = torch.Generator().manual_seed(scorer.seed) if scorer.kind in ("random", "oracle") else None
    if scorer.kind == "oracle" and fixed_keep is None:
        if layout.evidence is None:
            raise ValueError("the oracle scorer needs PromptLayout.evidence (the synthetic benchmark's ground truth)")
        # evidence first (score >= 1), the rest in random order: a ceiling on what a selection at a budget can keep
        evidence = torch.zeros(length, device=embeds.device)
        evidence[layout.vision_idx] = layout.evidence.to(embeds.device).float() + torch.rand(
            len(layout.vision_idx), generator=generator).to(embeds.device) * 0.5

    index = torch.arange(length, device=embeds.device)
    hidden = embeds
    # zero_out: the tokens not zeroed (all but the dropped vision tokens), over the whole sequence, which keeps its
    # length; None when stages remove the tokens they drop
    alive = torch.ones(length, dtype=torch.bool, device=embeds.device) \
        if schedule and schedule.zero_out and schedule.stage_layers else None
    state = SeqState(index, layout.position_ids if layout.position_ids is not None else index)
    ctx = stack.begin(hidden, state)
    per_layer, stage_keep, score_s = [], {}, 0.0
    # Counts known on the host, so that no stage reads one from the device: vision tokens change only at stages;
    # text tokens, the query tokens among them, are never dropped.
    n_vision, n_query = len(layout.vision_idx), len(layout.query_idx)
    n_text = length - n_vision
    query_start = layout.query_start if stages and fixed_keep is None else None
    timed = not capturing(embeds.device)  # a graph capture may not wait for the device
    # The layer that ranks each stage (its own layer, or an earlier one for FastV / PDrop): an earlier ranking layer
    # scores on its input, after its own stage if any; its ranking waits in `ranked` until the stage's layer.
    rank_at = {r: l for r, l in zip(schedule.ranking_layers, schedule.stage_layers)} if schedule else {}
    ranked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def present_vision() -> torch.Tensor:
        """``(L',)`` bool: the vision tokens of the current sequence that are still in play."""
        cur = is_vision.index_select(0, state.index)
        return cur if alive is None else cur & alive

    def rank(i: int, n_kept: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(vision, scores)``: the positions of the present vision tokens in the current sequence and their
        scores by layer ``i``; None when the stage keeps all or none of them (nothing to rank)."""
        if fixed_keep is not None or not 0 < n_kept < n_vision:
            return None
        vision = torch.nonzero_static(present_vision(), size=n_vision).view(-1)  # their positions
        if scorer.query == "question":
            query = torch.nonzero_static(is_query.index_select(0, state.index), size=n_query).view(-1)
            # all removed tokens lay before it (zeroed ones stay in place)
            first = query_start - (len(layout.vision_idx) - n_vision if alive is None else 0)
        else:  # the last token asks
            first = hidden.shape[1] - 1
            query = torch.arange(first, first + 1, device=hidden.device)
        if scorer.kind == "oracle":
            return vision, evidence.index_select(0, state.index.index_select(0, vision))
        if scorer.kind == "dart":  # a selection of exactly n_kept, not a ranking: its tokens score 1
            return vision, dart_keep(stack, i, hidden, vision, query, n_kept, scorer)
        return vision, score_layer(stack, i, hidden, ctx, query, vision, first, scorer, generator)

    for i in range(len(stack.layers)):
        if i in stages:
            if timed:
                synchronize(hidden.device)  # on GPU, score_s holds this stage's work only (not the layers before)
            t0 = time.perf_counter()
            # index_select, not advanced indexing, for every gather: 4x faster here on a CPU (scratch timing)
            cur_vision = present_vision()
            if fixed_keep is not None:
                n_kept = len(fixed_keep[i])
                # checked outside a capture (the warm-up runs of a captured replay check the same tensors)
                keep_mask = ~cur_vision | _replayed(i, fixed_keep[i], cur_vision, state.index, length, check=timed)
            else:
                n_kept = min(stages[i], n_vision)
                keep_mask = ~cur_vision  # text tokens stay; the vision ones are chosen next
                ranking = ranked.pop(i) if i in ranked else rank(i, n_kept)
                if ranking is not None:
                    vision, scores = ranking
                    chosen = torch.nonzero_static(top_k_mask(scores, n_kept), size=n_kept).view(-1)
                    keep_mask.index_fill_(0, vision.index_select(0, chosen), True)
                elif n_kept > 0:
                    keep_mask.fill_(True)
            n_vision = n_kept
            if alive is None:
                keep = torch.nonzero_static(keep_mask, size=n_text + n_kept).view(-1)
                hidden, state = hidden.index_select(1, keep), state.select(keep)
                ctx = stack.begin(hidden, state)
            else:  # the dropped tokens stay, zeroed below at every later layer's input
                alive = alive & keep_mask
                alive_scale = alive[None, :, None].to(hidden.dtype)  # (1, L, 1), cast once per stage
            stage_keep[i] = state.index.index_select(0, torch.nonzero_static(present_vision(), size=n_vision).view(-1))
            if timed:
                synchronize(hidden.device)
                score_s += time.perf_counter() - t0
        if rank_at.get(i, i) != i and fixed_keep is None:  # layer i ranks for a later stage, on its own input
            if timed:
                synchronize(hidden.device)
            t0 = time.perf_counter()
            ranking = rank(i, min(stages[rank_at[i]], n_vision))
            if ranking is not None:
                ranked[rank_at[i]] = ranking
            if timed:
                synchronize(hidden.device)
                score_s += time.perf_counter() - t0
        per_layer.append(n_vision)
        if alive is not None and i >= schedule.stage_layers[0]:  # a layer's residual update would revive them
            hidden = hidden * alive_scale
        if observer is not None:
            observer(i, hidden, ctx, state)
        hidden = stack.run_layer(i, hidden, ctx)
    logits = stack.logits(hidden[:, -1:])[0, -1]
    return PrefillResult(logits=logits, vision_per_layer=per_layer, stage_keep=stage_keep, score_s=score_s,
                         last_hidden=hidden[0, -1])


def _replayed(layer: int, kept: torch.Tensor, cur_vision: torch.Tensor, index: torch.Tensor, length: int,
              check: bool) -> torch.Tensor:
    """``(L',)`` bool: the present tokens (input indices ``index`` of a sequence of ``length``) that are vision tokens
    in ``kept``. A scatter and a gather: no sort and no sync (``torch.isin`` sorts, and may copy from the host).
    With ``check`` (two host reads), ``kept`` must hold distinct input indices of vision tokens present at
    ``layer``, as a prefill's ``stage_keep`` does."""
    def refuse(present: int) -> ValueError:
        return ValueError(f"fixed_keep[{layer}] must hold distinct input indices of vision tokens present at layer "
                          f"{layer}: {len(kept)} indices, {present} of them such tokens")

    if check and len(kept) and not all(0 <= int(v) < length for v in torch.aminmax(kept)):
        raise refuse(0)
    among = torch.zeros(length, dtype=torch.bool, device=index.device).index_fill_(0, kept, True)
    replayed = cur_vision & among.index_select(0, index)
    if check and (present := int(replayed.sum())) != len(kept):
        raise refuse(present)
    return replayed


def _append_position(layout: PromptLayout) -> PromptLayout:
    """The layout of a sequence grown by one generated token (next position id in every M-RoPE axis)."""
    pos = layout.position_ids
    if pos is None:
        return layout
    nxt = pos.max() + 1
    extra = torch.full((*pos.shape[:-1], 1), int(nxt), dtype=pos.dtype, device=pos.device)
    return replace(layout, position_ids=torch.cat([pos, extra], dim=-1))


@torch.no_grad()
def greedy_generate(
    stack: DecoderStack,
    embeds: torch.Tensor,
    layout: PromptLayout,
    max_new_tokens: int = 1,
    schedule: Schedule | None = None,
    scorer: Scorer | None = None,
    allowed_tokens: torch.Tensor | None = None,
) -> tuple[list[int], PrefillResult]:
    """Greedy decoding after a reduced prefill. Later tokens replay the first prefill's reduction on the
    extended sequence (no cache needed), so every generated token sees the same reduced vision tokens.

    ``allowed_tokens`` restricts the argmax (e.g. to option letters for multiple choice).
    """
    first = prefill(stack, embeds, layout, schedule, scorer)
    result, tokens = first, []
    for step in range(max_new_tokens):
        logits = result.logits
        if allowed_tokens is not None:
            masked = torch.full_like(logits, float("-inf"))
            masked[allowed_tokens] = logits[allowed_tokens]
            logits = masked
        tokens.append(int(torch.argmax(logits)))
        if step + 1 == max_new_tokens:
            break
        new = stack.embed_tokens(torch.tensor([tokens[-1:]], device=embeds.device))
        embeds = torch.cat([embeds, new.to(embeds.dtype)], dim=1)
        layout = _append_position(layout)
        result = prefill(stack, embeds, layout, schedule, scorer, fixed_keep=first.stage_keep)
    return tokens, first
