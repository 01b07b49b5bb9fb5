"""Query-conditioned importance of vision tokens inside one LLM layer.

For one sample (batch size 1) with ``L`` tokens, ``vision_idx`` holds the positions of the vision tokens and
``query_idx`` those of the query text tokens (all after the vision tokens). Only the query rows ``t`` ask:

* attention layer: ``I(s) = mean_{heads, t in Q} softmax_{keys <= t}(q_t . k / sqrt(d))[s]``;
* Mamba-2 layer: the SSM's implicit attention
  ``alpha[h, t, s] = (C_t . B_s) * dt_s * exp(A_h * sum_{r=s+1..t} dt_r)`` (``s <= t``), scored either without the
  decay (``|C_t . B_s| * dt_s``, the default) or with it (``|alpha[h, t, s]|``).

Every score is taken over the vision columns only and normalised to sum to 1 over them. All functions work in
float32 on the layer's input after its pre-norm (what the mixer itself receives), and never build an ``L x L``
matrix except :func:`mamba_implicit_attention`, which exists to verify the formula. (Projections run in the
model's dtype and are widened to float32, see :func:`_linear_rows`.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import Qwen2Attention, rotate_half

from ..models.mamba_cpu import causal_conv
from ..models.stack import PreNormed

__all__ = ["attention_importance", "mamba_clip_importance", "mamba_implicit_attention", "mamba_importance",
           "query_attention_score"]


def _tokens(hidden: torch.Tensor | PreNormed) -> torch.Tensor | PreNormed:
    """`(1, L, D)` -> `(L, D)`: float32 for a normed tensor; a :class:`PreNormed` keeps its dtype and its norm."""
    tokens = hidden.hidden if isinstance(hidden, PreNormed) else hidden
    if tokens.dim() != 3 or tokens.shape[0] != 1:
        raise ValueError(f"hidden must have shape (1, L, D), got {tuple(tokens.shape)}")
    return PreNormed(tokens[0], hidden.norm) if isinstance(hidden, PreNormed) else tokens[0].float()


def _linear_rows(layer: nn.Linear, x: torch.Tensor | PreNormed, *rows: slice,
                 tokens: torch.Tensor | None = None) -> torch.Tensor:
    """``layer(x)[tokens][..., rows]`` as float32, computing only the requested output features (several ``rows``
    slices are computed in one product and concatenated in that order) at the requested ``tokens`` (default all).

    The product runs in the layer's own dtype, as the model's forward computes it (bfloat16 on a GPU, where float32
    matrix products run several times slower); only its output is widened for the score arithmetic. For a
    :class:`PreNormed` input the norm is folded into the product.
    """
    weight = torch.cat([layer.weight[r] for r in rows]) if len(rows) > 1 else layer.weight[rows[0]]
    bias = None if layer.bias is None else torch.cat([layer.bias[r] for r in rows])
    if isinstance(x, PreNormed):
        return x.linear(weight, bias, tokens)
    x = x if tokens is None else x.index_select(0, tokens)
    return F.linear(x.to(weight.dtype), weight, bias).float()


def _normalise(score: torch.Tensor) -> torch.Tensor:
    """Scale to sum 1; uniform when the score carries no mass (e.g. all products underflowed) or is not finite.
    Decided on the device: no host read."""
    total = score.sum()
    uniform = torch.full_like(score, 1.0 / max(score.numel(), 1))
    return torch.where(torch.isfinite(total) & (total > 0), score / total, uniform)


def _first_query(query_idx: torch.Tensor, vision_idx: torch.Tensor, seq_len: int, query_start: int | None) -> int:
    """The first query token's position: ``query_start`` when the caller knows it (the engine does; the indices
    are then its own, and nothing is read back from the device), otherwise read from ``query_idx`` after checking
    both index tensors."""
    if query_idx.numel() == 0:
        raise ValueError("query_idx is empty: the score is conditioned on the query tokens")
    if query_start is not None:
        return query_start
    for name, idx in (("query_idx", query_idx), ("vision_idx", vision_idx)):
        if idx.numel():
            low, high = (int(v) for v in torch.aminmax(idx))
            if low < 0 or high >= seq_len:
                raise ValueError(f"{name} out of range for a sequence of {seq_len} tokens")
    return int(query_idx.min())


# ----------------------------------------------------------------------------------------------------------------
# Attention layers
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def attention_importance(
    attn: nn.Module,
    hidden: torch.Tensor,
    query_idx: torch.Tensor,
    vision_idx: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    query_start: int | None = None,
) -> torch.Tensor:
    """Mean causal attention probability that the query tokens give to each vision token.

    Only the ``|Q|`` query rows of the attention matrix are computed (``|Q| x L`` logits per head), independently
    of the module's attention implementation.

    Args:
        attn (`nn.Module`):
            A `NemotronHAttention` (no RoPE) or `Qwen2Attention` (RoPE) module.
        hidden (`torch.Tensor` of shape `(1, L, D)`, or `PreNormed`):
            The layer's input after its pre-norm, or before it with that norm (the stack's `mixer_input`).
        query_idx (`torch.LongTensor` of shape `(|Q|,)`):
            Positions of the query text tokens in the current sequence.
        vision_idx (`torch.LongTensor` of shape `(|V|,)`):
            Positions of the vision tokens in the current sequence.
        position_embeddings (`tuple(torch.Tensor)` of two tensors of shape `(1, L, head_dim)`, *optional*):
            `(cos, sin)` of the current sequence; required for RoPE attention (Qwen2), left out otherwise.
        query_start (`int`, *optional*):
            `min(query_idx)`, when the caller knows it: the score then reads nothing back from the device (no
            sync on a GPU), and the indices are not checked. Otherwise it is read, after checking the indices.

    Returns:
        `torch.Tensor` of shape `(|V|,)`, float32, non-negative, summing to 1.
    """
    h = _tokens(hidden)
    seq_len = h.shape[0]
    first = _first_query(query_idx, vision_idx, seq_len, query_start)
    query_idx, vision_idx = query_idx.to(h.device), vision_idx.to(h.device)
    if isinstance(attn, Qwen2Attention) and position_embeddings is None:
        raise ValueError("Qwen2Attention needs position_embeddings=(cos, sin) for the current sequence")

    n_heads, n_kv = attn.config.num_attention_heads, attn.config.num_key_value_heads
    d = attn.head_dim
    all_rows = slice(None)
    # The scale goes on the |Q| query rows rather than on the |Q| x L logits.
    q = _linear_rows(attn.q_proj, h, all_rows, tokens=query_idx).view(-1, n_heads, d) * attn.scaling  # (Q, heads, d)
    k = _linear_rows(attn.k_proj, h, all_rows).view(seq_len, n_kv, d)  # (L, kv_heads, d)
    if position_embeddings is not None:
        cos, sin = (p[0].float().to(h.device) for p in position_embeddings)  # (L, d) each
        # The rotation is elementwise per (token, channel), so q and k are rotated separately with their own rows.
        q, k = _rotate(q, cos[query_idx], sin[query_idx]), _rotate(k, cos, sin)

    return query_attention_score(q, k, query_idx, vision_idx, first)


def query_attention_score(q: torch.Tensor, k: torch.Tensor, query_idx: torch.Tensor, vision_idx: torch.Tensor,
                          first: int) -> torch.Tensor:
    """The attention score from the query rows' queries and all keys, as the module would rotate and scale them.

    Args:
        q: ``(|Q|, heads, d)`` float32, scaled and rotated; k: ``(L, kv_heads, d)`` float32, rotated.
        query_idx / vision_idx: ``(|Q|,)`` / ``(|V|,)`` positions in the sequence; first: ``min(query_idx)``.
    Returns:
        ``(|V|,)`` the mean causal probability over heads and query rows, normalised to sum 1.
    """
    seq_len, n_kv, d = k.shape
    n_rep = q.shape[1] // n_kv
    # GQA without copying keys: query head j * n_rep + r reads key head j (as transformers' repeat_kv).
    q = q.permute(1, 0, 2).reshape(n_kv, n_rep * len(query_idx), d)  # (kv_heads, n_rep * Q, d)
    logits = (q @ k.permute(1, 2, 0)).view(n_kv, n_rep, -1, seq_len)  # (kv_heads, n_rep, Q, L)
    # Causal: only keys at or after the first query token can lie after some query row.
    later = torch.arange(first, seq_len, device=k.device)[None, :] > query_idx[:, None]  # (Q, L - first)
    logits[..., first:].masked_fill_(later, float("-inf"))
    probs = logits.softmax(dim=-1)  # over all keys 0..t
    # Mean over heads and query rows first, then the vision columns: the same numbers without gathering Q x V.
    score = probs.mean(dim=(0, 1, 2)).index_select(0, vision_idx)  # (|V|,)
    return _normalise(score)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE as transformers' ``apply_rotary_pos_emb`` applies it, for ``x`` ``(T, heads, d)`` and ``cos``/``sin``
    ``(T, d)`` (one rotation instead of that function's two, which rotates q and k together)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


# ----------------------------------------------------------------------------------------------------------------
# Mamba-2 layers
# ----------------------------------------------------------------------------------------------------------------


def _conv_params(mixer: nn.Module, channels: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The mixer's depthwise conv weight ``(channels, kernel)`` (tap j reads token t - (kernel-1) + j) and bias
    ``(channels,)`` or None, for ``channels`` of its ``xBC`` projection, float32."""
    bias = None if mixer.conv1d.bias is None else mixer.conv1d.bias[channels].float()
    return mixer.conv1d.weight[channels, 0].float(), bias


