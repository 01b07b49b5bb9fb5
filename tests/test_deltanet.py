"""The Gated DeltaNet implicit attention and importance, checked against transformers' real Qwen3.5 modules (tiny
random configs, float64, CPU).

``sum_s alpha[h, t, s] v[h, s]`` must rebuild what the module passes to its gated RMSNorm (and, through the
module's own norm and out_proj, its output); alpha must equal a plain loop over the coefficient vectors of the
state; the scores must equal plain loops written from their formulas.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen3_5TextConfig
from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5Attention, Qwen3_5GatedDeltaNet, Qwen3_5TextModel

from hybridreduce.reduction.deltanet import deltanet_implicit_attention, deltanet_importance

D = 32
# (num_k_heads, num_v_heads, d_k, d_v): equal heads, grouped value heads (2 and 3 value heads per key head).
HEADS = [(2, 2, 16, 16), (2, 4, 16, 8), (1, 3, 8, 12)]


def config(num_k: int, num_v: int, d_k: int, d_v: int, **kwargs) -> Qwen3_5TextConfig:
    return Qwen3_5TextConfig(**{
        "vocab_size": 64, "hidden_size": D, "intermediate_size": 64, "num_hidden_layers": 2,
        "layer_types": ["linear_attention", "full_attention"],  # layer 0 is a Gated DeltaNet layer
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
        "linear_num_key_heads": num_k, "linear_num_value_heads": num_v,
        "linear_key_head_dim": d_k, "linear_value_head_dim": d_v, "linear_conv_kernel_dim": 4,
    } | kwargs)


def randomise(m: Qwen3_5GatedDeltaNet, seed: int) -> Qwen3_5GatedDeltaNet:
    """Heads that differ: slow and fast gates (long-range terms across the chunks of 64), betas over (0, 1), a
    norm weight that is not ones, a conv that mixes neighbours."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.A_log.copy_(torch.log(torch.rand(m.num_v_heads, generator=g) * 0.5 + 0.02))
        m.dt_bias.copy_(torch.randn(m.num_v_heads, generator=g) - 1.0)
        m.in_proj_b.weight.mul_(4.0)
        m.in_proj_a.weight.mul_(2.0)
        m.norm.weight.copy_(1 + 0.2 * torch.randn(m.norm.weight.shape, generator=g))
        m.conv1d.weight.mul_(2.0)
    return m


def mixer(heads: tuple[int, int, int, int], seed: int = 0) -> Qwen3_5GatedDeltaNet:
    torch.manual_seed(seed)
    return randomise(Qwen3_5GatedDeltaNet(config(*heads), layer_idx=0), seed).double().eval()


