"""Probing-stage analysis on maps and representations whose answers are known by construction.

Sparsity: one-hot and uniform maps have closed-form metrics. Stability: identical maps agree perfectly, a reversed
map disagrees perfectly. Probes: a target planted linearly in a representation is recovered (retention near 1);
a representation drawn independently of the target recovers nothing (retention near 0).
"""

from __future__ import annotations

import numpy as np
import pytest

from hybridreduce.probing import (
    bootstrap_retention,
    gini,
    mass_fraction,
    normalised_entropy,
    pca_targets,
    probe_accuracy,
    probe_r2,
    retention,
    sparsity_summary,
    spearman,
    split_indices,
    stability_summary,
    topk_jaccard,
)


def one_hot(n: int, i: int = 3) -> np.ndarray:
    p = np.zeros(n)
    p[i] = 1.0
    return p


def uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def random_maps(rng: np.random.Generator, num_layers: int, n: int) -> np.ndarray:
    """``(num_layers, n)`` Dirichlet importance maps of varied concentration."""
    return np.stack([rng.dirichlet(np.full(n, a)) for a in np.geomspace(0.05, 5.0, num_layers)])


# ------------------------------------------------------------------------------------------------------ sparsity


@pytest.mark.parametrize("n", [1, 7, 10, 256])
def test_one_hot_is_maximally_concentrated(n):
    p = one_hot(n, i=n - 1)
    assert mass_fraction(p) == 1 / n
    assert gini(p) == pytest.approx((n - 1) / n, abs=1e-12)
    assert normalised_entropy(p) == 0.0


def test_one_hot_gini_is_near_one_for_many_tokens():
    assert gini(one_hot(256)) > 0.99