def _conv_channels(mixer: nn.Module, pre: torch.Tensor, channels: slice) -> torch.Tensor:
    """The mixer's causal depthwise conv + activation over every token, for the ``channels`` of its ``xBC``
    projection, given their projection ``pre`` ``(L, channels)``: the same sum as the mixer's conv1d, in the
    tokens-first layout the projection comes in (:func:`~hybridreduce.models.mamba_cpu.causal_conv`)."""
    return mixer.act(causal_conv(pre, *_conv_params(mixer, channels)))


def _conv_channels_at(mixer: nn.Module, h: torch.Tensor | PreNormed, channels: slice, rows: torch.Tensor
                      ) -> torch.Tensor:
    """:func:`_conv_channels` at the tokens ``rows`` only, each from its own ``kernel`` input tokens of ``h``
    ``(L, D)`` (only those rows of ``in_proj`` are computed: the conv is depthwise).

    Returns:
        `torch.Tensor` of shape `(len(rows), channels)`.
    """
    inter, kernel = mixer.intermediate_size, mixer.conv_kernel_size
    proj = slice(inter + channels.start, inter + channels.stop)  # in_proj rows: [gate (inter) | xBC | dt]
    taps = rows[:, None] + torch.arange(1 - kernel, 1, device=h.device)  # (R, kernel) token of each tap
    pre = _linear_rows(mixer.in_proj, h, proj, tokens=taps.clamp(min=0).view(-1)).view(*taps.shape, -1)
    pre *= (taps >= 0)[..., None]  # zero padding
    weight, bias = _conv_params(mixer, channels)
    out = (pre * weight.T).sum(dim=1)  # (R, channels)
    if bias is not None:
        out += bias
    return mixer.act(out)


