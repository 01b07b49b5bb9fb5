"""Visual redundancy reduction before the LLM (STUDY.md §2): a registry of methods over a token grid."""

from .grid import TokenGrid
from .methods import (REGISTRY, apply_masks, evs_retained_count, get_method, keep_mask, mask_arrays, reduce_grid,
                      registry)

__all__ = ["REGISTRY", "TokenGrid", "apply_masks", "evs_retained_count", "get_method", "keep_mask",
           "mask_arrays", "reduce_grid", "registry"]
