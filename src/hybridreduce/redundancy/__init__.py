"""Visual redundancy reduction before the LLM (STUDY.md §2): a registry of methods over a token grid."""

from .grid import PatchEmbedder, TokenGrid
from .methods import REGISTRY, evs_retained_count, get_method, keep_mask, reduce_grid, registry

__all__ = ["REGISTRY", "PatchEmbedder", "TokenGrid", "evs_retained_count", "get_method", "keep_mask",
           "reduce_grid", "registry"]
