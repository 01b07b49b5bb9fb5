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


def reduce_grid(method: str, grid: TokenGrid, q: float, seed: int = 0) -> tuple[TokenGrid, torch.Tensor]:
    """The grid a pre-LLM ``method`` leaves at pruning rate ``q`` (merged tokens in place of the tokens they are
    merged into) and its ``(T, h, w)`` bool keep mask."""
    out = get_method(method)(grid, q, seed)
    if isinstance(out, tuple):
        keep, merged = out
        return replace(grid, embeddings=merged), keep
    return grid, out


def keep_mask(method: str, grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """``(T, h, w)`` bool mask of the tokens ``method`` keeps at pruning rate ``q``."""
    return reduce_grid(method, grid, q, seed)[1]


def mask_arrays(method: str, grid: TokenGrid, q: float, seed: int = 0) -> tuple[dict, dict]:
    """What the redundancy stage stores for one sample and rate: arrays ``keep`` ``(T, h, w)`` bool, ``time_s``
    (wall time of the method) and, for a merging method, ``merged`` ``(kept, d)`` (the tokens that replace the
    kept ones), and the ``visual_reduction`` row. :func:`apply_masks` gives the grid back to inference."""
    t0 = time.perf_counter()
    reduced, keep = reduce_grid(method, grid, q, seed)
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
