"""Mamba-2's sequence functions for CPU inference: the causal depthwise conv and the chunked scan.

transformers' Nemotron-H mixer runs its own PyTorch code when no kernels are installed, as on every CPU. Both
functions there are slow on a CPU for reasons that have nothing to do with their arithmetic, and the hybrid's
measured reduction speedup stayed well below its analytic limit because of them (``benchmarks/prefill.py
--explain``: a Mamba-2 layer cost 5x an MLP layer's time per FLOP):

* the conv is a depthwise ``conv1d`` on a transposed ``(b, channels, L)`` view, which oneDNN runs at a fraction
  of memory speed (9.8 ms for 320 channels x 8240 tokens, against 4.2 ms for :func:`causal_conv`'s
  ``kernel`` shifted multiply-adds over dense tokens-first operands; ``python benchmarks/mamba_cpu.py``);
* the reference scan copies its largest tensors several times per call (``(b, c, l, s, h)`` einsums, ``B`` and
  ``C`` repeated per head, a cumulative sum over a masked ``(l, l)`` copy for every segment sum).

:func:`chunk_scan` computes the identical recurrence

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,    y_t = h_t C_t + D x_t

in chunks of ``q`` tokens, with every product a batched matrix multiply over contiguous operands:

* within a chunk, ``y = (C B^T ∘ decay) @ (x dt)``, with ``C B^T`` once per group, not once per head;
* each chunk's own state, ``(B ∘ decay-to-chunk-end)^T @ (x dt)``;
* the state carried across chunks by a loop over chunks (``O(chunks)``, not the reference's ``O(chunks^2)``
  decay matrix), and read out as ``(C ∘ decay-from-chunk-start) @ state`` added in place.

Padding to whole chunks is exact: a padded position has ``dt = 0``, so it neither decays nor adds to the state.
Results equal the reference's to float32 rounding (``tests/test_reduction.py``). They are used only without
gradients (:mod:`.mamba_kernels`), so training keeps transformers' own code and numerics.

:func:`mixer_forward` is the mixer's whole forward for a sequence without a cache around these two, with fewer
passes over the sequence than transformers' (its docstring says which); :func:`gated_rms_norm` is its gated norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.models.nemotron_h.modeling_nemotron_h import apply_mask_to_padding_states

__all__ = ["causal_conv", "causal_conv1d_fn", "chunk_scan", "gated_rms_norm", "inverse_rms", "mixer_forward"]

# The longest chunk on a CPU, whatever the model's configured chunk_size: the within-chunk work grows with it, the
# sequential loop over chunks shrinks. `python benchmarks/mamba_cpu.py`, one scan of 8240 tokens (4 heads of 64, 1
# thread): 24 / 23 / 28 / 45 / 43 ms at chunks of 32 / 48 / 64 / 96 / 128 with 1 group of state 32, 43 / 34 / 38 /
# 43 / 54 ms with 2 groups of 64; transformers' reference 82 and 99 ms. 64 keeps a reduced layer's 49 tokens in one
# chunk, which needs no state carry (below).
LONGEST_CHUNK = 64


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Causal depthwise convolution along the tokens, in the tokens-first layout.

    Args:
        x: ``(..., L, channels)``.
        weight: ``(channels, kernel)``; tap ``j`` reads token ``t - (kernel - 1) + j`` (zeros before token 0).
        bias: ``(channels,)``.
    Returns:
        ``(..., L, channels)`` in ``x``'s dtype, the sum of ``kernel`` shifted multiply-adds.
    """
    # Dense operands make each pass several times faster (3-4x in a scratch timing): the mixer's x is a slice of its
    # projection (one copy here), and a tap is a column of the (channels, kernel) weight.
    taps = weight.to(x.dtype).T.contiguous()  # (kernel, channels)
    x = x.contiguous()
    out = x * taps[-1] if bias is None else torch.addcmul(bias.to(x.dtype), x, taps[-1])
    for shift in range(1, len(taps)):
        out[..., shift:, :].addcmul_(x[..., :-shift, :], taps[-1 - shift])
    return out


def causal_conv1d_fn(hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     activation: str | None = None, **_: object) -> torch.Tensor:
    """transformers' ``causal_conv1d_fn``: ``(b, channels, L)`` in and out, ``weight`` ``(channels, kernel)``.

    The mixer hands in a transposed view of its tokens-first projection and transposes the result back, so the
    conv runs in the tokens-first layout (:func:`causal_conv`, which makes one dense copy of the slice) and returns
    a transposed view of its output: no layout changes either way.
    """
    out = causal_conv(hidden_states.transpose(1, 2), weight, bias)
    if activation is not None:
        out = ACT2FN[activation](out)
    return out.transpose(1, 2)


