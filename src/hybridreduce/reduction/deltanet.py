"""Implicit attention and query-conditioned importance of a Gated DeltaNet layer (Qwen3.5's linear attention).

The mixer is transformers' ``Qwen3_5GatedDeltaNet`` (``Qwen3_5MoeGatedDeltaNet`` is the same code). For one
sequence of ``L`` tokens, per value head ``h`` (``H = num_v_heads``; value head ``h`` reads the query/key head
``h // (num_v_heads // num_k_heads)``, as the module's ``repeat_interleave``), its forward computes:

* ``q, k, v``: ``in_proj_qkv``, then the causal depthwise conv (kernel ``K``, left zero padding) and its activation
  (``config.hidden_act``, silu), split ``[key_dim | key_dim | value_dim]`` into heads;
* ``q <- l2norm(q) / sqrt(d_k)``, ``k <- l2norm(k)``, with ``l2norm(x) = x / sqrt(sum x^2 + 1e-6)`` (inside the
  kernel, ``use_qk_l2norm_in_kernel=True``);
* ``beta_t = sigmoid(in_proj_b(x_t))`` and the log gate ``g_t = -exp(A_log) * softplus(in_proj_a(x_t) + dt_bias)``
  (``<= 0``);
* the gated delta rule, with the state ``S`` ``(d_v, d_k)`` decayed *before* the update and read *after* it::

      S_t = exp(g_t) S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,        o_t = S_t q_t;

* then ``out_proj(RMSNormGated(o, z))`` with ``z = in_proj_z(x)`` (not needed here).

Implicit attention. Writing the update with the delta-rule correction
``u_t = beta_t (v_t - exp(g_t) S_{t-1} k_t)``, ``S_t = exp(g_t) S_{t-1} + u_t k_t^T``, and with the inclusive
cumulative gate ``G_t = sum_{r<=t} g_r``::

      S_t = sum_{s<=t} exp(G_t - G_s) u_s k_s^T
      o_t = sum_{s<=t} P[t, s] u_s,             P[t, s] = exp(G_t - G_s) (q_t . k_s)          (s <= t)
      u_t + sum_{r<t} A[t, r] u_r = beta_t v_t,  A[t, r] = beta_t exp(G_t - G_r) (k_t . k_r)  (r < t)

so ``U = (I + A)^{-1} diag(beta) V`` and ``o_t = sum_{s<=t} alpha[t, s] v_s`` with

      alpha = P (I + A)^{-1} diag(beta)       (per head, lower triangular; alpha[t, t] = beta_t q_t . k_t).

Importance (vision columns ``s``, query rows ``t``, mean over the ``H`` value heads, normalised to sum 1 over the
vision columns, as :mod:`hybridreduce.reduction.importance` does for Mamba-2):

* decay-free (default): ``I(s) = mean_{h, t in Q} [s <= t] |q_t[h] . k_s[h]| * beta_s[h]``;
* ``decay=True`` (ablation): ``I(s) = mean_{h, t in Q} |alpha[h, t, s]|``.

Choice: the decay-free score drops both the cumulative gate ``exp(G_t - G_s)`` *and* the delta-rule correction
``(I + A)^{-1}``, keeping the direct write-then-read term ``beta_s (q_t . k_s)``. That is the exact analogue of
Mamba-2's decay-free ``(C_t . B_s) dt_s`` (read vector . write vector, times the write strength): Mamba-2's
alpha is that term times its decay, with no correction, so dropping the decay leaves only it. Here the
correction cannot be kept without the gate: ``A`` itself carries ``exp(G_t - G_r)``, and it couples every pair of
earlier tokens through ``k_t . k_r`` (an ``L x L`` solve). The ablation ``decay=True`` therefore takes the full
``alpha`` (gate and correction).

Qwen3.5's full-attention layers (``Qwen3_5Attention``) are scored by :func:`gated_attention_importance`, the
attention score of :mod:`hybridreduce.reduction.importance` for that module: its ``q_proj`` also produces the
output gate, queries and keys pass through per-head RMSNorms, and only the first ``rotary_dim`` channels rotate.

Conventions: ``hidden`` is the mixer's input (the layer's input after its pre-norm), batch size 1, no padding
mask and no cache (a fresh prefill). Projections and the conv run with the module's own weights in its dtype
(the same products as its forward); from the conv output on, the arithmetic is in float64 for
:func:`deltanet_implicit_attention` and for ``decay=True`` (the module's torch kernels compute it in float32), in
float32 for the decay-free score. ``g`` is formed as the module forms it (``A_log`` and ``a`` cast to float32
first) and then widened. :func:`deltanet_implicit_attention` and ``decay=True`` build ``(H, L, L)`` matrices;
the decay-free score only forms the ``|Q| x |V|`` products of each key head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .importance import _first_query, _normalise, query_attention_score

__all__ = ["deltanet_implicit_attention", "deltanet_importance", "gated_attention_importance", "is_gated_attention"]


def _tokens(mixer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """`(1, L, D)` -> `(L, D)` in the mixer's dtype, after checking the shape and that ``mixer`` is a
    Qwen3.5-style Gated DeltaNet (separate ``in_proj_qkv``/``in_proj_a``/``in_proj_b``)."""
    if not all(hasattr(mixer, name) for name in ("in_proj_qkv", "in_proj_a", "in_proj_b", "A_log", "conv1d")):
        raise TypeError(f"expected a Qwen3_5GatedDeltaNet-style mixer, got {type(mixer).__name__}")
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"hidden must be a tensor of shape (1, L, D), got {type(hidden).__name__}")
    if hidden.dim() != 3 or hidden.shape[0] != 1 or hidden.shape[-1] != mixer.hidden_size:
        raise ValueError(f"hidden must have shape (1, L, {mixer.hidden_size}), got {tuple(hidden.shape)}")
    return hidden[0].to(mixer.in_proj_qkv.weight.dtype)


def _l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """transformers' (and FLA's) ``l2norm``: ``x / sqrt(sum x^2 + eps)`` over the last axis (eps inside the root)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def _delta_inputs(mixer: nn.Module, h: torch.Tensor, dtype: torch.dtype):
    """The gated delta rule's inputs, as the module's forward computes them, widened to ``dtype``.

    Args:
        mixer (`Qwen3_5GatedDeltaNet`): the linear-attention mixer.
        h (`torch.Tensor` of shape `(L, D)`, in the mixer's dtype): its input.
        dtype (`torch.dtype`): the dtype of the arithmetic after the conv.

    Returns:
        q (`(L, num_k_heads, d_k)`, l2-normalised and scaled by ``d_k ** -0.5``), k (`(L, num_k_heads, d_k)`,
        l2-normalised), v (`(L, num_v_heads, d_v)`), g (`(L, num_v_heads)`, log gate ``<= 0``) and beta
        (`(L, num_v_heads)`, in (0, 1)).
    """
    seq_len, weight = h.shape[0], mixer.conv1d.weight  # weight: (conv_dim, 1, K)
    mixed = mixer.in_proj_qkv(h).T[None]  # (1, conv_dim, L)
    # Causal depthwise conv: pad K - 1 zeros on both sides and keep the first L outputs (as causal_conv1d_fn).
    conv = F.conv1d(mixed.to(weight.dtype), weight, mixer.conv1d.bias, padding=weight.shape[-1] - 1,
                    groups=mixed.shape[1])[..., :seq_len]
    mixed = ACT2FN[mixer.activation](conv).to(h.dtype)[0].T.to(dtype)  # (L, conv_dim)
    q, k, v = mixed.split([mixer.key_dim, mixer.key_dim, mixer.value_dim], dim=-1)
    q = _l2norm(q.reshape(seq_len, mixer.num_k_heads, mixer.head_k_dim)) * mixer.head_k_dim ** -0.5
    k = _l2norm(k.reshape(seq_len, mixer.num_k_heads, mixer.head_k_dim))
    v = v.reshape(seq_len, mixer.num_v_heads, mixer.head_v_dim)
    beta = mixer.in_proj_b(h).sigmoid().to(dtype)
    g = (-mixer.A_log.float().exp() * F.softplus(mixer.in_proj_a(h).float() + mixer.dt_bias)).to(dtype)
    return q, k, v, g, beta