def random_hidden(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run_module(m: Qwen3_5GatedDeltaNet, x: torch.Tensor):
    """The module's output ``(1, L, D)`` and the two arguments of its gated norm: the core output (reshaped to
    ``(L, num_v_heads, d_v)``) and z ``(L * num_v_heads, d_v)``."""
    seen = []
    hook = m.norm.register_forward_pre_hook(lambda mod, args: seen.append(args))
    try:
        with torch.no_grad():
            out = m(x)
    finally:
        hook.remove()
    core, z = seen[0]
    return out, core.view(x.shape[1], m.num_v_heads, m.head_v_dim), z


def reference_inputs(m: Qwen3_5GatedDeltaNet, x: torch.Tensor):
    """q, k (repeated to the value heads, ``(L, H, d_k)``), v ``(L, H, d_v)``, g and beta ``(L, H)``, in float64,
    written from the module's definition with its own submodules (its nn.Conv1d pads K - 1 on both sides)."""
    L = x.shape[1]
    with torch.no_grad():
        mixed = F.silu(m.conv1d(m.in_proj_qkv(x).transpose(1, 2))[..., :L])[0].T  # (L, conv_dim)
        q, k, v = mixed.split([m.key_dim, m.key_dim, m.value_dim], dim=-1)
        q = q.reshape(L, m.num_k_heads, m.head_k_dim)
        k = k.reshape(L, m.num_k_heads, m.head_k_dim)
        q = q / torch.sqrt((q**2).sum(-1, keepdim=True) + 1e-6) / m.head_k_dim**0.5
        k = k / torch.sqrt((k**2).sum(-1, keepdim=True) + 1e-6)
        rep = m.num_v_heads // m.num_k_heads
        q, k = q.repeat_interleave(rep, dim=1), k.repeat_interleave(rep, dim=1)
        beta = torch.sigmoid(m.in_proj_b(x)[0])
        # As the module forms g: A_log and a are cast to float32 first, even in a float64 model (~1e-8 relative).
        g = -torch.exp(m.A_log.float()) * F.softplus(m.in_proj_a(x)[0].float() + m.dt_bias)
    return q, k, v.reshape(L, m.num_v_heads, m.head_v_dim), g, beta


def reference_core(m: Qwen3_5GatedDeltaNet, x: torch.Tensor) -> torch.Tensor:
    """The gated delta rule as a float64 loop over the state ``S`` ``(d_v, d_k)``:
    ``S_t = exp(g_t) S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T``, ``o_t = S_t q_t``. Returns `(L, H, d_v)`."""
    q, k, v, g, beta = reference_inputs(m, x)
    L, H = g.shape
    out = torch.zeros_like(v)
    eye = torch.eye(m.head_k_dim, dtype=torch.float64)
    for h in range(H):
        S = torch.zeros(m.head_v_dim, m.head_k_dim, dtype=torch.float64)
        for t in range(L):
            kt = k[t, h]
            decayed = torch.exp(g[t, h]) * S
            S = decayed @ (eye - beta[t, h] * torch.outer(kt, kt)) + beta[t, h] * torch.outer(v[t, h], kt)
            out[t, h] = S @ q[t, h]
    return out


def reference_alpha(m: Qwen3_5GatedDeltaNet, x: torch.Tensor) -> torch.Tensor:
    """alpha from the coefficient vectors of the state, ``S_t = sum_s v_s w_{t,s}^T``: the rows ``W_t`` ``(L, d_k)``
    follow ``W_t = exp(g_t) W_{t-1} (I - beta_t k_t k_t^T) + beta_t e_t k_t^T`` and ``alpha[t, s] = w_{t,s} . q_t``.
    A loop, independent of the module's triangular solve. Returns `(H, L, L)`."""
    q, k, _, g, beta = reference_inputs(m, x)
    L, H = g.shape
    alpha = torch.zeros(H, L, L, dtype=torch.float64)
    eye = torch.eye(m.head_k_dim, dtype=torch.float64)
    for h in range(H):
        W = torch.zeros(L, m.head_k_dim, dtype=torch.float64)
        for t in range(L):
            kt = k[t, h]
            W = torch.exp(g[t, h]) * W @ (eye - beta[t, h] * torch.outer(kt, kt))
            W[t] += beta[t, h] * kt
            alpha[h, t] = W @ q[t, h]
    return alpha


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ----------------------------------------------------------------------------------------------------------------
# Implicit attention
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("L", [3, 70, 150])
def test_implicit_attention_rebuilds_the_module(heads, L):
    m, x = mixer(heads), random_hidden(L)
    out, core, z = run_module(m, x)
    alpha, v = deltanet_implicit_attention(m, x)
    assert alpha.shape == (m.num_v_heads, L, L) and v.shape == (m.num_v_heads, L, m.head_v_dim)
    assert alpha.dtype == v.dtype == torch.float64
    assert torch.equal(alpha, alpha.tril())  # causal
    recon = torch.einsum("hts,hsd->thd", alpha, v)  # (L, H, d_v)

    # The module's chunked kernel computes in float32 (even for a float64 model): float32-level agreement ...
    assert rel(recon, core) < 1e-5
    # ... and float64 agreement with the recurrence itself, written as a loop.
    assert rel(recon, reference_core(m, x)) < 1e-10
    # Through the module's own gated norm and out_proj: its full output.
    with torch.no_grad():
        full = m.out_proj(m.norm(recon.reshape(-1, m.head_v_dim), z).view(1, L, -1))
    assert rel(full, out) < 1e-5


@pytest.mark.parametrize("heads", HEADS[1:])
def test_implicit_attention_equals_the_coefficient_loop(heads):
    m, x = mixer(heads, seed=3), random_hidden(70, seed=4)
    alpha, _ = deltanet_implicit_attention(m, x)
    torch.testing.assert_close(alpha, reference_alpha(m, x), rtol=1e-9, atol=1e-12)
    # The diagonal carries no correction: alpha[h, t, t] = beta_t q_t . k_t.
    q, k, _, _, beta = reference_inputs(m, x)
    torch.testing.assert_close(alpha.diagonal(dim1=1, dim2=2), ((q * k).sum(-1) * beta).T, rtol=1e-10, atol=1e-13)
    # The long-range terms are not negligible (slow heads): the check sees more than one chunk.
    assert alpha[:, 69, :5].abs().max() > 1e-4


def test_inside_the_real_decoder():
    """The mixer's input is the layer's input after its pre-norm: capture both in a real Qwen3_5TextModel."""
    torch.manual_seed(0)
    model = Qwen3_5TextModel(config(2, 4, 16, 8)).double().eval()
    m = randomise(model.layers[0].linear_attn, seed=5)
    seen = {}

    def keep(name, value):  # a pre-hook must return None
        seen[name] = value

    hooks = [m.register_forward_pre_hook(lambda mod, args, kwargs: keep("x", kwargs["hidden_states"]),
                                         with_kwargs=True),
             m.norm.register_forward_pre_hook(lambda mod, args: keep("core", args[0]))]
    try:
        with torch.no_grad():
            model(input_ids=torch.randint(0, 64, (1, 90), generator=torch.Generator().manual_seed(6)), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    alpha, v = deltanet_implicit_attention(m, seen["x"])
    recon = torch.einsum("hts,hsd->thd", alpha, v).reshape(-1, m.head_v_dim)
    assert rel(recon, seen["core"]) < 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Importance
# ----------------------------------------------------------------------------------------------------------------

L_SCORE = 150
VISION = torch.arange(10, 120)  # a text prefix, then the vision tokens across two chunks
QUERY = torch.tensor([122, 125, 131, 140, 149])
QUERY_INSIDE = torch.tensor([60, 100, 130])  # rows before some vision tokens: the causal mask matters


def reference_decay_free(m, x, vision_idx, query_idx) -> torch.Tensor:
    """``mean_{h, t in Q} [s <= t] |q_t[h] . k_s[h]| * beta_s[h]``, normalised, as plain loops."""
    q, k, _, _, beta = reference_inputs(m, x)
    score = torch.zeros(len(vision_idx), dtype=torch.float64)
    for i, s in enumerate(vision_idx.tolist()):
        for h in range(m.num_v_heads):
            for t in query_idx.tolist():
                if s <= t:
                    score[i] += abs(float(q[t, h] @ k[s, h])) * float(beta[s, h])
    return score / score.sum()


def check_distribution(score: torch.Tensor, n: int) -> None:
    assert score.shape == (n,) and score.dtype == torch.float32
    assert (score >= 0).all()
    torch.testing.assert_close(score.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("query_idx", [QUERY, QUERY_INSIDE], ids=["after", "inside"])
def test_decay_free_score_equals_the_loop(heads, query_idx):
    m, x = mixer(heads, seed=7), random_hidden(L_SCORE, seed=8)
    score = deltanet_importance(m, x, vision_idx=VISION, query_idx=query_idx)
    check_distribution(score, len(VISION))
    torch.testing.assert_close(score.double(), reference_decay_free(m, x, VISION, query_idx), rtol=1e-5, atol=1e-8)
    if query_idx is QUERY_INSIDE:
        assert (score[VISION > 130] == 0).all()  # read by no query row


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("query_idx", [QUERY, QUERY_INSIDE], ids=["after", "inside"])
def test_decay_score_is_the_mean_of_alpha(heads, query_idx):
    m, x = mixer(heads, seed=9), random_hidden(L_SCORE, seed=10)
    score = deltanet_importance(m, x, vision_idx=VISION, query_idx=query_idx, decay=True)
    check_distribution(score, len(VISION))
    alpha, _ = deltanet_implicit_attention(m, x)
    expected = alpha[:, query_idx][:, :, VISION].abs().mean(dim=(0, 1))
    torch.testing.assert_close(score.double(), expected / expected.sum(), rtol=1e-6, atol=1e-9)
    # A different score from the decay-free one.
    assert not torch.allclose(score, deltanet_importance(m, x, vision_idx=VISION, query_idx=query_idx), rtol=1e-2)


def test_float32_module_gives_the_same_score():
    m = mixer(HEADS[1], seed=11)
    x = random_hidden(L_SCORE, seed=12)
    m32 = mixer(HEADS[1], seed=11).float()
    for decay in (False, True):
        torch.testing.assert_close(
            deltanet_importance(m32, x.float(), vision_idx=VISION, query_idx=QUERY, decay=decay),
            deltanet_importance(m, x, vision_idx=VISION, query_idx=QUERY, decay=decay), rtol=1e-4, atol=1e-7)


def test_empty_vision():
    m, x = mixer(HEADS[0]), random_hidden(20)
    empty = torch.tensor([], dtype=torch.long)
    assert deltanet_importance(m, x, vision_idx=empty, query_idx=torch.tensor([19])).shape == (0,)


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


def test_bad_inputs():
    m = mixer(HEADS[0])
    x = random_hidden(20)
    with pytest.raises(ValueError, match=r"shape \(1, L, 32\)"):
        deltanet_implicit_attention(m, x.expand(2, -1, -1))  # batch > 1
    with pytest.raises(ValueError, match=r"shape \(1, L, 32\)"):
        deltanet_importance(m, x.expand(2, -1, -1), vision_idx=VISION[:5], query_idx=torch.tensor([19]))
    with pytest.raises(ValueError, match=r"shape \(1, L, 32\)"):
        deltanet_implicit_attention(m, x[0])  # no batch axis
    with pytest.raises(ValueError, match=r"shape \(1, L, 32\)"):
        deltanet_implicit_attention(m, x[..., :16])  # wrong width
    with pytest.raises(ValueError, match="query_idx is empty"):
        deltanet_importance(m, x, vision_idx=torch.arange(5), query_idx=torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="vision_idx out of range"):
        deltanet_importance(m, x, vision_idx=torch.tensor([3, 20]), query_idx=torch.tensor([19]))
    with pytest.raises(ValueError, match="query_idx out of range"):
        deltanet_importance(m, x, vision_idx=torch.arange(5), query_idx=torch.tensor([-1]))
    with pytest.raises(ValueError, match="1-D"):
        deltanet_importance(m, x, vision_idx=torch.arange(6).view(2, 3), query_idx=torch.tensor([19]))
    with pytest.raises(TypeError, match="Qwen3_5GatedDeltaNet"):
        deltanet_implicit_attention(Qwen3_5Attention(config(*HEADS[0]), layer_idx=1), x)
