"""The pruning methods that inference runtimes ship (issue 29), against references written from the papers'
algorithms: CDPruner's conditional DPP (Zhang et al., NeurIPS 2025) with greedy MAP selection (Chen et al., 2018),
and DART's pivot-and-least-similar selection (Wen et al., 2025)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import yaml

from hybridreduce.errors import ConfigError
from hybridreduce.redundancy import TokenGrid, mask_arrays
from hybridreduce.redundancy.methods import dart_select, evs_retained_count
from test_reduction import tiny_adapter  # noqa: F401 (a fixture: both tiny model kinds)


def paper_kernel(v: np.ndarray, text: np.ndarray, theta: float) -> np.ndarray:
    """CDPruner's conditional kernel as its paper and code define it, in numpy: cosine similarity of the vision
    tokens, relevance = min-max normalised negated mean cosine to the instruction's tokens, exp(theta / (2 (1 -
    theta)) r) for theta < 1, L = diag(r) S diag(r)."""
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    tn = text / np.linalg.norm(text, axis=1, keepdims=True)
    r = -(vn @ tn.T).mean(axis=1)
    r = (r - r.min()) / (r.max() - r.min() + 1e-6)
    if theta < 1:
        r = np.exp(theta / (2 * (1 - theta)) * r)
    return r[:, None] * (vn @ vn.T) * r[None, :]


def greedy_by_determinants(kernel: np.ndarray, k: int) -> list[int]:
    """Greedy MAP as defined: each step adds the item that maximises det(L_S) (computed outright), lowest index on
    ties."""
    chosen: list[int] = []
    for _ in range(k):
        best, best_det = None, -np.inf
        for j in range(len(kernel)):
            if j in chosen:
                continue
            det = np.linalg.det(kernel[np.ix_(chosen + [j], chosen + [j])])
            if det > best_det + 1e-12:
                best, best_det = j, det
        chosen.append(best)
    return chosen


def best_subset(kernel: np.ndarray, k: int) -> set[int]:
    """The subset of size k with the largest determinant, by enumerating every subset."""
    return set(max(itertools.combinations(range(len(kernel)), k),
                   key=lambda s: np.linalg.det(kernel[np.ix_(s, s)])))


def grid_of(tokens: np.ndarray, text: np.ndarray, frames: int) -> TokenGrid:
    n, d = tokens.shape
    return TokenGrid(embeddings=torch.tensor(tokens, dtype=torch.float32).reshape(frames, 1, n // frames, d),
                     query=torch.tensor(text, dtype=torch.float32))


def kept(grid: TokenGrid, method: str, q: float, **options) -> set[int]:
    arrays, row = mask_arrays(method, grid, q, options=options)
    assert row["tokens_kept"] == evs_retained_count(*grid.shape, q)  # the same retention as EVS
    return set(np.flatnonzero(arrays["keep"].reshape(-1)).tolist())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("theta", [0.0, 0.5, 1.0])
def test_cdpruner_is_the_greedy_map_of_the_papers_conditional_kernel(seed, theta):
    rng = np.random.default_rng(seed)
    tokens, text = rng.normal(size=(10, 6)), rng.normal(size=(3, 6))
    grid = grid_of(tokens, text, frames=5)  # 5 frames of 2 tokens
    for q in (0.2, 0.5, 0.7):
        k = evs_retained_count(*grid.shape, q)
        assert kept(grid, "cdpruner", q, relevance_weight=theta) == set(
            greedy_by_determinants(paper_kernel(tokens, text, theta), k))


def test_cdpruner_finds_the_most_diverse_subset_where_the_tokens_form_clusters():
    # four well-separated directions, each a cluster of 2-3 noisy copies: the brute-force best 4-subset takes one
    # token of every cluster, and so does the greedy selection, at (nearly) the same determinant
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:4] * 3
    tokens = np.concatenate([centres[c] + 0.05 * rng.normal(size=(m, 8)) for c, m in enumerate((3, 2, 3, 2))])
    text = rng.normal(size=(2, 8))
    grid = grid_of(tokens, text, frames=5)
    cluster = np.repeat(np.arange(4), (3, 2, 3, 2))
    for theta in (0.0, 0.5):
        selected = sorted(kept(grid, "cdpruner", 0.6, relevance_weight=theta))  # keeps 4 of 10
        kernel = paper_kernel(tokens, text, theta)
        best = sorted(best_subset(kernel, 4))
        assert sorted(cluster[selected]) == sorted(cluster[best]) == [0, 1, 2, 3]
        det = np.linalg.det
        assert det(kernel[np.ix_(selected, selected)]) >= 0.98 * det(kernel[np.ix_(best, best)])


def test_cdpruner_without_relevance_is_the_unconditioned_dpp_and_keeps_one_copy_of_each_group_first():
    rng = np.random.default_rng(1)
    tokens, text = rng.normal(size=(10, 5)), rng.normal(size=(4, 5))
    grid = grid_of(tokens, text, frames=5)
    vn = tokens / np.linalg.norm(tokens, axis=1, keepdims=True)
    # relevance off (theta = 0): the question does not matter, the kernel is the plain similarity
    assert kept(grid, "cdpruner", 0.5, relevance_weight=0.0) == set(greedy_by_determinants(vn @ vn.T, 5))
    other = grid_of(tokens, rng.normal(size=(2, 5)), frames=5)
    assert kept(other, "cdpruner", 0.5, relevance_weight=0.0) == kept(grid, "cdpruner", 0.5, relevance_weight=0.0)
    # three groups of identical copies (4 + 3 + 3): the first three picks are one copy of each group
    base = rng.normal(size=(3, 5))
    copies = base[np.repeat(np.arange(3), (4, 3, 3))]
    group = np.repeat(np.arange(3), (4, 3, 3))
    grid = grid_of(copies, text, frames=5)
    for theta in (0.0, 0.5):
        three = kept(grid, "cdpruner", 0.7, relevance_weight=theta)  # 3 of 10
        assert sorted(group[list(three)]) == [0, 1, 2]
        assert set(group[list(kept(grid, "cdpruner", 0.6, relevance_weight=theta))]) == {0, 1, 2}  # 4 of 10


def test_cdpruner_refuses_a_relevance_weight_outside_the_unit_interval_and_a_grid_without_question():
    grid = grid_of(np.eye(4), np.ones((1, 4)), frames=2)
    with pytest.raises(ConfigError, match=r"redundancy.cdpruner.relevance_weight: 1.5 is not in \[0, 1\]"):
        mask_arrays("cdpruner", grid, 0.5, options={"relevance_weight": 1.5})
    with pytest.raises(ConfigError, match="conditioned on the question"):
        mask_arrays("cdpruner", TokenGrid(embeddings=grid.embeddings), 0.5)


def dart_reference(tokens: np.ndarray, text: np.ndarray, k: int, n_image: int, n_text: int) -> set[int]:
    """DART as its paper describes it, in plain Python: pivots by L1 norm (vision and text), then each pivot takes
    its share of the not yet chosen vision tokens with the lowest cosine similarity to it (the remainder, one each,
    to the last pivots)."""
    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    l1 = np.abs(tokens).sum(1)
    image = sorted(range(len(tokens)), key=lambda i: (-l1[i], i))[:n_image]
    texts = sorted(range(len(text)), key=lambda i: (-np.abs(text[i]).sum(), i))[:n_text]
    pivots = [tokens[i] for i in image] + [text[i] for i in texts]
    chosen = set(image)
    share, extra = divmod(k - n_image, len(pivots))
    for p, pivot in enumerate(pivots):
        take = share + (p >= len(pivots) - extra)
        free = sorted((i for i in range(len(tokens)) if i not in chosen), key=lambda i: (cos(tokens[i], pivot), i))
        chosen.update(free[:take])
    return chosen


def test_dart_keeps_the_tokens_that_duplicate_no_pivot():
    # hand-built: one strong token (the pivot) and its weaker copies, and three directions nobody else shares;
    # with 4 kept and one pivot, DART keeps the pivot and the three tokens least like it, never a copy
    pivot = np.array([4.0, 0, 0, 0])
    copies = [np.array([1.0, 0, 0, 0]), np.array([0.9, 0.05, 0, 0]), np.array([1.1, 0, 0.05, 0])]
    others = [np.array([0, 1.0, 0, 0]), np.array([0, 0, 1.0, 0]), np.array([0, 0, 0, 1.0])]
    tokens = np.stack([copies[0], pivot, others[0], copies[1], others[1], copies[2], others[2], copies[0]])
    keep = dart_select(torch.tensor(tokens), torch.zeros(0, 4), k=4, image_pivots=1, text_pivots=0)
    assert set(torch.nonzero(keep).view(-1).tolist()) == {1, 2, 4, 6}


@pytest.mark.parametrize("seed", range(8))
def test_dart_embed_is_the_papers_selection_with_the_question_tokens_as_text_pivots(seed):
    rng = np.random.default_rng(seed)
    tokens, text = rng.normal(size=(24, 6)), rng.normal(size=(5, 6))
    grid = grid_of(tokens, text, frames=6)
    for q, (n_image, n_text) in itertools.product((0.5, 0.75), ((4, 4), (2, 1), (3, 0))):
        k = evs_retained_count(*grid.shape, q)
        assert kept(grid, "dart_embed", q, image_pivots=n_image, text_pivots=n_text) == dart_reference(
            tokens, text, k, n_image, n_text)


def test_dart_refuses_more_pivots_than_kept_tokens():
    grid = grid_of(np.random.default_rng(0).normal(size=(8, 4)), np.ones((2, 4)), frames=4)
    with pytest.raises(ConfigError, match=r"redundancy.dart_embed.image_pivots: 6 vision pivots, but dart_embed keeps "
                                          r"only 2 tokens at q = 0.75 on this model's 4 x 1 x 2 token grid"):
        mask_arrays("dart_embed", grid, 0.75, options={"image_pivots": 6})
    with pytest.raises(ConfigError, match="6 vision pivots for 2 kept tokens"):  # the selection itself, as in-LLM
        dart_select(torch.zeros(8, 4), torch.ones(2, 4), k=2, image_pivots=6, text_pivots=0)


def test_in_llm_dart_keeps_the_papers_selection_on_the_states_entering_its_layer(tiny_adapter):
    tiny_model = tiny_adapter
    from hybridreduce.reduction.engine import prefill
    from hybridreduce.reduction.methods import plan

    frames = np.random.default_rng(3).integers(0, 255, (8, 56, 56, 3), dtype=np.uint8)
    prompt = tiny_model.build_prompt(tiny_model.encode_video(frames), None, "How many circles appeared?",
                                     ["1", "2", "3", "4"])
    layout, stack = prompt.layout, tiny_model.stack
    schedule, scorer = plan("dart", stack.layer_types, 0.5, len(layout.vision_idx), {"fastv_layer": 2})
    (layer,), (k,) = schedule.stage_layers, schedule.keep_counts
    seen = {}

    def observe(i, hidden, ctx, state):  # the unreduced input of every layer before the stage
        if i == layer and i not in seen:
            seen[i] = stack.mixer_input(i, hidden)[1].apply()[0].float().numpy()

    prefill(stack, prompt.embeds, layout, observer=observe)
    states = seen[layer]
    expected = dart_reference(states[layout.vision_idx.numpy()], states[layout.query_idx.numpy()], k, 4, 4)
    result = prefill(stack, prompt.embeds, layout, schedule, scorer)
    assert sorted(result.stage_keep[layer].tolist()) == sorted(int(layout.vision_idx[i]) for i in expected)


@pytest.mark.parametrize("section, value, field", [
    ({"cdpruner": {"relevance_weight": 1.5}}, "1.5", "redundancy.cdpruner.relevance_weight"),
    ({"cdpruner": {"relevance_weight": -0.1}}, "-0.1", "redundancy.cdpruner.relevance_weight"),
    ({"dart_embed": {"image_pivots": 0}}, "0", "redundancy.dart_embed.image_pivots"),
    ({"q": [1.0]}, "1.0", "redundancy.q"),  # q = 1 would keep no token
])
def test_bad_runtime_method_settings_are_rejected_at_config_validation(tmp_path, section, value, field):
    from conftest import REPO

    from hybridreduce.config import load_config

    overlay = tmp_path / "bad.yaml"
    overlay.write_text(yaml.safe_dump({"redundancy": section}))
    with pytest.raises(ConfigError) as e:
        load_config(str(REPO), str(overlay))
    assert field in str(e.value) and value in str(e.value), str(e.value)