def chunk_scan(hidden_states: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
               chunk_size: int, D: torch.Tensor | None = None, dt_bias: torch.Tensor | None = None,
               initial_states: torch.Tensor | None = None, dt_softplus: bool = False,
               dt_limit: tuple[float, float] = (0.0, float("inf")), return_final_states: bool = False,
               **_: object) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The Mamba-2 scan over a whole sequence; the signature of transformers' ``mamba2_chunk_scan``.

    Args:
        hidden_states: ``(b, L, h, p)`` the conv output per head.
        dt: ``(b, L, h)`` time steps before ``dt_bias`` / softplus / ``dt_limit``.
        A: ``(h,)`` negative decay rates.
        B, C: ``(b, L, g, n)`` input and output state projections, shared by the ``h // g`` heads of a group.
        chunk_size: the model's chunk length; chunks here are at most ``LONGEST_CHUNK`` long, and as short as
            covers ``L`` in as many chunks (the result does not depend on the chunking).
        D: ``(h,)`` skip connection.
        initial_states: ``(b, h, p, n)`` state before the first token.
    Returns:
        ``(b, L, h, p)`` float32 outputs, and with ``return_final_states`` the ``(b, h, p, n)`` state after the
        last token.
    """
    b, length, h, p = hidden_states.shape
    g, n = B.shape[2], B.shape[3]
    hpg = h // g
    chunks = max(1, -(-length // min(chunk_size, LONGEST_CHUNK)))
    q = max(1, -(-length // chunks))

    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    x = hidden_states.float()

    # Per head, in chunks: log-decay a = A dt and its running sum within the chunk.  (b, g, hpg, c, q)
    pad = chunks * q - length
    a = F.pad(dt * A.float(), (0, 0, 0, pad)).view(b, chunks, q, g, hpg).permute(0, 3, 4, 1, 2)
    a_cum = a.cumsum(-1)
    # x dt per head, (b, g, hpg, c, q, p), written in that layout in one pass (padding rows are zero).
    xdt = x.new_empty(b, g, hpg, chunks, q, p)
    tokens_first = xdt.permute(0, 3, 4, 1, 2, 5).view(b, chunks * q, h, p)
    torch.mul(x, dt[..., None], out=tokens_first[:, :length])
    tokens_first[:, length:].zero_()
    # B and C per group, (b, g, c, q, n), shared by the group's heads.
    Bc, Cc = (F.pad(t.float(), (0, 0, 0, 0, 0, pad)).view(b, chunks, q, g, n).permute(0, 3, 1, 2, 4) for t in (B, C))

    # 1. Within a chunk: y_i = sum_{j<=i} (C_i . B_j) exp(a_cum_i - a_cum_j) xdt_j.
    scores = (Cc @ Bc.transpose(-1, -2)).tril_()  # (b, g, c, q, q); the causal mask, once per group
    # a_cum is non-increasing, so the clamp only touches the masked j > i (exp of -inf would be slow, not wrong).
    decay = (a_cum[..., :, None] - a_cum[..., None, :]).clamp_max_(0).exp_().mul_(scores[:, :, None])
    y = decay @ xdt  # (b, g, hpg, c, q, p)

    # Steps 2-4 carry state between chunks. One chunk from a zero state (a reduced layer's short sequence) needs
    # none of them unless the final state is asked for: 49 tokens take 0.14 ms instead of 0.35 ms (mamba_cpu.py).
    final = None
    if chunks > 1 or initial_states is not None or return_final_states:
        final = _carry_state(y, xdt, a_cum, Bc, Cc, initial_states)

    tokens_first = y.permute(0, 3, 4, 1, 2, 5).reshape(b, chunks * q, h, p)[:, :length]  # a view
    out = x.new_empty(b, length, h, p)  # contiguous, as callers .view() it
    if D is not None:
        torch.addcmul(tokens_first, x, D.float()[:, None], out=out)
    else:
        out.copy_(tokens_first)
    if return_final_states:
        return out, final.transpose(-1, -2).reshape(b, h, p, n)
    return out


def _carry_state(y: torch.Tensor, xdt: torch.Tensor, a_cum: torch.Tensor, Bc: torch.Tensor, Cc: torch.Tensor,
                 initial_states: torch.Tensor | None) -> torch.Tensor:
    """Steps 2-4 of :func:`chunk_scan`: add to ``y`` ``(b, g, hpg, c, q, p)`` what each chunk reads from the state
    entering it, in place, and return the state after the last chunk, ``(b, g, hpg, n, p)``.

    ``xdt`` is ``(b, g, hpg, c, q, p)``, ``a_cum`` ``(b, g, hpg, c, q)`` (consumed), ``Bc`` and ``Cc``
    ``(b, g, c, q, n)``, ``initial_states`` ``(b, h, p, n)`` or None (zeros).
    """
    b, g, hpg, chunks, q, p = y.shape
    n = Bc.shape[-1]
    # 2. Each chunk's own state: sum_j exp(a_cum_end - a_cum_j) B_j^T xdt_j.  (b, g, hpg, c, n, p)
    to_end = (a_cum[..., -1:] - a_cum).exp_()
    chunk_states = (Bc.transpose(-1, -2)[:, :, None] * to_end[..., None, :]) @ xdt

    # 3. Carry the state across chunks: the state entering each chunk, (b, g, hpg, c, n, p).
    chunk_decay = a_cum[..., -1].exp()[..., None, None]  # (b, g, hpg, c, 1, 1)
    entering = torch.empty_like(chunk_states)
    if initial_states is None:
        entering[:, :, :, 0].zero_()
    else:  # (b, h, p, n) -> (b, g, hpg, n, p)
        entering[:, :, :, 0] = initial_states.float().view(b, g, hpg, p, n).transpose(-1, -2)
    # Views of every chunk taken once: indexing a 6-d tensor in the loop cost 3x the arithmetic (129 chunks:
    # 2.8 ms against 0.9 ms in a scratch timing).
    states, enter, decays = chunk_states.unbind(3), entering.unbind(3), chunk_decay.unbind(3)
    for k in range(chunks - 1):
        torch.addcmul(states[k], enter[k], decays[k], out=enter[k + 1])

    # 4. Read the entering state out: y_i += exp(a_cum_i) C_i state.
    c_from_start = Cc[:, :, None] * a_cum.exp_()[..., None]  # (b, g, hpg, c, q, n)
    y.view(-1, q, p).baddbmm_(c_from_start.reshape(-1, q, n), entering.view(-1, n, p))
    return torch.addcmul(chunk_states[:, :, :, -1], entering[:, :, :, -1], chunk_decay[:, :, :, -1])


def inverse_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``(..., 1)`` float32 ``rsqrt(mean(x^2) + eps)`` over the last axis of ``x`` ``(..., d)``, whatever its dtype:
    one fused reduction (the norm) instead of a squared copy and a mean."""
    squares = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).square_()
    return squares.div_(x.shape[-1]).add_(eps).rsqrt_()