def _heads(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`(L, num_k_heads, d)` -> `(L, num_v_heads, d)`: value head h reads key head h // (num_v / num_k)."""
    return x.repeat_interleave(mixer.num_v_heads // mixer.num_k_heads, dim=1)


def _implicit_rows(mixer: nn.Module, h: torch.Tensor, rows: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha = P (I + A)^{-1} diag(beta)`` in float64 (see the module docstring), at the query ``rows`` (default
    all).

    Returns:
        alpha (`torch.Tensor` of shape `(num_v_heads, len(rows) or L, L)`), zero where ``s > t``, and v
        (`torch.Tensor` of shape `(num_v_heads, L, d_v)`).
    """
    q, k, v, g, beta = _delta_inputs(mixer, h, torch.float64)
    q, k = _heads(mixer, q), _heads(mixer, k)  # (L, H, d_k)
    seq_len = h.shape[0]
    cum = g.cumsum(dim=0).T  # (H, L): inclusive G_t
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=h.device).tril()
    # exp(G_t - G_s) for s <= t; -inf above the diagonal before the exp (no overflow).
    decay = (cum[:, :, None] - cum[:, None, :]).masked_fill(~causal, float("-inf")).exp()  # (H, L, L)
    P = torch.einsum("thd,shd->hts", q, k) * decay  # (H, L, L): read of token s's write at t
    A = (beta.T[:, :, None] * torch.einsum("thd,rhd->htr", k, k) * decay).tril(-1)  # (H, L, L) strictly lower
    eye = torch.eye(seq_len, dtype=A.dtype, device=A.device)
    # (I + A)^{-1} diag(beta): the coefficient of v_s in the correction u_t (unit lower triangular solve).
    coeff = torch.linalg.solve_triangular(A + eye, eye.expand_as(A), upper=False, unitriangular=True)
    coeff = coeff * beta.T[:, None, :]
    if rows is not None:
        P = P.index_select(1, rows)
    return P @ coeff, v.transpose(0, 1)


@torch.no_grad()
def deltanet_implicit_attention(mixer: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The full implicit attention matrix of a Gated DeltaNet mixer (for checks; ``(H, L, L)`` memory).

    With it the output of the gated delta rule (what the module passes to its gated RMSNorm, before ``out_proj``)
    is ``o[h, t] = sum_{s <= t} alpha[h, t, s] * v[h, s]``, where ``alpha = P (I + A)^{-1} diag(beta)`` per value
    head (module docstring).

    Args:
        mixer (`Qwen3_5GatedDeltaNet`):
            The linear-attention mixer of a Qwen3.5 decoder layer (``layer.linear_attn``).
        hidden (`torch.Tensor` of shape `(1, L, D)`):
            Its input: the layer's input after its pre-norm (``input_layernorm``).

    Returns:
        alpha (`torch.Tensor` of shape `(num_v_heads, L, L)`, float64): zero for ``s > t``.
        values (`torch.Tensor` of shape `(num_v_heads, L, d_v)`, float64): ``v`` after the conv and activation.
    """
    return _implicit_rows(mixer, _tokens(mixer, hidden))


def _check_indices(idx: torch.Tensor, name: str, seq_len: int) -> torch.Tensor:
    if idx.dim() != 1:
        raise ValueError(f"{name} must be a 1-D index tensor, got shape {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= seq_len):
        raise ValueError(f"{name} out of range for a sequence of {seq_len} tokens")
    return idx.long()


@torch.no_grad()
def deltanet_importance(
    mixer: nn.Module,
    hidden: torch.Tensor,
    *,
    query_idx: torch.Tensor,
    vision_idx: torch.Tensor,
    decay: bool = False,
) -> torch.Tensor:
    """Query-conditioned importance of vision tokens from the implicit attention of a Gated DeltaNet layer.

    Decay-free (default): ``I(s) = mean_{h, t in Q} [s <= t] |q_t[h] . k_s[h]| * beta_s[h]``, float32, only the
    ``|Q| x |V|`` products of each key head (the mean over ``t`` is shared by the value heads of a key head).
    With `decay`: ``I(s) = mean_{h, t in Q} |alpha[h, t, s]|`` with the full ``alpha`` (cumulative gate and
    delta-rule correction), float64 and ``(H, L, L)`` memory. ``h`` runs over the ``num_v_heads`` value heads.
    Both are normalised to sum 1 over the vision columns. Why the decay-free score drops the correction too: see
    the module docstring.

    The index arguments are keyword-only (their order differs from
    :func:`~hybridreduce.reduction.importance.mamba_importance`'s).

    Args:
        mixer (`Qwen3_5GatedDeltaNet`):
            The linear-attention mixer of the layer.
        hidden (`torch.Tensor` of shape `(1, L, D)`):
            Its input: the layer's input after its pre-norm.
        vision_idx (`torch.LongTensor` of shape `(|V|,)`):
            Positions of the vision tokens.
        query_idx (`torch.LongTensor` of shape `(|Q|,)`):
            Positions of the query text tokens (non-empty).
        decay (`bool`, *optional*, defaults to `False`):
            Score with the full implicit attention ``|alpha|`` (ablation).

    Returns:
        `torch.Tensor` of shape `(|V|,)`, float32, non-negative, summing to 1.
    """
    h = _tokens(mixer, hidden)
    seq_len = h.shape[0]
    vision_idx = _check_indices(vision_idx, "vision_idx", seq_len).to(h.device)
    query_idx = _check_indices(query_idx, "query_idx", seq_len).to(h.device)
    if query_idx.numel() == 0:
        raise ValueError("query_idx is empty: the score is conditioned on the query tokens")

    if decay:
        alpha, _ = _implicit_rows(mixer, h, rows=query_idx)  # (H, Q, L)
        score = alpha.index_select(2, vision_idx).abs().mean(dim=(0, 1))
        return _normalise(score.float())

    q, k, _, _, beta = _delta_inputs(mixer, h, torch.float32)
    qk = torch.einsum("tjd,sjd->jts", q[query_idx], k[vision_idx]).abs()  # (num_k_heads, Q, V)
    qk = qk * (vision_idx[None, :] <= query_idx[:, None])  # causal: token s is read only at t >= s
    per_key_head = qk.mean(dim=1)  # (num_k_heads, V)
    per_key_head = per_key_head.repeat_interleave(mixer.num_v_heads // mixer.num_k_heads, dim=0)  # as _heads
    per_head = per_key_head * beta[vision_idx].T  # (num_v_heads, V)
    return _normalise(per_head.mean(dim=0))


# ----------------------------------------------------------------------------------------------------------------
# Qwen3.5's gated full attention
# ----------------------------------------------------------------------------------------------------------------


def is_gated_attention(attn: nn.Module) -> bool:
    """Whether ``attn`` is Qwen3.5-style gated attention: ``q_proj`` gives ``2 * heads * head_dim`` features (query and
    output gate) and q/k norms follow (Qwen3's attention has the norms, not the gate)."""
    q_proj, config = getattr(attn, "q_proj", None), getattr(attn, "config", None)
    if q_proj is None or config is None or not hasattr(attn, "q_norm"):
        return False
    return q_proj.out_features == 2 * config.num_attention_heads * attn.head_dim


def _rotate_partial(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the first ``rotary_dim = cos.shape[-1]`` channels of ``x`` ``(T, heads, d)``, the rest passed
    through (Qwen3.5's ``apply_rotary_pos_emb``); ``cos``/``sin`` ``(T, rotary_dim)``."""
    rd = cos.shape[-1]
    rot, rest = x[..., :rd], x[..., rd:]
    half = rot.shape[-1] // 2
    rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)  # rotate_half
    return torch.cat((rot * cos[:, None] + rotated * sin[:, None], rest), dim=-1)


@torch.no_grad()
def gated_attention_importance(
    attn: nn.Module,
    hidden: torch.Tensor,
    query_idx: torch.Tensor,
    vision_idx: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    query_start: int | None = None,
) -> torch.Tensor:
    """Mean causal attention probability that the query tokens give to each vision token, in a Qwen3.5 attention
    layer: ``I(s) = mean_{heads, t in Q} softmax_{keys <= t}(q_t . k / sqrt(d))[s]``, normalised over the vision
    columns, as :func:`~hybridreduce.reduction.importance.attention_importance`.

    The probabilities are the module's own: ``q_proj`` gives per head ``[query (d) | gate (d)]`` (only the query
    rows are computed, at the query tokens; the sigmoid gate scales the output, not the probabilities), ``q_norm``
    / ``k_norm`` act on each head, and RoPE rotates the first ``rotary_dim`` channels. Only the ``|Q| x L`` logits
    are formed; arithmetic after the norms in float32.

    Args:
        attn (`Qwen3_5Attention`): the layer's ``self_attn``.
        hidden (`torch.Tensor` of shape `(1, L, D)`): its input, after the layer's pre-norm.
        query_idx (`torch.LongTensor` of shape `(|Q|,)`): positions of the query tokens (non-empty).
        vision_idx (`torch.LongTensor` of shape `(|V|,)`): positions of the vision tokens.
        position_embeddings (two `torch.Tensor` of shape `(1, L, rotary_dim)`): ``(cos, sin)`` of the sequence.
        query_start (`int`, *optional*): ``min(query_idx)`` when the caller knows it (nothing is read back).

    Returns:
        `torch.Tensor` of shape `(|V|,)`, float32, non-negative, summing to 1.
    """
    if not is_gated_attention(attn):
        raise TypeError(f"expected a Qwen3_5Attention-style module, got {type(attn).__name__}")
    if hidden.dim() != 3 or hidden.shape[0] != 1:
        raise ValueError(f"hidden must have shape (1, L, D), got {tuple(hidden.shape)}")
    weight = attn.q_proj.weight
    h = hidden[0].to(weight.dtype)
    seq_len = h.shape[0]
    if query_start is None:  # the indices are the caller's own: check them (as attention_importance does)
        query_idx = _check_indices(query_idx, "query_idx", seq_len)
        vision_idx = _check_indices(vision_idx, "vision_idx", seq_len)
    first = _first_query(query_idx, vision_idx, seq_len, query_start)
    query_idx, vision_idx = query_idx.to(h.device), vision_idx.to(h.device)
    n_heads, n_kv, d = attn.config.num_attention_heads, attn.config.num_key_value_heads, attn.head_dim

    # The query half of each head's [query | gate] rows of q_proj.
    q_weight = weight.view(n_heads, 2 * d, -1)[:, :d].reshape(n_heads * d, -1)
    q_bias = None if attn.q_proj.bias is None else attn.q_proj.bias.view(n_heads, 2 * d)[:, :d].reshape(-1)
    q = attn.q_norm(F.linear(h.index_select(0, query_idx), q_weight, q_bias).view(-1, n_heads, d)).float()
    k = attn.k_norm(attn.k_proj(h).view(seq_len, n_kv, d)).float()  # (L, kv_heads, d)
    cos, sin = (p[0].float().to(h.device) for p in position_embeddings)  # (L, rotary_dim)
    q = _rotate_partial(q, cos.index_select(0, query_idx), sin.index_select(0, query_idx)) * attn.scaling
    k = _rotate_partial(k, cos, sin)

    return query_attention_score(q, k, query_idx, vision_idx, first)
