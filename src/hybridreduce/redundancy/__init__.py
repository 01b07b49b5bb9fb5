"""Visual redundancy reduction before the LLM (STUDY.md §2): a registry of methods over a token grid."""

from . import merging  # noqa: F401 (registers the merging peers)
from .grid import TokenGrid, load_grid, load_truth, save_grid
from .methods import (REGISTRY, apply_masks, evs_retained_count, get_method, keep_mask, mask_arrays, reduce_grid,
                      registry)

__all__ = ["REGISTRY", "TokenGrid", "apply_masks", "evs_retained_count", "get_method", "keep_mask", "load_truth",
           "load_grid", "mask_arrays", "reduce_grid", "registry", "save_grid"]
