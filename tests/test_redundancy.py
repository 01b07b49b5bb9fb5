"""Pre-LLM redundancy reduction: EVS against transformers' own implementation, and the other registry methods."""

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import compute_retention_mask

from hybridreduce.dataset import SyntheticSpec, generate_sample
from hybridreduce.errors import ConfigError
from hybridreduce.redundancy import REGISTRY, TokenGrid, evs_retained_count, keep_mask
from hybridreduce.redundancy.grid import patchify
from hybridreduce.video import FrameSampling, decode_frames


def patch_grid(frames: np.ndarray, patch_size: int, dim: int, seed: int = 0) -> TokenGrid:
    """Tokens of decoded frames without a model: a fixed seeded linear patch embedding ``(x / 255 - 0.5) @ W``,
    ``W ~ N(0, 1 / fan_in)``, with the raw patches for the pixel-space methods."""
    pixels = patchify(frames, patch_size)
    weight = torch.randn(pixels.shape[-1], dim, generator=torch.Generator().manual_seed(seed)) / pixels.shape[-1] ** 0.5
    return TokenGrid(embeddings=(pixels / 255.0 - 0.5) @ weight, pixels=pixels)


def reference_evs_mask(embeddings: torch.Tensor, q: float) -> torch.Tensor:
    """transformers' nemotron_h_omni EVS on the same embeddings (no spatial merge), reshaped to (T, h, w)."""
    t, h, w, d = embeddings.shape
    flat = embeddings.reshape(t * h * w, d)
    return compute_retention_mask(video_embeds=flat, thw=(t, h, w), spatial_merge_size=1, q=q).view(t, h, w)


@pytest.fixture(scope="module")
def decoded_grid(tmp_path_factory) -> TokenGrid:
    """Tokens of a real synthetic benchmark video: mostly static, so many near-ties in dissimilarity."""
    path = tmp_path_factory.mktemp("evs") / "video.mp4"
    generate_sample(SyntheticSpec(num_videos=1, duration_s=8, fps=4), 0, str(path))
    frames = decode_frames(str(path), FrameSampling(num_frames=16, size=(112, 112))).frames
    return patch_grid(frames, 14, 32, seed=3)


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.75, 0.9, 0.99])
def test_evs_mask_equals_transformers_nemotron_h_omni(decoded_grid, q):
    ours = keep_mask("evs", decoded_grid, q)
    assert torch.equal(ours, reference_evs_mask(decoded_grid.embeddings, q))


@pytest.mark.parametrize("shape", [(1, 3, 5), (6, 4, 4), (9, 2, 7)])
def test_evs_mask_equals_reference_with_exact_ties(shape):
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(*shape, 8, generator=gen)
    e[2:4] = e[1:2]  # repeated frames: many dissimilarities are exactly 0, so tie-breaking matters
    grid = TokenGrid(embeddings=e)
    for q in (0.25, 0.6, 0.95):
        assert torch.equal(keep_mask("evs", grid, q), reference_evs_mask(e, q))


def test_evs_keeps_first_frame_and_the_count_formula(decoded_grid):
    t, h, w = decoded_grid.shape
    mask = keep_mask("evs", decoded_grid, 0.9)
    assert mask[0].all()
    assert int(mask.sum()) == max(h * w, int(t * h * w * 0.1)) == evs_retained_count(t, h, w, 0.9)


def test_evs_pixel_drops_static_patches_and_keeps_motion():
    frames = np.full((6, 56, 56, 3), 100, np.uint8)
    for t in range(6):  # a bright square moving right by one patch per frame along the top row of patches
        frames[t, 0:14, 14 * (t % 4) : 14 * (t % 4) + 14] = 250
    grid = patch_grid(frames, 14, 8)
    mask = keep_mask("evs_pixel", grid, 0.8)  # 70 of the 80 patch changes are static: at most 20% kept
    assert mask[0].all()
    for t in range(1, 6):
        moved = {t % 4, (t - 1) % 4}  # the patch it left and the patch it entered
        assert {int(j) for j in torch.nonzero(mask[t, 0]).flatten()} == moved
        assert not mask[t, 1:].any()


def test_evs_pixel_drops_the_q_quantile():
    gen = torch.Generator().manual_seed(1)
    pixels = torch.rand(10, 4, 4, 12, generator=gen) * 255
    grid = TokenGrid(embeddings=torch.zeros(10, 4, 4, 2), pixels=pixels)
    for q in (0.25, 0.5, 0.8):
        kept_after_first = keep_mask("evs_pixel", grid, q)[1:].float().mean().item()
        assert kept_after_first == pytest.approx(1 - q, abs=1 / (9 * 16))


def test_evs_pixel_drops_static_patches_even_when_most_are_static():
    frames = np.full((8, 56, 56, 3), 90, np.uint8)
    frames[4:, :14, :14] = 200  # one patch changes once; every other change is exactly 0
    mask = keep_mask("evs_pixel", patch_grid(frames, 14, 4), 0.5)
    assert mask[0].all()
    assert int(mask[1:].sum()) == 1 and bool(mask[4, 0, 0])
    assert keep_mask("evs_pixel", patch_grid(frames, 14, 4), 0.0).all()


