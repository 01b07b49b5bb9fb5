"""An example hybridreduce plugin (see hybridreduce.plugins): one pre-LLM and one in-LLM method."""

import torch

from hybridreduce.reduction.engine import Scorer
from hybridreduce.reduction.methods import InLLMMethod
from hybridreduce.redundancy.grid import TokenGrid


def frame_stride(grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """Control: whole frames at an even stride, keeping about a fraction 1 - q of them (at least one)."""
    t = grid.shape[0]
    kept = max(1, round(t * (1 - q)))
    keep = torch.zeros(grid.shape, dtype=torch.bool)
    keep[torch.arange(kept) * t // kept] = True
    return keep


PROGRESSIVE_LAST_TOKEN = InLLMMethod(
    "progressive", Scorer("unified", "last_token"),
    "ablation: the paper's progressive schedule with FastV's query (the last token) instead of the question")