@pytest.mark.parametrize("n", [1, 7, 10, 20, 30, 256, 1000])
def test_uniform_is_maximally_spread(n):
    p = uniform(n)
    # Smallest integer k with k / n >= 0.9, in exact integer arithmetic.
    assert mass_fraction(p) == -(-9 * n // 10) / n
    assert gini(p) == pytest.approx(0.0, abs=1e-12)
    assert normalised_entropy(p) == pytest.approx(1.0 if n > 1 else 0.0, abs=1e-12)


def test_metrics_ignore_the_scale_of_the_vector():
    p = np.random.default_rng(0).dirichlet(np.ones(50))
    for metric in (mass_fraction, gini, normalised_entropy):
        assert metric(7.0 * p) == pytest.approx(metric(p), abs=1e-12)


def test_metrics_order_a_concentrated_map_before_a_spread_one():
    rng = np.random.default_rng(1)
    peaked, flat = rng.dirichlet(np.full(200, 0.05)), rng.dirichlet(np.full(200, 50.0))
    assert mass_fraction(peaked) < mass_fraction(flat)
    assert gini(peaked) > gini(flat)
    assert normalised_entropy(peaked) < normalised_entropy(flat)


def test_sparsity_summary_over_samples_of_varying_length():
    rng = np.random.default_rng(2)
    num_layers = 4
    maps = [random_maps(rng, num_layers, n) for n in (64, 100, 150, 81, 200, 49, 120, 90)]
    rows = sparsity_summary(maps, n_boot=500, rng=0)

    assert [(r["layer"], r["metric"]) for r in rows] == [
        (layer, m) for layer in range(num_layers) for m in ("mass90", "gini", "entropy")]
    for r in rows:
        assert r["n_samples"] == len(maps)
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
        assert r["ci_low"] < r["ci_high"]  # the metrics vary across samples
        assert r["std"] > 0
    # The mean is the plain mean of the per-vector metric over samples.
    gini_l0 = next(r for r in rows if r["layer"] == 0 and r["metric"] == "gini")
    assert gini_l0["mean"] == pytest.approx(np.mean([gini(m[0]) for m in maps]))
    # Layers were drawn from increasingly flat Dirichlets: entropy rises with the layer index.
    entropy = [r["mean"] for r in rows if r["metric"] == "entropy"]
    assert entropy == sorted(entropy)
    # Seeded: the same rng gives the same intervals.
    assert sparsity_summary(maps, n_boot=500, rng=0) == rows


def test_sparsity_summary_of_identical_samples_has_a_point_interval():
    maps = [np.stack([one_hot(256), uniform(256)])] * 5
    rows = {(r["layer"], r["metric"]): r for r in sparsity_summary(maps, n_boot=200, rng=0)}
    assert rows[0, "gini"]["mean"] == rows[0, "gini"]["ci_low"] == rows[0, "gini"]["ci_high"]
    assert rows[0, "gini"]["std"] == 0.0
    assert rows[0, "mass90"]["mean"] == 1 / 256
    assert rows[1, "mass90"]["mean"] == 231 / 256


# ----------------------------------------------------------------------------------------------------- stability


def test_identical_layers_agree_perfectly():
    rng = np.random.default_rng(3)
    maps = [np.tile(rng.dirichlet(np.ones(n)), (3, 1)) for n in (40, 64, 33)]
    rows = stability_summary(maps)
    assert len(rows) == 9  # every ordered pair, diagonal included
    for r in rows:
        assert r["spearman"] == 1.0
        assert r["jaccard"] == 1.0
        assert r["n_samples"] == r["n_spearman"] == 3


def test_reversed_layer_disagrees_perfectly():
    a = np.arange(1.0, 9.0)  # N = 8: top-25% is {6, 7}, the reversed map's is {0, 1}
    b = a[::-1].copy()
    assert spearman(a, b) == pytest.approx(-1.0, abs=1e-12)
    assert topk_jaccard(a, b) == 0.0
    rows = {(r["layer_a"], r["layer_b"]): r for r in stability_summary([np.stack([a, b])])}
    assert rows[0, 1]["spearman"] == pytest.approx(-1.0, abs=1e-12)
    assert rows[1, 0]["jaccard"] == 0.0
    assert rows[0, 0]["spearman"] == rows[1, 1]["jaccard"] == 1.0


def test_stability_summary_matches_the_pairwise_functions():
    rng = np.random.default_rng(4)
    maps = [random_maps(rng, 3, n) for n in (30, 47, 62)]
    rows = stability_summary(maps, frac=0.2)
    for r in rows:
        i, j = r["layer_a"], r["layer_b"]
        assert r["spearman"] == pytest.approx(np.mean([spearman(m[i], m[j]) for m in maps]), abs=1e-12)
        assert r["jaccard"] == pytest.approx(np.mean([topk_jaccard(m[i], m[j], 0.2) for m in maps]), abs=1e-12)


def test_constant_maps_are_left_out_of_the_spearman_mean():
    flat, ramp = uniform(10), np.arange(10.0) / 45.0
    assert np.isnan(spearman(flat, ramp))
    rows = {(r["layer_a"], r["layer_b"]): r
            for r in stability_summary([np.stack([flat, ramp]), np.stack([ramp, ramp])])}
    assert rows[0, 1]["n_spearman"] == 1 and rows[0, 1]["spearman"] == 1.0  # only the second sample counts
    assert rows[1, 1]["n_spearman"] == 2
    single = {(r["layer_a"], r["layer_b"]): r for r in stability_summary([np.stack([flat, ramp])])}
    assert single[0, 0]["n_spearman"] == 0 and np.isnan(single[0, 0]["spearman"])


def test_topk_ties_go_to_the_lower_index():
    flat = uniform(8)  # all tied: k = 2 picks indices {0, 1}
    assert topk_jaccard(flat, one_hot(8, i=0) + one_hot(8, i=1)) == 1.0
    assert topk_jaccard(flat, one_hot(8, i=6) + one_hot(8, i=7)) == 0.0
    # k = max(1, round(frac * N)): N = 10 keeps 3 (half rounds up): {7, 8, 9} vs {6, 7, 8} share 2 of 4 (k = 2: 1/3).
    assert topk_jaccard(np.arange(10.0), np.r_[np.arange(8.0), 100.0, -1.0]) == pytest.approx(2 / 4)


# -------------------------------------------------------------------------------------------------------- probes


def representations(rng: np.random.Generator, X: np.ndarray) -> dict[str, np.ndarray]:
    """``X`` itself (the ceiling), a rotated noisy copy of it (an informative layer) and two unrelated draws."""
    n, d = X.shape
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return {"X": X, "layer": X @ rotation + 0.01 * rng.normal(size=(n, d)),
            "floor": rng.normal(size=(n, d)), "unrelated": rng.normal(size=(n, d))}


@pytest.fixture(scope="module")
def planted():
    """A 4-dim continuous target planted linearly in ``X`` (200 samples, 16 features)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 16))
    return {"Y": X @ rng.normal(size=(16, 4)) + 0.01 * rng.normal(size=(200, 4)), **representations(rng, X)}


@pytest.fixture(scope="module")
def planted_classes():
    """A balanced 4-class attribute planted in ``X`` as overlapping class clusters (200 samples, 16 features)."""
    rng = np.random.default_rng(6)
    labels = rng.permutation(np.repeat(np.arange(4), 50))
    X = rng.normal(size=(200, 16)) + 0.6 * rng.normal(size=(4, 16))[labels]
    return {"labels": labels, **representations(rng, X)}


def test_planted_target_is_recovered(planted):
    train, test = split_indices(200, 0.25, rng=0)
    assert probe_r2(planted["X"], planted["Y"], train, test) > 0.99
    assert probe_r2(planted["unrelated"], planted["Y"], train, test) < 0.1


@pytest.mark.parametrize("layer, expected", [("layer", 1.0), ("unrelated", 0.0)])
def test_r2_retention(planted, layer, expected):
    def fit(train, test):
        return tuple(probe_r2(planted[k], planted["Y"], train, test) for k in (layer, "floor", "X"))

    out = bootstrap_retention(fit, 200, n_boot=5, rng=0, test_frac=0.25)
    assert out["n_boot_finite"] == 5
    assert out["mean"] == pytest.approx(expected, abs=0.05)
    assert out["ci_low"] <= out["mean"] <= out["ci_high"]
    assert out["score_ceiling"] > 0.99 and out["score_floor"] < 0.1


@pytest.mark.parametrize("layer, expected", [("layer", 1.0), ("unrelated", 0.0)])
def test_accuracy_retention(planted_classes, layer, expected):
    data = planted_classes

    def fit(train, test):
        return tuple(probe_accuracy(data[k], data["labels"], train, test) for k in (layer, "floor", "X"))

    out = bootstrap_retention(fit, 200, n_boot=5, rng=0, test_frac=0.5)
    assert out["score_ceiling"] > 0.7  # far above the 4-class chance level
    assert out["score_floor"] == pytest.approx(0.25, abs=0.1)
    assert out["mean"] == pytest.approx(expected, abs=0.2)


def test_bootstrap_retention_is_deterministic_given_rng(planted):
    def fit(train, test):
        return tuple(probe_r2(planted[k], planted["Y"], train, test) for k in ("unrelated", "floor", "X"))

    assert bootstrap_retention(fit, 200, n_boot=3, rng=7) == bootstrap_retention(fit, 200, n_boot=3, rng=7)


def test_single_class_train_split_predicts_that_class():
    X = np.random.default_rng(6).normal(size=(10, 3))
    y = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0])
    assert probe_accuracy(X, y, np.arange(6), np.arange(6, 10)) == 0.25


def test_pca_targets_fit_on_train_rows_only():
    rng = np.random.default_rng(8)
    Y = rng.normal(size=(30, 10)) + 5.0
    Y[20:] += 100.0  # held-out rows far away: they must not move the PCA centre
    Z = pca_targets(Y[:20], Y, n_components=4)
    assert Z.shape == (30, 4)
    np.testing.assert_allclose(Z[:20].mean(axis=0), 0.0, atol=1e-9)
    assert pca_targets(Y[:3], Y, n_components=5).shape == (30, 2)  # capped at n_train - 1
    assert pca_targets(Y[:20], Y, n_components=50).shape == (30, 10)  # capped at dim


def test_split_indices():
    train, test = split_indices(50, 0.2, rng=1)
    assert test.size == 10 and train.size == 40
    assert np.array_equal(np.sort(np.r_[train, test]), np.arange(50))
    again = split_indices(50, 0.2, rng=1)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    train, test = split_indices(4, 0.01, rng=0)
    assert train.size == 2 and test.size == 2  # both sides keep the two samples R² needs


def test_retention_arithmetic():
    assert retention(0.5, 0.0, 1.0) == 0.5
    assert retention(0.55, 0.25, 0.85) == pytest.approx(0.5)
    assert retention(0.9, 0.2, 0.8) == pytest.approx(7 / 6)  # not clipped: beating the ceiling is reported
    assert np.isnan(retention(0.5, 0.3, 0.3 + 1e-9))
    assert np.isnan(retention(0.5, 0.8, 0.2))  # ceiling below floor


# --------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [mass_fraction, gini, normalised_entropy])
@pytest.mark.parametrize("bad, message", [
    (np.array([0.5, -0.1, 0.6]), "negative"),
    (np.full((2, 3), 1 / 6), "1-D"),
    (np.array([]), "non-empty"),
    (np.array([0.5, np.nan]), "NaN"),
    (np.zeros(4), "all-zero"),
])
def test_bad_importance_vectors(fn, bad, message):
    with pytest.raises(ValueError, match=message):
        fn(bad)


def test_bad_summary_inputs():
    with pytest.raises(ValueError, match="at least one sample"):
        sparsity_summary([])
    with pytest.raises(ValueError, match="same number of layers"):
        stability_summary([np.full((2, 4), 0.25), np.full((3, 4), 0.25)])
    with pytest.raises(ValueError, match=r"maps\[1\].*negative"):
        sparsity_summary([np.full((2, 4), 0.25), np.array([[0.5, 0.5, -0.1, 0.1]] * 2)])
    with pytest.raises(ValueError, match="2-D"):
        sparsity_summary([uniform(4)])
    with pytest.raises(ValueError, match="frac"):
        stability_summary([np.full((2, 4), 0.25)], frac=0.0)


def test_bad_pairs_and_parameters():
    with pytest.raises(ValueError, match="same length"):
        spearman(np.arange(4.0), np.arange(5.0))
    with pytest.raises(ValueError, match="1-D"):
        topk_jaccard(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="mass"):
        mass_fraction(uniform(4), mass=1.5)


def test_bad_probe_inputs():
    X, Y = np.zeros((10, 2)), np.zeros((10, 1))
    with pytest.raises(ValueError, match="at least 4 samples"):
        split_indices(3, 0.5, rng=0)
    with pytest.raises(ValueError, match="overlap"):
        probe_r2(X, Y, np.arange(6), np.arange(5, 10))
    with pytest.raises(ValueError, match="rows"):
        probe_r2(X[:9], Y, np.arange(5), np.arange(5, 9))
    with pytest.raises(ValueError, match="outside"):
        probe_accuracy(X, np.zeros(10), np.arange(5), np.array([5, 12]))
    with pytest.raises(ValueError, match="at least 2 training rows"):
        pca_targets(Y[:1], Y, 1)
