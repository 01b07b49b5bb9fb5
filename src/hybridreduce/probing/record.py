"""What the probing analyses read from a model: one unreduced forward per sample recording every scoring layer's
importance over the vision tokens, and prefills with a chosen set of vision tokens removed at a chosen layer.

Shapes: ``N`` vision tokens in the prompt, ``D`` the LLM's hidden size, ``S`` scoring layers (attention and
Mamba layers, in depth order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.stack import ATTENTION, MAMBA, DecoderStack
from ..reduction.engine import PromptLayout, Scorer, prefill, score_layer
from ..reduction.schedule import Schedule

SCORING_TYPES = (ATTENTION, MAMBA)
# The Mamba score's variants recorded beside the paper's decay-free score (name -> the scorer that computes it).
MAMBA_VARIANTS = {"mamba_decay": Scorer(mamba_decay=True), "mamba_signed": Scorer(mamba_signed=True),
                  "mamba_head_max": Scorer(mamba_head_max=True), "mamba_x_norm": Scorer(mamba_x_norm=True),
                  "mamba_clip": Scorer(mamba_clip=True)}


@dataclass
class LayerRecord:
    """One sample's unreduced forward.

    Attributes:
        layers: ``(S,)`` indices of the scoring layers; ``types`` their kinds (``attention`` / ``mamba``).
        importance: ``(S, N)`` query-conditioned importance, normalised over V (Mamba: decay-free).
        variants: per name of :data:`MAMBA_VARIANTS`, ``(S, N)`` that variant of the Mamba score (attention rows
            repeat ``importance``: the variants change only the Mamba score).
        importance_last: ``(S, N)`` the same score with the last token as the only query (FastV's query).
        vision_states: ``(S, N, D)`` the vision tokens' input to each scoring layer.
        last_hidden: ``(D,)`` the last query token's final hidden state.
    """

    layers: list[int]
    types: list[str]
    importance: np.ndarray
    variants: dict[str, np.ndarray]
    importance_last: np.ndarray
    vision_states: np.ndarray
    last_hidden: np.ndarray


@torch.no_grad()
def record_layers(stack: DecoderStack, embeds: torch.Tensor, layout: PromptLayout) -> LayerRecord:
    """Run ``embeds`` ``(1, L, D)`` through the decoder unreduced and record every scoring layer."""
    layers, types, free, last, states = [], [], [], [], []
    variants: dict[str, list[torch.Tensor]] = {name: [] for name in MAMBA_VARIANTS}
    vision, query, start = layout.vision_idx, layout.query_idx, layout.query_start  # unreduced: input positions
    final = embeds.shape[1] - 1
    last_query = torch.arange(final, final + 1, device=embeds.device)

    def observe(i: int, hidden: torch.Tensor, ctx: dict, state) -> None:
        kind = stack.layer_types[i]
        if kind not in SCORING_TYPES:
            return
        score = score_layer(stack, i, hidden, ctx, query, vision, start, Scorer(), None)
        layers.append(i)
        types.append(kind)
        free.append(score.float().cpu())
        for name, scorer in MAMBA_VARIANTS.items():
            variants[name].append(score_layer(stack, i, hidden, ctx, query, vision, start, scorer, None).float().cpu()
                                  if kind == MAMBA else free[-1])
        last.append(score_layer(stack, i, hidden, ctx, last_query, vision, final, Scorer(query="last_token"),
                                None).float().cpu())
        states.append(hidden[0, vision].float().cpu())

    result = prefill(stack, embeds, layout, observer=observe)
    return LayerRecord(layers, types, torch.stack(free).numpy(),
                       {name: torch.stack(v).numpy() for name, v in variants.items()}, torch.stack(last).numpy(), torch.stack(states).numpy(), result.last_hidden.float().cpu().numpy())


@torch.no_grad()
def hidden_without(stack: DecoderStack, embeds: torch.Tensor, layout: PromptLayout, layer: int,
                   keep: torch.Tensor) -> np.ndarray:
    """``(D,)`` final hidden state of the last query token when only the vision tokens ``keep`` (input indices,
    a subset of ``layout.vision_idx``) go on from the input of ``layer`` (``layer = 0``: removed at the input)."""
    n = len(layout.vision_idx)
    schedule = Schedule("single", (layer,), (len(keep),), len(stack.layers), n)
    result = prefill(stack, embeds, layout, schedule, fixed_keep={layer: keep.to(layout.vision_idx.device)})
    return result.last_hidden.float().cpu().numpy()