def test_evs_pixel_refuses_tokens_without_pixels():
    with pytest.raises(ConfigError, match="evs_pixel"):
        keep_mask("evs_pixel", TokenGrid(embeddings=torch.zeros(2, 2, 2, 4)), 0.5)


@pytest.mark.parametrize("method", ["random", "uniform", "divprune"])
def test_controls_keep_exactly_evs_count(decoded_grid, method):
    t, h, w = decoded_grid.shape
    for q in (0.5, 0.8):
        assert int(keep_mask(method, decoded_grid, q, seed=5).sum()) == evs_retained_count(t, h, w, q)


def test_random_is_seeded_and_uniform_is_evenly_spaced(decoded_grid):
    a = keep_mask("random", decoded_grid, 0.5, seed=1)
    assert torch.equal(a, keep_mask("random", decoded_grid, 0.5, seed=1))
    assert not torch.equal(a, keep_mask("random", decoded_grid, 0.5, seed=2))
    kept = torch.nonzero(keep_mask("uniform", decoded_grid, 0.75).flatten()).flatten()
    gaps = torch.diff(kept)
    assert int(gaps.max()) - int(gaps.min()) <= 1


def reference_divprune(embeddings: torch.Tensor, k: int) -> set[int]:
    """DivPrune's greedy max-min diversity selection as its paper states it, on the full distance matrix with
    plain loops: first the token whose nearest other token is farthest, then repeatedly the unselected token whose
    nearest selected token is farthest (first index on ties)."""
    x = embeddings.reshape(-1, embeddings.shape[-1]).double()
    x = x / x.norm(dim=-1, keepdim=True)
    dist = (1 - x @ x.T).tolist()
    n = len(dist)
    nearest = [min(dist[i][j] for j in range(n) if j != i) for i in range(n)]
    selected = [max(range(n), key=lambda i: (nearest[i], -i))]
    while len(selected) < k:
        rest = [i for i in range(n) if i not in selected]
        selected.append(max(rest, key=lambda i: (min(dist[i][j] for j in selected), -i)))
    return set(selected)


@pytest.mark.parametrize("shape,q", [((4, 3, 3), 0.5), ((6, 2, 2), 0.75), ((3, 4, 2), 0.3)])
def test_divprune_keeps_the_greedy_max_min_diverse_set(shape, q):
    gen = torch.Generator().manual_seed(sum(shape))
    grid = TokenGrid(embeddings=torch.randn(*shape, 8, generator=gen))
    kept = set(torch.nonzero(keep_mask("divprune", grid, q).flatten()).flatten().tolist())
    assert kept == reference_divprune(grid.embeddings, evs_retained_count(*shape, q))


def test_divprune_keeps_one_copy_of_every_group_before_any_second_copy():
    # 4 distinct directions, each repeated 4 times in a (4, 2, 2) grid: the max-min set of 4 has one of each
    directions = torch.eye(6)[:4]
    grid = TokenGrid(embeddings=directions.repeat(4, 1).reshape(4, 2, 2, 6))
    kept = keep_mask("divprune", grid, 0.75).flatten()  # EVS's count: max(4, int(16 * 0.25)) = 4
    assert int(kept.sum()) == 4
    assert sorted(int(i) % 4 for i in torch.nonzero(kept).flatten()) == [0, 1, 2, 3]


@pytest.mark.parametrize("t,q,groups", [(8, 0.75, [[0, 1, 2, 3], [4, 5, 6, 7]]), (5, 0.5, [[0, 1], [2, 3], [4]]),
                                        (8, 0.5, [[0, 1], [2, 3], [4, 5], [6, 7]]), (4, 0.9, [[0, 1, 2, 3]])])
def test_pool_averages_contiguous_frame_groups_into_their_first_frame(t, q, groups):
    from hybridreduce.redundancy import reduce_grid

    grid = TokenGrid(embeddings=torch.randn(t, 2, 3, 4, generator=torch.Generator().manual_seed(t)))
    pooled, keep = reduce_grid("pool", grid, q)
    assert [int(f) for f in torch.nonzero(keep.any(dim=(1, 2))).flatten()] == [g[0] for g in groups]
    assert bool(keep[[g[0] for g in groups]].all())  # every position of a kept frame
    for g in groups:
        assert torch.allclose(pooled.embeddings[g[0]], grid.embeddings[g].mean(dim=0))


def test_unknown_method_is_a_config_error(decoded_grid):
    with pytest.raises(ConfigError, match="unknown method 'fastevs' \\(known: cdpruner, dart_embed, divprune, "
                       "dycoke_ttm, evs, evs_pixel, fastvid, pool, prunevid, random, uniform\\)"):
        keep_mask("fastevs", decoded_grid, 0.5)


def test_schema_lists_exactly_the_registered_methods():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    allowed = schema["properties"]["redundancy"]["properties"]["methods"]["items"]["enum"]
    assert sorted(allowed) == sorted(REGISTRY)
