"""FastV and PDrop as their authors run them, against references written from the official algorithms.

The references use the transformers model's own eager attention (``output_attentions=True``, or the attention
weights each Qwen2 attention module returns), never our scoring code:
- FastV: the kept image tokens are the top-k of layer K-1's attention, mean over heads, in the last token's row;
  layers from K on see only them.
- PyramidDrop: at each stage layer l, the layer before it (the last of the previous stage) has run on the tokens
  present; its last-instruction-token attention, mean over heads, ranks the image tokens; the top-k go on.
"""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from hybridreduce.models import stack_for
from hybridreduce.reduction.engine import PromptLayout, prefill
from hybridreduce.reduction.methods import plan


def qwen2(num_layers: int, seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=64, hidden_size=64, num_hidden_layers=num_layers, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, attn_implementation="eager")
    return Qwen2ForCausalLM(cfg).eval()


def prompt(model, num_prefix: int, num_vision: int, num_query: int, seed: int):
    """Random ``[prefix][V][Q]`` embeddings ``(1, L, D)`` and their layout."""
    length = num_prefix + num_vision + num_query
    ids = torch.randint(0, 64, (1, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids) + 0.5 * torch.randn(
            1, length, 64, generator=torch.Generator().manual_seed(seed + 1))
    layout = PromptLayout(vision_idx=torch.arange(num_prefix, num_prefix + num_vision),
                          query_idx=torch.arange(num_prefix + num_vision, length))
    return embeds, layout


def top_image_tokens(weights: torch.Tensor, image: torch.Tensor, k: int) -> torch.Tensor:
    """Official rule: mean over heads of the last row of ``weights`` ``(1, H, n, n)``, top ``k`` of the image
    positions ``image`` (positions in the current sequence), returned sorted."""
    last_row = weights[0].mean(0)[-1]
    return image[torch.topk(last_row[image], k).indices].sort().values


def fastv_reference(model, embeds, layout, K: int, k: int) -> torch.Tensor:
    with torch.no_grad():
        attentions = model(inputs_embeds=embeds, output_attentions=True).attentions
    return top_image_tokens(attentions[K - 1], layout.vision_idx, k)


def pdrop_reference(model, embeds, layout, stages: dict[int, int]) -> dict[int, torch.Tensor]:
    """Runs the decoder layer by layer as PyramidDrop's code does and returns, per stage layer, the input indices of
    the image tokens kept there. Each layer's attention weights come from the transformers module itself."""
    captured = {}
    hooks = [layer.self_attn.register_forward_hook(lambda m, a, out, j=j: captured.__setitem__(j, out[1]))
             for j, layer in enumerate(model.model.layers)]
    index = torch.arange(embeds.shape[1])  # input index of each present token
    is_image = torch.zeros(embeds.shape[1], dtype=torch.bool)
    is_image[layout.vision_idx] = True
    hidden, kept = embeds, {}
    try:
        with torch.no_grad():
            for j, layer in enumerate(model.model.layers):
                if j in stages:
                    image = torch.nonzero(is_image[index]).view(-1)
                    top = top_image_tokens(captured[j - 1], image, stages[j])
                    select = torch.cat([torch.nonzero(~is_image[index]).view(-1), top]).sort().values
                    hidden, index = hidden[:, select], index[select]
                    kept[j] = index[is_image[index]]
                n = hidden.shape[1]
                mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
                rotary = model.model.rotary_emb(hidden, index[None])
                hidden = layer(hidden, attention_mask=mask, position_ids=index[None], position_embeddings=rotary)
    finally:
        for hook in hooks:
            hook.remove()
    return kept


@pytest.mark.parametrize(("num_layers", "K", "budget", "num_vision", "num_query"),
                         [(8, 2, 0.6, 64, 6), (8, 3, 0.5, 100, 9), (16, 2, 0.3, 150, 12), (6, 1, 0.7, 40, 3)])
def test_fastv_keeps_the_top_tokens_of_layer_k_minus_1_last_token_attention(num_layers, K, budget, num_vision,
                                                                            num_query):
    model = qwen2(num_layers, seed=K)
    embeds, layout = prompt(model, 4, num_vision, num_query, seed=num_vision)
    stack = stack_for(model)
    schedule, scorer = plan("fastv", stack.layer_types, budget, num_vision, {"fastv_layer": K, "min_layer_share": 0})
    assert schedule.stage_layers == (K,) and schedule.ranking_layers == (K - 1,)
    k = schedule.keep_counts[0]
    assert 0 < k < num_vision
    out = prefill(stack, embeds, layout, schedule, scorer)
    assert torch.equal(out.stage_keep[K], fastv_reference(model, embeds, layout, K, k))
    assert out.vision_per_layer == [num_vision] * K + [k] * (num_layers - K)


@pytest.mark.parametrize(("num_layers", "budget", "num_vision", "num_query"),
                         [(8, 0.5, 64, 6), (12, 0.4, 120, 10), (16, 0.6, 90, 4)])
def test_pdrop_keeps_at_every_stage_what_the_official_rule_keeps(num_layers, budget, num_vision, num_query):
    model = qwen2(num_layers, seed=num_layers)
    embeds, layout = prompt(model, 3, num_vision, num_query, seed=num_layers + num_vision)
    stack = stack_for(model)
    schedule, scorer = plan("pdrop", stack.layer_types, budget, num_vision, {"min_layer_share": 0})
    # the official layer_list [8, 16, 24] of 32 layers: stages at 1/4, 1/2, 3/4 of the depth, each ranked by the
    # layer before it
    assert schedule.stage_layers == tuple(round(f * num_layers) for f in (0.25, 0.5, 0.75))
    assert schedule.ranking_layers == tuple(layer - 1 for layer in schedule.stage_layers)
    out = prefill(stack, embeds, layout, schedule, scorer)
    reference = pdrop_reference(model, embeds, layout, dict(zip(schedule.stage_layers, schedule.keep_counts)))
    for layer in schedule.stage_layers:
        assert torch.equal(out.stage_keep[layer], reference[layer]), layer


def test_reference_rule_differs_from_ranking_at_the_stage_layer():
    """The two conventions keep different sets here, so the tests above can tell them apart."""
    model = qwen2(8, seed=2)
    embeds, layout = prompt(model, 4, 100, 9, seed=100)
    stack = stack_for(model)
    schedule, scorer = plan("fastv", stack.layer_types, 0.5, 100, {"fastv_layer": 3, "min_layer_share": 0})
    own_layer = fastv_reference(model, embeds, layout, 4, schedule.keep_counts[0])  # layer 3's own attention
    assert not torch.equal(prefill(stack, embeds, layout, schedule, scorer).stage_keep[3], own_layer)


def test_on_a_hybrid_the_layer_before_an_mlp_stage_boundary_is_the_nearest_earlier_scoring_layer():
    types = ["mamba", "mlp", "mamba", "mlp", "mamba", "attention", "mlp", "mamba", "mlp", "mamba", "mlp", "mamba",
             "attention", "mlp", "mamba", "mlp"]
    schedule, _ = plan("pdrop", types, 0.5, 1024, {"min_layer_share": 0})
    assert schedule.stage_layers == (4, 9, 12)
    assert schedule.ranking_layers == (2, 7, 11)
    fastv, _ = plan("fastv", types, 0.5, 1024, {"fastv_layer": 0.0625, "min_layer_share": 0})
    assert fastv.stage_layers == (2,) and fastv.ranking_layers == (0,)
    ours, _ = plan("hybrid_progressive", types, 0.5, 1024, {"min_layer_share": 0})
    assert ours.ranking_layers == ours.stage_layers
