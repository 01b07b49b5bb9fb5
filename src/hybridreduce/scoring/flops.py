"""Analytic forward FLOPs per decoder layer for the token counts a reduction realises.

Every ``nn.Linear`` of a layer costs ``2 · n · weights`` for ``n`` tokens (one multiply-add per weight per
token); token mixing adds ``2 · H · d · n²`` for causal attention (scores and weighted sum, each over ``n²/2``
pairs) and ``4 · n · d_inner · N`` for the Mamba-2 scan (state update and read-out, linear in ``n``). Routed
MoE experts are counted in full (an upper bound).

A Gated DeltaNet layer (Qwen3.5) adds to its linear weights the causal conv, ``2 · n · conv_dim · K``, and the
gated delta rule, ``6 · n · H · d_k · d_v`` with ``H`` value heads and a ``d_v x d_k`` state per head: per token
and head three state-sized products of two FLOPs per state entry, the delta-rule read ``S_{t-1} k_t``, the decayed
rank-1 write ``exp(g_t) S_{t-1} + u_t k_t^T`` and the read-out ``S_t q_t`` (linear in ``n``; the per-head l2 norms,
gates and the gated output norm, ``O(n · H · (d_k + d_v))``, are left out as Mamba-2's are). The gated attention
of Qwen3.5 counts its ``q_proj`` (query and gate) among the linear weights; its heads are the query heads.
"""

from __future__ import annotations

from torch import nn

from ..models.stack import ATTENTION, DELTANET, MAMBA, DecoderStack


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
        if _is_gated(attn):  # q_proj gives each head's query and output gate
            heads //= 2
        flops += 2.0 * heads * attn.head_dim * n * n
    elif kind == MAMBA:
        mixer = layer.mixer
        flops += 4.0 * n * mixer.intermediate_size * mixer.ssm_state_size
        flops += 2.0 * n * mixer.conv_dim * mixer.conv_kernel_size
    elif kind == DELTANET:
        mixer = layer.linear_attn
        flops += 6.0 * n * mixer.num_v_heads * mixer.head_k_dim * mixer.head_v_dim
        flops += 2.0 * n * mixer.conv_dim * mixer.conv_kernel_size
    return flops


def _is_gated(attn: nn.Module) -> bool:
    from ..reduction.deltanet import is_gated_attention

    return is_gated_attention(attn)


def prefill_flops(stack: DecoderStack, tokens_per_layer: list[int]) -> float:
    """Total prefill FLOPs when layer ``i`` processes ``tokens_per_layer[i]`` tokens."""
    return sum(layer_flops(stack, i, n) for i, n in enumerate(tokens_per_layer))