def _ssm_inputs(mixer: nn.Module, h: torch.Tensor, with_x: bool, c_rows: torch.Tensor | None = None):
    """The mixer's per-token SSM quantities, computed as its forward does (float32).

    Args:
        mixer (`NemotronHMamba2Mixer`): the Mamba-2 mixer.
        h (`torch.Tensor` of shape `(L, D)`, float32, or `PreNormed`): its input.
        with_x (`bool`): also compute the SSM input ``x`` (otherwise only the B/C channels go through the conv).
        c_rows (`torch.LongTensor` of shape `(R,)`, *optional*): compute C only at these tokens (the query rows:
            the score reads no other), instead of at every token.

    Returns:
        x (`torch.Tensor` of shape `(L, num_heads, head_dim)` or `None`), B (`(L, n_groups, ssm_state_size)`), C
        (`(len(c_rows) or L, n_groups, ssm_state_size)`), dt (`(L, num_heads)`, after softplus and clamping) and
        A (`(num_heads,)`).
    """
    inter, n_heads, n_groups, state = mixer.intermediate_size, mixer.num_heads, mixer.n_groups, mixer.ssm_state_size
    seq_len, bc = h.shape[0], n_groups * state
    # xBC channel layout: x (inter), B (bc), C (bc).
    first = 0 if with_x else inter
    last = inter + bc if c_rows is not None else mixer.conv_dim
    # One product for the conv channels and dt: in_proj rows [gate (inter) | xBC (conv_dim) | dt (n_heads)].
    dt_rows = slice(inter + mixer.conv_dim, inter + mixer.conv_dim + n_heads)
    pre, dt = _linear_rows(mixer.in_proj, h, slice(inter + first, inter + last), dt_rows).split(
        [last - first, n_heads], dim=-1)
    xbc = _conv_channels(mixer, pre, slice(first, last))  # (L, channels)
    x = xbc[:, :inter].view(seq_len, n_heads, mixer.head_dim) if with_x else None
    B = xbc[:, inter - first : inter - first + bc].view(seq_len, n_groups, state)
    C = (xbc[:, inter - first + bc :] if c_rows is None
         else _conv_channels_at(mixer, h, slice(inter + bc, mixer.conv_dim), c_rows)).view(-1, n_groups, state)

    lo, hi = mixer.time_step_limit
    dt = F.softplus(dt + mixer.dt_bias.float()).clamp(min=lo, max=hi)
    A = -torch.exp(mixer.A_log.float())
    return x, B, C, dt, A