def gated_rms_norm(x: torch.Tensor, gate: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """transformers' ``NemotronHRMSNormGated`` before its weight: ``rmsnorm_per_group(x * silu(gate))``, float32.

    Args:
        x: ``(..., d)`` the scan output, float32; overwritten and returned.
        gate: ``(..., d)`` the gate projection (any strides); overwritten when float32. Both are the mixer's own
            temporaries.
    Returns:
        ``x``: three passes over it where the module (weight included) makes seven and six temporaries.
    """
    x.mul_(F.silu(gate, inplace=True) if gate.dtype == torch.float32 else F.silu(gate.float()))
    grouped = x.view(*x.shape[:-1], -1, group_size)
    grouped.mul_(inverse_rms(grouped, eps))
    return x


def mixer_forward(mixer: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """``NemotronHMamba2Mixer.forward`` for a whole sequence without a cache: the same sums, fewer passes.

    transformers' forward projects all of ``[gate | xBC | dt]`` in one product (an odd width such as 580 runs a
    GEMM's slow tail path: ``python benchmarks/mamba_cpu.py``), applies the conv's activation and the gated norm
    out of place. Here ``[gate | xBC]`` and ``dt`` are two products, the activation runs in place on the conv's
    own output, the gated norm in place on the scan's (:func:`gated_rms_norm`), and on a long sequence the norm's
    weight is folded into ``out_proj``'s.

    Args:
        hidden_states: ``(b, L, hidden)``; attention_mask: ``(b, L)`` padding mask or None.
    Returns:
        ``(b, L, hidden)`` in ``hidden_states``' dtype.
    """
    b, length, _ = hidden_states.shape
    inter, conv_dim, heads = mixer.intermediate_size, mixer.conv_dim, mixer.num_heads
    bc = mixer.n_groups * mixer.ssm_state_size
    hidden_states = apply_mask_to_padding_states(hidden_states, attention_mask)
    weight, bias = mixer.in_proj.weight, mixer.in_proj.bias
    split = inter + conv_dim
    gate_xbc = F.linear(hidden_states, weight[:split], None if bias is None else bias[:split])
    dt = F.linear(hidden_states, weight[split:], None if bias is None else bias[split:])
    gate, xbc = gate_xbc.split([inter, conv_dim], dim=-1)

    xbc = causal_conv(xbc, mixer.conv1d.weight[:, 0], mixer.conv1d.bias)
    xbc = F.silu(xbc, inplace=True) if mixer.activation == "silu" else mixer.act(xbc)
    xbc = apply_mask_to_padding_states(xbc, attention_mask)
    x, B, C = xbc.split([inter, bc, bc], dim=-1)
    y = chunk_scan(x.view(b, length, heads, mixer.head_dim), dt, -torch.exp(mixer.A_log.float()),
                   B.view(b, length, mixer.n_groups, -1), C.view(b, length, mixer.n_groups, -1), mixer.chunk_size,
                   D=mixer.D, dt_bias=mixer.dt_bias, dt_softplus=True, dt_limit=mixer.time_step_limit)
    norm, out = mixer.norm, mixer.out_proj
    y = gated_rms_norm(y.view(b, length, inter), gate, norm.group_size, norm.variance_epsilon)
    # The norm's weight scales the channels out_proj reads: it goes on whichever is smaller, out_proj's
    # (hidden, inter) weight or the (b * L, inter) activations (saving a pass over a long sequence).
    if out.weight.shape[0] < b * length:
        return F.linear(y.to(hidden_states.dtype), out.weight * norm.weight.to(out.weight.dtype), out.bias)
    return out(y.mul_(norm.weight).to(hidden_states.dtype))
