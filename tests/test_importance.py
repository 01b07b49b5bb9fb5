"""Query-conditioned importance scores checked against the real transformers modules (tiny random configs, CPU).

The Mamba-2 implicit attention must rebuild the mixer's own forward output; the scores must equal slow explicit
loops (Mamba-2) or the rows of the module's own eager attention probabilities (attention).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import NemotronHConfig, Qwen2Config
from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHAttention, NemotronHMamba2Mixer
from transformers.models.qwen2.modeling_qwen2 import Qwen2Attention, Qwen2RotaryEmbedding

from hybridreduce.reduction.importance import attention_importance, mamba_implicit_attention, mamba_importance

L = 40
# Sequence layout: text prefix, vision tokens, a separator, the query (after every vision token).
VISION = torch.arange(4, 28)
QUERY = torch.tensor([30, 31, 33, 36, 39])


def nemotron_config() -> NemotronHConfig:
    return NemotronHConfig(
        vocab_size=64, hidden_size=64,
        layers_block_type=["linear_attention", "full_attention", "mlp", "linear_attention"],
        mamba_num_heads=4, mamba_head_dim=16, n_groups=2, ssm_state_size=16,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        intermediate_size=128, conv_kernel=4, chunk_size=16,
        time_step_min=0.03,  # the mixer clamps dt at this floor: some tokens below it exercise the clamp
    )


@pytest.fixture(scope="module")
def mixer() -> NemotronHMamba2Mixer:
    torch.manual_seed(0)
    m = NemotronHMamba2Mixer(nemotron_config(), layer_idx=0).eval()
    with torch.no_grad():  # heads that differ: decay rates, step sizes, skip and norm weights
        m.A_log.copy_(torch.log(torch.rand(m.num_heads) * 2 + 0.2))
        m.dt_bias.copy_(torch.randn(m.num_heads) - 2.0)
        m.D.copy_(torch.randn(m.num_heads))
        m.norm.weight.copy_(1 + 0.1 * torch.randn_like(m.norm.weight))
        m.conv1d.weight.mul_(3.0)
    return m


def random_hidden(n: int = L, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, n, 64, generator=torch.Generator().manual_seed(seed))


def check_distribution(score: torch.Tensor) -> None:
    assert score.shape == VISION.shape and score.dtype == torch.float32
    assert (score >= 0).all()
    torch.testing.assert_close(score.sum(), torch.tensor(1.0))


def reference_ssm(m: NemotronHMamba2Mixer, h: torch.Tensor):
    """x, B, C, dt, A, gate from the full module pieces (full in_proj, the module's own conv1d)."""
    with torch.no_grad():
        gate, xbc, dt = m.in_proj(h)[0].split([m.intermediate_size, m.conv_dim, m.num_heads], dim=-1)
        xbc = m.act(m.conv1d(xbc.T[None])[0, :, : h.shape[1]].T)
        gs = m.n_groups * m.ssm_state_size
        x, B, C = xbc.split([m.intermediate_size, gs, gs], dim=-1)
        dt = F.softplus(dt + m.dt_bias).clamp(*m.time_step_limit)
        return (x.view(-1, m.num_heads, m.head_dim), B.view(-1, m.n_groups, m.ssm_state_size),
                C.view(-1, m.n_groups, m.ssm_state_size), dt, -torch.exp(m.A_log), gate)


def loop_mamba_score(m, h, decay: bool, use_x_norm: bool, signed: bool = False, head_max: bool = False
                     ) -> torch.Tensor:
    """The score formula, one (head, t, s) at a time; ``signed``: C_t.B_s itself, shifted by the minimum of the
    final score; ``head_max``: the largest per-head mean over t instead of the mean over heads."""
    x, B, C, dt, A, _ = reference_ssm(m, h)
    per_group = m.num_heads // m.n_groups
    if signed or head_max:
        heads = torch.zeros(m.num_heads, len(VISION))
        for head in range(m.num_heads):
            g = head // per_group
            for j, s in enumerate(VISION.tolist()):
                reads = [torch.dot(C[t, g], B[s, g]) * dt[s, head] for t in QUERY.tolist()]
                heads[head, j] = sum(r if signed else r.abs() for r in reads) / len(reads)
        score = heads.max(dim=0).values if head_max else heads.mean(dim=0)
        score = score - score.min() if signed else score
        return score / score.sum()
    score = torch.zeros(len(VISION))
    for head in range(m.num_heads):
        g = head // per_group
        for t in QUERY.tolist():
            for j, s in enumerate(VISION.tolist()):
                a = torch.dot(C[t, g], B[s, g]) * dt[s, head]
                if decay:
                    a = a * torch.exp(A[head] * dt[s + 1 : t + 1, head].sum())
                if use_x_norm:
                    a = a * x[s, head].norm()
                score[j] += a.abs()
    return score / score.sum()


def test_implicit_attention_reconstructs_mixer_forward(mixer):
    h = random_hidden()
    alpha, x = mamba_implicit_attention(mixer, h)
    assert alpha.shape == (mixer.num_heads, L, L) and x.shape == (L, mixer.num_heads, mixer.head_dim)
    assert (alpha.triu(1) == 0).all()
    _, _, _, dt, _, gate = reference_ssm(mixer, h)
    assert (dt == mixer.time_step_limit[0]).any() and (dt > mixer.time_step_limit[0]).any()  # clamp is exercised
    with torch.no_grad():
        y = torch.einsum("hts,shp->thp", alpha, x) + mixer.D[:, None] * x  # SSM + D skip
        rebuilt = mixer.out_proj(mixer.norm(y.reshape(1, L, -1), gate[None]))
        expected = mixer(h)  # torch fallback: chunked scan over 3 chunks of 16
    torch.testing.assert_close(rebuilt, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("use_x_norm", [False, True])
def test_mamba_decay_free_score_matches_loop(mixer, use_x_norm):
    h = random_hidden()
    score = mamba_importance(mixer, h, QUERY, VISION, use_x_norm=use_x_norm)
    check_distribution(score)
    torch.testing.assert_close(score, loop_mamba_score(mixer, h, decay=False, use_x_norm=use_x_norm))


@pytest.mark.parametrize(("signed", "head_max"), [(True, False), (False, True), (True, True)])
def test_mamba_score_variants_match_loop(mixer, signed, head_max):
    h = random_hidden()
    score = mamba_importance(mixer, h, QUERY, VISION, signed=signed, head_max=head_max)
    check_distribution(score)
    torch.testing.assert_close(score, loop_mamba_score(mixer, h, False, False, signed=signed, head_max=head_max))


def test_mamba_decay_free_equals_decay_included_without_decay(mixer):
    """With A = 0 there is no decay, so |alpha| is exactly the decay-free |C.B| dt."""
    h = random_hidden()
    no_decay = copy.deepcopy(mixer)
    with torch.no_grad():
        no_decay.A_log.fill_(float("-inf"))
    alpha, _ = mamba_implicit_attention(no_decay, h)
    expected = alpha[:, QUERY][:, :, VISION].abs().mean(dim=(0, 1))
    torch.testing.assert_close(mamba_importance(mixer, h, QUERY, VISION), expected / expected.sum())


def test_mamba_decay_score_matches_loop_and_implicit_attention(mixer):
    h = random_hidden()
    score = mamba_importance(mixer, h, QUERY, VISION, decay=True)
    check_distribution(score)
    torch.testing.assert_close(score, loop_mamba_score(mixer, h, decay=True, use_x_norm=False))
    alpha, _ = mamba_implicit_attention(mixer, h)
    expected = alpha[:, QUERY][:, :, VISION].abs().mean(dim=(0, 1))
    torch.testing.assert_close(score, expected / expected.sum())
    # The decay matters here: the ablation is a different ranking signal.
    assert not torch.allclose(score, mamba_importance(mixer, h, QUERY, VISION), atol=1e-3)


@pytest.mark.parametrize("decay", [False, True])
def test_mamba_score_ignores_tokens_after_last_query(mixer, decay):
    h = random_hidden()
    longer = torch.cat([h, random_hidden(7, seed=5)], dim=1)
    torch.testing.assert_close(mamba_importance(mixer, h, QUERY, VISION, decay=decay),
                               mamba_importance(mixer, longer, QUERY, VISION, decay=decay))


def eager_reference(attn, h, **kwargs) -> torch.Tensor:
    """Rows Q, columns V of the module's own eager causal attention probabilities, mean over heads and Q."""
    attn.config._attn_implementation = "eager"
    n = h.shape[1]
    mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        _, probs = attn(hidden_states=h, attention_mask=mask, **kwargs)  # (1, heads, L, L)
    assert probs.shape == (1, attn.config.num_attention_heads, n, n)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    score = probs[0][:, QUERY][:, :, VISION].mean(dim=(0, 1))
    return score / score.sum()


@pytest.fixture(scope="module")
def qwen2():
    torch.manual_seed(2)
    config = Qwen2Config(vocab_size=64, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128)
    attn = Qwen2Attention(config, layer_idx=0).eval()
    with torch.no_grad():  # q_proj/k_proj have biases; make them matter
        attn.q_proj.bias.normal_()
        attn.k_proj.bias.normal_()
        attn.q_proj.weight.mul_(3.0)
    return attn, Qwen2RotaryEmbedding(config)


def rope(rotary, h):
    return rotary(h, torch.arange(h.shape[1])[None])


def test_nemotron_attention_score_matches_eager_probabilities():
    torch.manual_seed(3)
    attn = NemotronHAttention(nemotron_config(), layer_idx=1).eval()
    with torch.no_grad():
        attn.q_proj.weight.mul_(4.0)  # sharper than uniform
    h = random_hidden()
    score = attention_importance(attn, h, QUERY, VISION)
    check_distribution(score)
    torch.testing.assert_close(score, eager_reference(attn, h), atol=1e-6, rtol=1e-5)
    longer = torch.cat([h, random_hidden(7, seed=5)], dim=1)
    torch.testing.assert_close(score, attention_importance(attn, longer, QUERY, VISION))


def test_qwen2_attention_score_matches_eager_probabilities(qwen2):
    attn, rotary = qwen2
    h = random_hidden()
    cos_sin = rope(rotary, h)
    assert cos_sin[0].shape == (1, L, attn.head_dim)
    score = attention_importance(attn, h, QUERY, VISION, position_embeddings=cos_sin)
    check_distribution(score)
    torch.testing.assert_close(score, eager_reference(attn, h, position_embeddings=cos_sin), atol=1e-6, rtol=1e-5)
    # RoPE is really applied: the same module without rotation gives a different score.
    no_rope = (torch.ones_like(cos_sin[0]), torch.zeros_like(cos_sin[1]))
    assert not torch.allclose(score, attention_importance(attn, h, QUERY, VISION, no_rope), atol=1e-4)
    longer = torch.cat([h, random_hidden(7, seed=5)], dim=1)
    torch.testing.assert_close(score, attention_importance(attn, longer, QUERY, VISION, rope(rotary, longer)))
    with pytest.raises(ValueError, match="position_embeddings"):
        attention_importance(attn, h, QUERY, VISION)


def test_inputs_of_other_dtypes_give_float32(mixer, qwen2):
    h = random_hidden()
    attn, rotary = qwen2
    score = attention_importance(attn, h.double(), QUERY, VISION, rope(rotary, h))
    check_distribution(score)
    check_distribution(mamba_importance(mixer, h.bfloat16(), QUERY, VISION, decay=True))


def test_scores_of_the_pre_normed_input_equal_those_of_the_normed_input(mixer, qwen2):
    """Stacks hand the scores a layer's input with its RMS pre-norm not yet applied (PreNormed), which the scores
    fold into their projections: the same scores as from the normed input, for attention with biases (Qwen2) and
    for Mamba-2 with and without decay."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    from hybridreduce.models.stack import PreNormed

    norm = Qwen2RMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(64, generator=torch.Generator().manual_seed(2)))
    h = 3 * random_hidden()
    pre = PreNormed(h, norm)
    with torch.no_grad():
        normed = norm(h)
    torch.testing.assert_close(pre.apply(), normed, rtol=0, atol=0)
    attn, rotary = qwen2
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None
    for query in (QUERY, QUERY[-1:]):
        torch.testing.assert_close(attention_importance(attn, pre, query, VISION, rope(rotary, h)),
                                   attention_importance(attn, normed, query, VISION, rope(rotary, h)))
        for decay in (False, True):
            torch.testing.assert_close(mamba_importance(mixer, pre, query, VISION, decay=decay),
                                       mamba_importance(mixer, normed, query, VISION, decay=decay))
    with pytest.raises(TypeError, match="RMSNorm"):
        PreNormed(h, torch.nn.LayerNorm(64))
