"""Registry of pre-LLM redundancy-reduction methods.

Every method maps ``(grid, q, seed) -> keep mask (T, h, w) bool``, or for a merging method ``(keep mask, merged
embeddings (T, h, w, d))`` whose kept positions hold the merged tokens (:func:`reduce_grid` applies them). ``q``
is the pruning rate: the fraction of tokens to drop (EVS's ``video_pruning_rate``). ``random``, ``uniform`` and
``divprune`` keep exactly as many tokens as ``evs`` at the same ``q`` (equal retention). Retained tokens keep
their original (t, i, j) positions, merged ones the position of the token they are merged into: the mask is
applied by the caller, which must keep the full video's position ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..plugins import PRE_LLM, load_plugins
from .grid import TokenGrid

KeepMaskFn = Callable[[TokenGrid, float, int], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
REGISTRY: dict[str, KeepMaskFn] = {}

# Frame 0's dissimilarity in the serving implementations: above any 1 - cos (which is at most 2), so the first
# frame always wins the top-k.
FIRST_FRAME_SCORE = 255.0


def register(name: str) -> Callable[[KeepMaskFn], KeepMaskFn]:
    def deco(fn: KeepMaskFn) -> KeepMaskFn:
        REGISTRY[name] = fn
        return fn

    return deco


def registry() -> dict[str, KeepMaskFn]:
    """The built-in methods and those of installed plugins (:mod:`hybridreduce.plugins`)."""
    load_plugins(PRE_LLM, REGISTRY)
    return REGISTRY


def get_method(name: str) -> KeepMaskFn:
    if name not in registry():
        raise ConfigError(f"redundancy.methods: unknown method '{name}' (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def evs_retained_count(t: int, h: int, w: int, q: float) -> int:
    """Tokens EVS keeps: ``max(h * w, int(T * h * w * (1 - q)))`` (never fewer than one full frame)."""
    return max(h * w, int(t * h * w * (1 - q)))


def _top_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` highest scores of ``score`` ``(T, h, w)``; ties go to the earlier flat index."""
    order = torch.argsort(score.flatten(), descending=True, stable=True)
    mask = torch.zeros(score.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask.view(score.shape)


@register("evs")
def evs(grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """EVS as served (vLLM, SGLang, transformers ``nemotron_h_omni``): keep the global top-k tokens by
    ``1 - cos(e[t, i, j], e[t - 1, i, j])``, frame 0 always kept."""
    e = grid.embeddings
    dissimilarity = 1 - F.cosine_similarity(e[1:], e[:-1], dim=-1)  # (T - 1, h, w)
    first = torch.full_like(e[:1, ..., 0], FIRST_FRAME_SCORE)
    return _top_k_mask(torch.cat([first, dissimilarity]), evs_retained_count(*grid.shape, q))


@register("evs_pixel")
def evs_pixel(grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """The EVS paper's variant on raw patches: mean ``|ΔRGB|`` of each patch to the previous frame; patches at
    or below the ``q``-th percentile (over frames 1..T-1) are dropped; frame 0 is kept. Runs before the encoder.

    Ties at the threshold are dropped: in static footage most patches change by exactly 0, and keeping every tie
    would keep the whole static video at any ``q``."""
    if grid.pixels is None:
        raise ConfigError("redundancy.methods: 'evs_pixel' needs pixel patches, but this token grid has none")
    diff = (grid.pixels[1:] - grid.pixels[:-1]).abs().mean(-1)  # (T - 1, h, w)
    keep = torch.ones(grid.shape, dtype=torch.bool)
    if diff.numel() and q > 0:
        keep[1:] = diff > torch.quantile(diff.flatten().double(), q).float()
    return keep


@register("random")
def random_keep(grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """Control: EVS's token count, chosen uniformly at random (seeded)."""
    score = torch.rand(grid.shape, generator=torch.Generator().manual_seed(seed))
    return _top_k_mask(score, evs_retained_count(*grid.shape, q))


@register("uniform")
def uniform_keep(grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """Control: EVS's token count, evenly spaced over the flattened (t, i, j) order (a space-time stride)."""
    t, h, w = grid.shape
    n, k = t * h * w, evs_retained_count(t, h, w, q)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.arange(k) * n // k] = True
    return mask.view(t, h, w)


@register("divprune")
def divprune(grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """DivPrune (Alvar et al., CVPR 2025): pruning as a max-min diversity problem over the token embeddings,
    solved greedily as in the authors' code. Distance ``1 - cos``; the first token is the one farthest from its
    nearest neighbour, then each step adds the token whose distance to the nearest already selected token is
    largest (ties: the earlier flat index). EVS's token count, over the whole video at once (the paper prunes the
    visual tokens of the whole input); question-blind."""
    e = F.normalize(grid.embeddings.reshape(-1, grid.embeddings.shape[-1]).float(), dim=-1)  # (N, d)
    n, k = len(e), evs_retained_count(*grid.shape, q)
    # nearest-neighbour distance of every token, in row blocks: no N x N matrix for long videos
    nearest = torch.empty(n, device=e.device)
    for start in range(0, n, 4096):
        d = 1 - e[start:start + 4096] @ e.T  # (b, N)
        rows = torch.arange(len(d), device=e.device)
        d[rows, rows + start] = float("inf")  # not itself
        nearest[start:start + len(d)] = d.min(dim=1).values
    chosen = torch.zeros(n, dtype=torch.bool, device=e.device)
    pick = int(torch.argmax(nearest))
    to_selected = torch.full((n,), float("inf"), device=e.device)  # distance of each token to its nearest selected
    for _ in range(k):
        chosen[pick] = True
        to_selected = torch.minimum(to_selected, 1 - e @ e[pick])
        to_selected[chosen] = -float("inf")  # never picked twice, even where copies sit at distance 0
        pick = int(torch.argmax(to_selected))
    return chosen.view(grid.shape).cpu()


@register("pool")
def temporal_pool(grid: TokenGrid, q: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Control: plain temporal average pooling, the "downsampling" baseline that VTC-Bench finds strong. The frames
    are split into ``K = max(1, ⌊T * (1 - q) + 1/2⌋)`` contiguous groups of near-equal length (longer ones first);
    each group's tokens at every spatial position are averaged into one token that takes the position of the
    group's first frame. Retention ``K / T`` (EVS's count when ``T * (1 - q)`` is a whole number)."""
    t = grid.shape[0]
    groups = torch.tensor_split(torch.arange(t), max(1, int(t * (1 - q) + 0.5)))  # round half up
    keep = torch.zeros(grid.shape, dtype=torch.bool)
    merged = grid.embeddings.clone()
    for frames in groups:
        keep[frames[0]] = True
        merged[frames[0]] = grid.embeddings[frames].mean(dim=0)
    return keep, merged


def _needs_query(grid: TokenGrid, method: str) -> torch.Tensor:
    if grid.query is None or not len(grid.query):
        raise ConfigError(f"redundancy.methods: '{method}' is conditioned on the question, but this token grid "
                          "carries no question embeddings (TokenGrid.query)")
    return grid.query.float()


def greedy_dpp(kernel_row: Callable[[int], torch.Tensor], diagonal: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy MAP inference of a DPP (Chen et al., NeurIPS 2018, Algorithm 1): ``k`` items, each step adding the one
    that most increases ``log det L_S``, by an incremental Cholesky update; ``kernel_row(j)`` gives row ``j`` of
    ``L`` ``(N,)``, ``diagonal`` its diagonal ``(N,)``. Only the selected rows are computed (``k x N`` memory, no
    ``N x N`` matrix). A gain below 1e-9 of the largest diagonal entry is zero (a copy of a selected item, or the
    kernel's rank reached): such an item is taken only when nothing with a positive gain is left; gains within
    that tolerance of the best are ties, which go to the lower index. Returns the ``(k,)`` selected indices in order."""
    n = len(diagonal)
    gains = diagonal.double().clone()  # d_i^2: the gain of adding i to the current set
    tolerance = 1e-9 * float(gains.max()) if n else 0.0
    cis = torch.zeros(k, n, dtype=torch.float64, device=diagonal.device)
    chosen = torch.zeros(n, dtype=torch.bool, device=diagonal.device)
    order = []
    for step in range(k):
        free = torch.where(chosen, -torch.inf, gains)
        if free.max() <= 0:  # no gain left (the kernel's rank is reached): the rest in index order, at once
            order += torch.nonzero(~chosen).view(-1)[: k - step].tolist()
            break
        pick = int(torch.nonzero(free >= free.max() - tolerance)[0])  # ties, to rounding, go to the lower index
        order.append(pick)
        chosen[pick] = True
        d = gains[pick].clamp_min(1e-12).sqrt()
        e = (kernel_row(pick).double() - cis[:step, pick] @ cis[:step]) / d
        cis[step] = e
        gains = gains - e * e
        # rounding leaves ~1e-16 where the gain is zero (a copy, or the kernel's rank reached): zero is zero
        gains = torch.where(gains > tolerance, gains, 0.0)
    return torch.tensor(order, dtype=torch.long)


@register("cdpruner")
def cdpruner(grid: TokenGrid, q: float, seed: int = 0, relevance_weight: float = 0.5) -> torch.Tensor:
    """CDPruner (Zhang et al., NeurIPS 2025: "Beyond Attention or Similarity: Maximizing Conditional Diversity for
    Token Pruning in MLLMs"), with the semantics of its authors' code and of OpenVINO GenAI, which ships it:

    - similarity ``S = V V^T`` of the L2-normalised vision tokens;
    - relevance of each token to the instruction: the mean over the question's tokens of the cosine similarity,
      negated and min-max normalised over the video's tokens, as both implementations do (``r = minmax(-mean cos)``);
      the question's tokens are the model's own text-side representation of it, the embeddings of the query part
      of its prompt at the LLM input (``TokenGrid.query``: our models have no separate text encoder), and the vision
      tokens are compared in that same space (after the projector);
    - conditional kernel ``L = diag(r') S diag(r')`` with ``r' = exp(theta / (2 (1 - theta)) r)`` for the relevance
      weight ``theta`` (``redundancy.cdpruner.relevance_weight``, in [0, 1]): 0 switches relevance off (the plain
      DPP on ``S``), 1 uses ``r`` itself;
    - greedy MAP selection (:func:`greedy_dpp`) of EVS's token count at ``q``, over the whole video at once.

    The kernel's rank is at most the token dimension: a kept count above it (the tiny models' 64-dimensional tokens
    at q = 0.5) leaves the DPP nothing to gain after that many picks, and the rest are taken in (t, i, j) order,
    as the greedy's ties are (the runtimes' float32 code would take them in an arbitrary order of rounding noise).
    """
    if not 0.0 <= relevance_weight <= 1.0:
        raise ConfigError(f"redundancy.cdpruner.relevance_weight: {relevance_weight} is not in [0, 1]")
    v = F.normalize(grid.embeddings.reshape(-1, grid.embeddings.shape[-1]).double(), dim=-1)  # (N, d)
    text = F.normalize(_needs_query(grid, "cdpruner").to(v.device).double(), dim=-1)  # (|Q|, d)
    relevance = -(v @ text.T).mean(dim=1)  # (N,)
    relevance = (relevance - relevance.min()) / (relevance.max() - relevance.min() + 1e-6)
    if relevance_weight < 1:
        relevance = torch.exp(relevance_weight / (2 * (1 - relevance_weight)) * relevance)
    order = greedy_dpp(lambda j: relevance[j] * (v @ v[j]) * relevance, relevance * relevance * (v * v).sum(-1),
                       evs_retained_count(*grid.shape, q))
    keep = torch.zeros(len(v), dtype=torch.bool)
    keep[order] = True
    return keep.view(grid.shape)


def dart_select(tokens: torch.Tensor, text: torch.Tensor, k: int, image_pivots: int, text_pivots: int,
                pivot_norm: torch.Tensor | None = None, text_norm: torch.Tensor | None = None) -> torch.Tensor:
    """DART's selection (Wen et al., 2025: "Stop Looking for Important Tokens in Multimodal Language Models:
    Duplication Matters More"), as its authors' code runs it: the ``image_pivots`` vision tokens and the
    ``text_pivots`` text tokens of largest L1 norm (``pivot_norm`` / ``text_norm``: the norms to rank by; default
    the tokens' own) are pivots; then each pivot in turn (vision pivots first, each group by descending norm) takes
    the ``(k - image_pivots) // (image_pivots + text_pivots)`` not yet chosen vision tokens least cosine-similar to
    it. The kept vision tokens are the vision pivots and those picks (text is never pruned); the remainder of the
    integer division goes to the last pivots, one each, so exactly ``k`` are kept. ``tokens`` ``(N, d)``, ``text``
    ``(M, d)``; returns ``(N,)`` bool."""
    n = len(tokens)
    image_pivots, text_pivots = min(image_pivots, n), min(text_pivots, len(text))
    if not 0 < image_pivots <= k:
        raise ConfigError(f"dart: {image_pivots} vision pivots for {k} kept tokens; the pivots are kept, so there "
                          "must be at least one and at most the kept count")
    norm = (pivot_norm if pivot_norm is not None else tokens.abs().sum(-1)).float()
    tnorm = (text_norm if text_norm is not None else text.abs().sum(-1)).float()
    pivots = [tokens[int(i)] for i in torch.argsort(norm, descending=True, stable=True)[:image_pivots]]
    keep = torch.zeros(n, dtype=torch.bool, device=tokens.device)
    keep[torch.argsort(norm, descending=True, stable=True)[:image_pivots]] = True
    pivots += [text[int(i)] for i in torch.argsort(tnorm, descending=True, stable=True)[:text_pivots]]
    rest = k - image_pivots
    share, extra = divmod(rest, len(pivots))
    for p, pivot in enumerate(pivots):
        take = share + (1 if p >= len(pivots) - extra else 0)
        if not take:
            continue
        sim = F.cosine_similarity(tokens.float(), pivot.float()[None], dim=-1)
        sim = torch.where(keep, torch.inf, sim)  # chosen tokens are not candidates
        keep[torch.argsort(sim, stable=True)[:take]] = True
    return keep


@register("dart_embed")
def dart_embed(grid: TokenGrid, q: float, seed: int = 0, image_pivots: int = 4, text_pivots: int = 4
               ) -> torch.Tensor:
    """DART at the embedding level, as TensorRT-Edge-LLM ships it: :func:`dart_select` on the vision tokens at the
    LLM input (after the projector) with the question's token embeddings as the text (``TokenGrid.query``),
    pivots by the L1 norm of those embeddings, before the LLM runs. The video is one visual span, whose quota is
    EVS's token count at ``q``; the kept tokens keep their positions (``redundancy.dart_embed.image_pivots`` /
    ``text_pivots``; DART's defaults, 4 and 4)."""
    tokens, k = grid.embeddings.reshape(-1, grid.embeddings.shape[-1]).float(), evs_retained_count(*grid.shape, q)
    if image_pivots > k:  # the grid (so the kept count) is known only once the model has encoded the video
        t, h, w = grid.shape
        raise ConfigError(f"redundancy.dart_embed.image_pivots: {image_pivots} vision pivots, but dart_embed keeps "
                          f"only {k} tokens at q = {q} on this model's {t} x {h} x {w} token grid; the pivots are "
                          "kept, so there can be at most that many")
    keep = dart_select(tokens, _needs_query(grid, "dart_embed").to(tokens.device), k, image_pivots, text_pivots)
    return keep.view(grid.shape).cpu()


def reduce_grid(method: str, grid: TokenGrid, q: float, seed: int = 0, options: dict | None = None
                ) -> tuple[TokenGrid, torch.Tensor]:
    """The grid a pre-LLM ``method`` leaves at pruning rate ``q`` (merged tokens in place of the tokens they are
    merged into) and its ``(T, h, w)`` bool keep mask. ``options``: the method's own settings (its config section,
    e.g. ``redundancy.cdpruner``), passed as keyword arguments."""
    out = get_method(method)(grid, q, seed, **(options or {}))
    if isinstance(out, tuple):
        keep, merged = out
        return replace(grid, embeddings=merged), keep
    return grid, out


def keep_mask(method: str, grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """``(T, h, w)`` bool mask of the tokens ``method`` keeps at pruning rate ``q``."""
    return reduce_grid(method, grid, q, seed)[1]


def mask_arrays(method: str, grid: TokenGrid, q: float, seed: int = 0, options: dict | None = None
                ) -> tuple[dict, dict]:
    """What the redundancy stage stores for one sample and rate: arrays ``keep`` ``(T, h, w)`` bool, ``time_s``
    (wall time of the method) and, for a merging method, ``merged`` ``(kept, d)`` (the tokens that replace the
    kept ones), and the ``visual_reduction`` row. :func:`apply_masks` gives the grid back to inference."""
    t0 = time.perf_counter()
    reduced, keep = reduce_grid(method, grid, q, seed, options)
    time_s = time.perf_counter() - t0
    keep = keep.cpu()
    arrays = {"keep": keep.numpy(), "time_s": np.float64(time_s)}
    if reduced is not grid:
        arrays["merged"] = reduced.embeddings[keep.to(reduced.embeddings.device)].float().cpu().numpy()
    t, h, w = grid.shape
    kept = int(keep.sum())
    row = {"method": method, "q": float(q), "frames": t, "grid_h": h, "grid_w": w, "tokens_total": t * h * w,
           "tokens_kept": kept, "kept_fraction": kept / (t * h * w), "kept_per_frame": keep.sum(dim=(1, 2)).tolist(),
           "time_ms": time_s * 1e3}
    return arrays, row


def apply_masks(grid: TokenGrid, arrays) -> tuple[TokenGrid, torch.Tensor, float]:
    """The reduced grid, its keep mask and the method's stored time from one sample's :func:`mask_arrays`
    (``arrays``: that mapping, or an npz's entries of one sample and rate without their key prefix)."""
    keep = torch.from_numpy(np.asarray(arrays["keep"], dtype=bool))
    if tuple(keep.shape) != grid.shape:
        raise ConfigError(f"pre-LLM mask of shape {tuple(keep.shape)} does not fit the vision token grid "
                          f"{grid.shape}: the masks come from other frames or another model")
    if "merged" in arrays:
        embeddings = grid.embeddings.clone()
        embeddings[keep.to(embeddings.device)] = torch.from_numpy(np.asarray(arrays["merged"])).to(embeddings)
        grid = replace(grid, embeddings=embeddings)
    return grid, keep, float(arrays["time_s"])
