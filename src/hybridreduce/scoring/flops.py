"""Analytic forward FLOPs per decoder layer for the token counts a reduction realises.

Every ``nn.Linear`` of a layer costs ``2 · n · weights`` for ``n`` tokens (one multiply-add per weight per
token); token mixing adds ``2 · H · d · n²`` for causal attention (scores and weighted sum, each over ``n²/2``
pairs) and ``4 · n · d_inner · N`` for the Mamba-2 scan (state update and read-out, linear in ``n``). Routed
MoE experts are counted in full (an upper bound).
"""

from __future__ import annotations

from torch import nn

from ..models.stack import ATTENTION, MAMBA, DecoderStack


def _linear_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def layer_flops(stack: DecoderStack, i: int, n: int) -> float:
    """Forward FLOPs of layer ``i`` on ``n`` tokens."""
    layer = stack.layers[i]
    flops = 2.0 * n * _linear_weights(layer)
    kind = stack.layer_types[i]
    if kind == ATTENTION:
        attn = getattr(layer, "self_attn", None) or layer.mixer
        heads = attn.q_proj.out_features // attn.head_dim
        flops += 2.0 * heads * attn.head_dim * n * n
    elif kind == MAMBA:
        mixer = layer.mixer
        flops += 4.0 * n * mixer.intermediate_size * mixer.ssm_state_size
        flops += 2.0 * n * mixer.conv_dim * mixer.conv_kernel_size
    return flops


def prefill_flops(stack: DecoderStack, tokens_per_layer: list[int]) -> float:
    """Total prefill FLOPs when layer ``i`` processes ``tokens_per_layer[i]`` tokens."""
    return sum(layer_flops(stack, i, n) for i, n in enumerate(tokens_per_layer))
