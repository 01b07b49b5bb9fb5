"""Registry of pre-LLM redundancy-reduction methods.

Every method maps ``(grid, q, seed) -> keep mask (T, h, w) bool``. ``q`` is the pruning rate: the fraction of
tokens to drop (EVS's ``video_pruning_rate``). ``random`` and ``uniform`` keep exactly as many tokens as
``evs`` at the same ``q`` (equal retention). Retained tokens keep their original (t, i, j) positions: the mask
is applied by the caller, which must keep the full video's position ids.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .grid import TokenGrid

KeepMaskFn = Callable[[TokenGrid, float, int], torch.Tensor]
REGISTRY: dict[str, KeepMaskFn] = {}

# Frame 0's dissimilarity in the serving implementations: above any 1 - cos (which is at most 2), so the first
# frame always wins the top-k.
FIRST_FRAME_SCORE = 255.0


def register(name: str) -> Callable[[KeepMaskFn], KeepMaskFn]:
    def deco(fn: KeepMaskFn) -> KeepMaskFn:
        REGISTRY[name] = fn
        return fn

    return deco


def get_method(name: str) -> KeepMaskFn:
    if name not in REGISTRY:
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


def keep_mask(method: str, grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """``(T, h, w)`` bool mask of the tokens ``method`` keeps at pruning rate ``q``."""
    return get_method(method)(grid, q, seed)
