"""Where the vision and query tokens sit in an LLM input: the one type that model adapters produce and the
reduction engine consumes (a ground-floor module, so models and reduction need not import each other)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptLayout:
    """Where the vision tokens ``V`` and the query tokens ``Q`` sit in the LLM input ``[prefix][V][Q]``.

    Attributes:
        vision_idx: ``(N,)`` int64 indices of the vision tokens in the input.
        query_idx: ``(|Q|,)`` int64 indices of the query tokens (after every vision token).
        position_ids: ``(L,)`` or ``(3, L)`` position ids of the input tokens; None means ``0..L-1``. A
            pre-LLM reduction passes the full video's positions of the tokens it kept.
        evidence: ``(N,)`` bool, the vision tokens that show what the question asks about (the synthetic
            benchmark's ground truth), or None. Only the ``oracle`` scorer reads it.
    """

    vision_idx: torch.Tensor
    query_idx: torch.Tensor
    position_ids: torch.Tensor | None = None
    evidence: torch.Tensor | None = None

    @functools.cached_property
    def query_start(self) -> int:
        """Index of the first query token in the input. Read from the device once per layout (every prefill of
        it reuses the number), after checking that the query tokens follow every vision token."""
        if len(self.query_idx) == 0:
            raise ValueError("PromptLayout.query_idx is empty: the scores are conditioned on the query tokens")
        start = int(self.query_idx.min())
        if len(self.vision_idx) and int(self.vision_idx.max()) >= start:
            raise ValueError(f"PromptLayout: the query tokens must follow every vision token ([prefix][V][Q]); the "
                             f"first query token is at {start}, a vision token at {int(self.vision_idx.max())}")
        return start