def _group_of_head(mixer: nn.Module) -> torch.Tensor:
    """`(num_heads,)` index of the B/C group each head reads (consecutive heads share a group)."""
    heads_per_group = mixer.num_heads // mixer.n_groups
    return torch.arange(mixer.num_heads, device=mixer.A_log.device) // heads_per_group


def _decay(A: torch.Tensor, dt: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``exp(A_h * sum_{r=s+1..t} dt_r[h])`` for t in ``rows``, s in ``cols``; 0 where s > t.

    Returns:
        `torch.Tensor` of shape `(num_heads, len(rows), len(cols))`.
    """
    # Inclusive cumsum in float64: for long sequences the difference of two large sums loses float32 precision.
    cum = dt.double().cumsum(dim=0)  # (L, heads)
    seg = (cum[rows][:, None, :] - cum[cols][None, :, :]).permute(2, 0, 1)  # (heads, rows, cols)
    causal = cols[None, :] <= rows[:, None]
    exponent = (A.double()[:, None, None] * seg).masked_fill(~causal, float("-inf"))  # no overflow above the diagonal
    return exponent.exp().float()


@torch.no_grad()
def mamba_importance(
    mixer: nn.Module,
    hidden: torch.Tensor,
    query_idx: torch.Tensor,
    vision_idx: torch.Tensor,
    decay: bool = False,
    use_x_norm: bool = False,
    query_start: int | None = None,
    signed: bool = False,
    head_max: bool = False,
) -> torch.Tensor:
    """Query-conditioned importance of vision tokens from the implicit attention of a Mamba-2 layer.

    Decay-free (default): ``I(s) = mean_{h, t in Q} |C_t . B_s| * dt_s[h]`` (times ``||x_s[h]||`` with
    `use_x_norm`). With `decay`: ``I(s) = mean_{h, t in Q} |alpha[h, t, s]|``. Only the B/C/dt (and x with
    `use_x_norm`) columns of `in_proj` are computed and only the ``|Q|`` query rows are formed.

    Args:
        mixer (`NemotronHMamba2Mixer`):
            The Mamba-2 mixer of the layer.
        hidden (`torch.Tensor` of shape `(1, L, D)`, or `PreNormed`):
            The layer's input after the block's pre-norm, or before it with that norm (the stack's `mixer_input`).
        query_idx (`torch.LongTensor` of shape `(|Q|,)`):
            Positions of the query text tokens.
        vision_idx (`torch.LongTensor` of shape `(|V|,)`):
            Positions of the vision tokens.
        decay (`bool`, *optional*, defaults to `False`):
            Include the state decay ``exp(A_h * sum dt)`` (ablation).
        use_x_norm (`bool`, *optional*, defaults to `False`):
            Weight each source token by the norm of its SSM input ``x_s`` per head.
        query_start (`int`, *optional*):
            `min(query_idx)`, when the caller knows it (see `attention_importance`).
        signed (`bool`, *optional*, defaults to `False`):
            Use the signed ``C_t . B_s`` instead of its magnitude (a diagnostic variant: a source whose read-out
            is negative counts against the token); the mean is shifted by its minimum before normalising, which
            keeps the ranking.
        head_max (`bool`, *optional*, defaults to `False`):
            Reduce over heads with the maximum instead of the mean (after the mean over query tokens): a token
            that one head reads strongly ranks high.

    Returns:
        `torch.Tensor` of shape `(|V|,)`, float32, non-negative, summing to 1.
    """
    h = _tokens(hidden)
    first = _first_query(query_idx, vision_idx, h.shape[0], query_start)
    query_idx, vision_idx = query_idx.to(h.device), vision_idx.to(h.device)
    x, B, C, dt, A = _ssm_inputs(mixer, h, with_x=use_x_norm, c_rows=query_idx)

    # |C_t . B_s| per group for every column and the query rows (no gather of B): (n_groups, L, Q). B is read in
    # place (a strided view of the conv output), the query rows are the short side.
    cb = torch.bmm(B.transpose(0, 1), C.permute(1, 2, 0))
    if not signed:
        cb = cb.abs_()
    # causal: only columns at or after the first query token can lie after a row
    cb[:, first:] *= torch.arange(first, h.shape[0], device=h.device)[:, None] <= query_idx[None, :]
    weight = dt.index_select(0, vision_idx).T  # (heads, V): dt_s of each head
    if use_x_norm:
        weight = weight * x[vision_idx].norm(dim=-1).T

    if decay:
        # Decay depends on the head, so form the (heads, Q, V) rows of |alpha| (dt > 0, exp > 0: only C.B has a sign).
        group = _group_of_head(mixer).to(h.device)
        per_head = cb[:, vision_idx].transpose(1, 2)[group] * weight[:, None, :] * _decay(A, dt, query_idx, vision_idx)
        per_head = per_head.mean(dim=1)  # (heads, V)
    else:
        # Without decay the mean over t factorises per group: mean_t |C_t . B_s| is shared by the group's heads
        # (consecutive heads share a group, so the heads axis splits as (n_groups, heads per group)).
        per_group = cb.mean(dim=2).index_select(1, vision_idx)  # (n_groups, V)
        per_head = (per_group[:, None, :] * weight.view(mixer.n_groups, -1, weight.shape[-1])).flatten(0, 1)
    score = per_head.amax(dim=0) if head_max else per_head.mean(dim=0)
    if signed:
        score = score - score.min()
    return _normalise(score)


def mamba_clip_importance(mixer: nn.Module, hidden: torch.Tensor | PreNormed, vision_idx: torch.Tensor
                          ) -> torch.Tensor:
    """The clip score of token reduction for state space models (Zhan et al., EMNLP 2024: "Rethinking Token
    Reduction for State Space Models"; their code's ``metrics='clip'``): ``I(s) = sum_d max(0, y[s, d])`` of the
    Mamba block's output ``y``, here the mixer's output on the layer's input (the block's output before its
    residual add, which the authors' block returns separately). Query-blind: it ranks what each token writes, not
    what the question reads.

    Args:
        mixer (`NemotronHMamba2Mixer`): the Mamba-2 mixer of the layer.
        hidden (`torch.Tensor` of shape `(1, L, D)`, or `PreNormed`): the layer's input after (or, as a
            `PreNormed`, with) the block's pre-norm.
        vision_idx (`torch.LongTensor` of shape `(|V|,)`): positions of the vision tokens.

    Returns:
        `torch.Tensor` of shape `(|V|,)`, float32, non-negative, summing to 1.
    """
    normed = hidden.apply() if isinstance(hidden, PreNormed) else hidden
    y = mixer(normed)[0]  # (L, D): the whole sequence runs, as the recurrence needs every earlier token
    return _normalise(y.index_select(0, vision_idx.to(y.device)).float().clamp_min(0).sum(dim=-1))


@torch.no_grad()
def mamba_implicit_attention(mixer: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The full implicit attention matrix of a Mamba-2 mixer (for checks; quadratic in L).

    With it the SSM output is ``y[t, h] = sum_s alpha[h, t, s] * x[s, h] + D_h * x[t, h]``, before the gated norm
    and `out_proj`.

    Args:
        mixer (`NemotronHMamba2Mixer`):
            The Mamba-2 mixer.
        hidden (`torch.Tensor` of shape `(1, L, D)`, or `PreNormed`):
            Its input (after the block's pre-norm, or before it with that norm).

    Returns:
        alpha (`torch.Tensor` of shape `(num_heads, L, L)`): ``alpha[h, t, s]``, zero for ``s > t``.
        x (`torch.Tensor` of shape `(L, num_heads, head_dim)`): the SSM input after the conv and activation.
    """
    h = _tokens(hidden)
    x, B, C, dt, A = _ssm_inputs(mixer, h, with_x=True)
    positions = torch.arange(h.shape[0], device=h.device)
    cb = torch.einsum("tgn,sgn->gts", C, B)[_group_of_head(mixer).to(h.device)]  # (heads, L, L)
    alpha = cb * dt.T[:, None, :] * _decay(A, dt, positions, positions)
    return alpha, x
