"""Probing-stage analysis: how concentrated per-layer token importance is, how stable it is across layers, and how
much of the discarded tokens' information a layer's representation retains (linear probes across samples).

Pure functions over numpy arrays (numpy, scipy, scikit-learn); no I/O, no torch.

Shapes used throughout:

* an importance vector ``p`` is ``(N,)`` over the ``N`` vision tokens of one sample: non-negative and finite. It
  is meant to sum to 1; the metrics rescale it by its sum, so any positive scale gives the same result.
* one sample's maps are ``(num_layers, N)``: one importance vector per scoring layer. ``N`` may differ between
  samples, ``num_layers`` may not.
* probe features ``X`` are ``(n_samples, d)``; continuous targets ``Y`` are ``(n_samples, k)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import entr
from scipy.stats import rankdata, spearmanr
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

RngLike = np.random.Generator | int | None

#: Fraction of the total importance that ``mass90`` asks for.
MASS = 0.9
#: Metric names in the rows of :func:`sparsity_summary`, in order.
METRICS = ("mass90", "gini", "entropy")
#: Ridge penalties searched by :func:`probe_r2`; the large end lets an uninformative representation shrink to
#: the training mean instead of overfitting noise (which would push the floor far below 0).
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 17))
#: A retention denominator (ceiling - floor) below this is treated as "no gap to measure against".
MIN_GAP = 1e-6
# Cumulative sums of a uniform vector land a few ulp either side of k/N; without slack, uniform 0.9 could need one
# token more than ceil(0.9 N).
_MASS_EPS = 1e-9


# --------------------------------------------------------------------------------------------------- validation


def _importance_rows(maps: np.ndarray, what: str = "importance maps") -> np.ndarray:
    """Check a ``(num_layers, N)`` array of importance vectors and return it as float64 rows that sum to 1."""
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{what} must be 2-D (num_layers, N); got shape {m.shape}")
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"{what} must be non-empty; got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{what} contain NaN or infinite entries")
    if (m < 0).any():
        raise ValueError(f"{what} contain negative entries (min {m.min():.3g}); importance must be non-negative")
    totals = m.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError(f"{what} contain an all-zero row; an importance vector needs a positive total")
    return m / totals


def _importance_vector(p: np.ndarray) -> np.ndarray:
    """Check one ``(N,)`` importance vector and return it as a ``(1, N)`` row that sums to 1."""
    v = np.asarray(p, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"importance vector must be 1-D (N,); got shape {v.shape}")
    return _importance_rows(v[None, :], what="importance vector")


def _vector_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two finite 1-D vectors of the same, non-zero length."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"vectors must be 1-D (N,); got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"vectors must have the same length; got {a.shape[0]} and {b.shape[0]}")
    if a.size == 0:
        raise ValueError("vectors must be non-empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("vectors contain NaN or infinite entries")
    return a, b


def _check_frac(frac: float, name: str = "frac") -> None:
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"{name} must be in (0, 1]; got {frac}")


def _sample_maps(maps: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate a list over samples of ``(num_layers, N_sample)`` maps that agree on ``num_layers``."""
    if len(maps) == 0:
        raise ValueError("maps must hold at least one sample")
    rows = [_importance_rows(m, what=f"maps[{i}]") for i, m in enumerate(maps)]
    layers = {r.shape[0] for r in rows}
    if len(layers) > 1:
        raise ValueError(f"every sample must have the same number of layers; got {sorted(layers)}")
    return rows


# ---------------------------------------------------------------------------------------------- layer sparsity
# Row-wise kernels over ``(num_layers, N)`` rows that already sum to 1: the public per-vector functions and the
# per-sample summaries share them, so both always agree.


def _mass_fraction_rows(p: np.ndarray, mass: float) -> np.ndarray:
    n = p.shape[1]
    cum = np.cumsum(-np.sort(-p, axis=1), axis=1)
    # The full row sums to 1 (up to rounding, covered by the epsilon), so every row has a first hit.
    k = np.argmax(cum >= mass - _MASS_EPS, axis=1) + 1
    return k / n


def _gini_rows(p: np.ndarray) -> np.ndarray:
    # Sorted-ascending form of the Gini coefficient for shares summing to 1: sum_i (2i - N - 1) x_(i) / N.
    n = p.shape[1]
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    g = np.sort(p, axis=1) @ weights / n
    return np.clip(g, 0.0, 1.0)  # rounding can leave a uniform row a hair below 0


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    n = p.shape[1]
    if n == 1:  # log(1) = 0: a single token is fully concentrated by definition
        return np.zeros(p.shape[0])
    h = entr(p).sum(axis=1) / np.log(n)  # entr(0) = 0, so zero entries need no masking
    return np.clip(h, 0.0, 1.0)


def mass_fraction(p: np.ndarray, mass: float = MASS) -> float:
    """Smallest fraction ``k / N`` of tokens whose ``k`` largest entries hold at least ``mass`` of the total.

    ``p``: ``(N,)`` non-negative importance. One-hot gives ``1 / N``; uniform gives ``ceil(mass * N) / N``
    (a ``1e-9`` tolerance absorbs the rounding of cumulative sums).
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1]; got {mass}")
    return float(_mass_fraction_rows(_importance_vector(p), mass)[0])


def gini(p: np.ndarray) -> float:
    """Gini coefficient of the ``(N,)`` importance vector ``p``.

    0 for uniform importance. The maximum, reached by a one-hot vector, is ``(N - 1) / N`` (not exactly 1:
    this is the sample Gini without the ``N / (N - 1)`` correction), so it is near 1 only for large ``N``;
    ``N = 1`` gives 0.
    """
    return float(_gini_rows(_importance_vector(p))[0])


def normalised_entropy(p: np.ndarray) -> float:
    """Shannon entropy of the ``(N,)`` importance vector ``p`` divided by ``log N``, in ``[0, 1]``.

    1 for uniform, 0 for one-hot; ``N = 1`` is defined as 0 (no spread is possible).
    """
    return float(_entropy_rows(_importance_vector(p))[0])


def _sample_metrics(p: np.ndarray) -> np.ndarray:
    """``(num_layers, 3)`` metrics (order of :data:`METRICS`) for one sample's normalised maps."""
    return np.stack([_mass_fraction_rows(p, MASS), _gini_rows(p), _entropy_rows(p)], axis=1)


def _bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, ...)`` means of ``values`` (``(n_samples, ...)``) over samples drawn with replacement."""
    n = values.shape[0]
    # Multinomial counts = how often each sample is drawn; a weighted sum avoids materialising
    # (n_boot, n_samples, ...) resampled arrays.
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    return (counts @ values.reshape(n, -1) / n).reshape(n_boot, *values.shape[1:])


def sparsity_summary(
    maps: Sequence[np.ndarray], n_boot: int = 1000, ci: float = 0.95, rng: RngLike = 0
) -> list[dict]:
    """Per layer and metric: mean, std and a percentile-bootstrap CI over samples.

    ``maps``: list over samples of ``(num_layers, N_sample)`` importance maps (``N_sample`` may vary).
    Metrics: ``mass90`` (:func:`mass_fraction` at 0.9), ``gini``, ``entropy`` (:func:`normalised_entropy`).
    ``std`` is the sample std (``ddof=1``; 0 for one sample). The CI resamples samples with replacement
    ``n_boot`` times (the same draws for every layer and metric); a metric that is identical in every sample
    gets the degenerate interval ``[mean, mean]``.

    Returns one row per ``(layer, metric)``, layer-major: ``layer, metric, mean, std, ci_low, ci_high,
    n_samples``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1; got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    values = np.stack([_sample_metrics(p) for p in _sample_maps(maps)])  # (n_samples, num_layers, 3)
    n = values.shape[0]
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if n > 1 else np.zeros_like(mean)
    tail = 100.0 * (1.0 - ci) / 2.0
    low, high = np.percentile(_bootstrap_means(values, n_boot, np.random.default_rng(rng)),
                              [tail, 100.0 - tail], axis=0)
    # Weighted resample sums of a constant differ from its mean by rounding; that interval is exactly the point.
    constant = np.ptp(values, axis=0) == 0
    low, high = np.where(constant, mean, low), np.where(constant, mean, high)
    return [
        {"layer": layer, "metric": name, "mean": float(mean[layer, j]), "std": float(std[layer, j]),
         "ci_low": float(low[layer, j]), "ci_high": float(high[layer, j]), "n_samples": n}
        for layer in range(values.shape[1])
        for j, name in enumerate(METRICS)
    ]


# ------------------------------------------------------------------------------------------ evidence ranking


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC of ``scores`` ``(N,)`` for the ``positive`` ``(N,)`` bool tokens (Mann-Whitney U with ties
    counted half): the probability that a random evidence token outranks a random other one. NaN without both
    classes."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def recall_at_k(scores: np.ndarray, positive: np.ndarray, frac: float) -> float:
    """Fraction of the ``positive`` tokens among the top ``frac`` of ``scores`` (ties towards the lower index, as
    the reduction engine breaks them). NaN without positives."""
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        return float("nan")
    top = np.argsort(-np.asarray(scores), kind="stable")[: _top_k(len(scores), frac)]
    return float(positive[top].sum() / positive.sum())


def evidence_summary(scores: Sequence[np.ndarray], evidence: Sequence[np.ndarray], frac: float = 0.25,
                     n_boot: int = 1000, rng: RngLike = 0) -> dict:
    """Mean ROC-AUC (with a percentile-bootstrap 95% CI over samples) and mean recall@k of the evidence tokens
    under one score, over the samples that have evidence and other tokens. ``scores`` / ``evidence``: per sample,
    ``(N,)`` scores and ``(N,)`` bool evidence flags."""
    pairs = [(s, e) for s, e in zip(scores, evidence) if 0 < np.sum(e) < len(e)]
    if not pairs:
        return {"auc": None, "auc_low": None, "auc_high": None, "recall_at_k": None, "n_samples": 0}
    values = np.array([[roc_auc(s, e), recall_at_k(s, e, frac)] for s, e in pairs])  # (n, 2)
    low, high = np.percentile(_bootstrap_means(values[:, :1], n_boot, np.random.default_rng(rng)), [2.5, 97.5])
    return {"auc": float(values[:, 0].mean()), "auc_low": float(low), "auc_high": float(high),
            "recall_at_k": float(values[:, 1].mean()), "n_samples": len(pairs)}


# ------------------------------------------------------------------------------------------ cross-layer stability


def _top_k(n: int, frac: float) -> int:
    # Round half up (not Python's round-half-to-even) so e.g. N = 10, frac = 0.25 keeps 3 tokens, not 2.
    return min(n, max(1, int(np.floor(frac * n + 0.5))))


def _top_k_masks(rows: np.ndarray, k: int) -> np.ndarray:
    """``(num_layers, N)`` boolean masks of each row's ``k`` largest entries; ties go to the lower index."""
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    masks = np.zeros(rows.shape, dtype=bool)
    np.put_along_axis(masks, order, True, axis=1)
    return masks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two ``(N,)`` vectors (``scipy.stats.spearmanr``, average ranks for ties).

    Identical vectors give exactly 1.0. If either vector is constant its ranks carry no order, so the
    correlation is undefined and NaN is returned (also for ``N = 1``).
    """
    a, b = _vector_pair(a, b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    if np.array_equal(a, b):
        return 1.0
    return float(spearmanr(a, b).statistic)


def topk_jaccard(a: np.ndarray, b: np.ndarray, frac: float = 0.25) -> float:
    """Jaccard index of the top-``k`` index sets of two ``(N,)`` vectors, ``k = max(1, round(frac * N))``.

    Ties are broken deterministically: a stable sort on ``-value`` keeps the lower index first.
    """
    a, b = _vector_pair(a, b)
    _check_frac(frac)
    masks = _top_k_masks(np.stack([a, b]), _top_k(a.size, frac))
    return float((masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum())


def _spearman_matrix(rows: np.ndarray) -> np.ndarray:
    """``(num_layers, num_layers)`` Spearman correlations between rows, NaN where a row is constant.

    Pearson correlation of average ranks, which is what ``spearmanr`` computes, done for all pairs at once.
    """
    ranks = rankdata(rows, axis=1)
    centred = ranks - ranks.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred**2).sum(axis=1))
    constant = norms == 0  # average ranks of a constant row are all (N + 1) / 2: centred exactly to 0
    safe = np.where(constant, 1.0, norms)
    corr = np.clip(centred @ centred.T / np.outer(safe, safe), -1.0, 1.0)
    # Match spearman(): identical rank rows are exactly 1, not 1 - ulp.
    corr[(ranks[:, None, :] == ranks[None, :, :]).all(axis=2)] = 1.0
    corr[constant, :] = np.nan
    corr[:, constant] = np.nan
    return corr


def _jaccard_matrix(rows: np.ndarray, frac: float) -> np.ndarray:
    """``(num_layers, num_layers)`` top-k Jaccard between rows (all rows share ``k``)."""
    k = _top_k(rows.shape[1], frac)
    masks = _top_k_masks(rows, k).astype(np.int64)
    inter = masks @ masks.T
    return inter / (2 * k - inter)


def stability_summary(maps: Sequence[np.ndarray], frac: float = 0.25) -> list[dict]:
    """Cross-layer agreement of importance, averaged over samples, for every ordered layer pair.

    ``maps``: list over samples of ``(num_layers, N_sample)`` importance maps. For each pair ``(i, j)``
    (including ``i == j``) the mean over samples of :func:`spearman` and :func:`topk_jaccard` (``frac``).
    Spearman is NaN for constant maps, so it is averaged over finite values only; ``n_spearman`` counts them
    (NaN mean when there are none). Jaccard is always defined.

    Returns rows ``layer_a, layer_b, spearman, jaccard, n_samples, n_spearman``, ordered by ``(layer_a,
    layer_b)``.
    """
    _check_frac(frac)
    samples = _sample_maps(maps)
    rho = np.stack([_spearman_matrix(p) for p in samples])  # (n_samples, L, L)
    jac = np.stack([_jaccard_matrix(p, frac) for p in samples])
    finite = np.isfinite(rho)
    n_finite = finite.sum(axis=0)
    # Explicit nan-aware mean: np.nanmean would warn on all-NaN pairs, which are expected (constant maps).
    rho_sum = np.where(finite, rho, 0.0).sum(axis=0)
    rho_mean = np.divide(rho_sum, n_finite, out=np.full(rho_sum.shape, np.nan), where=n_finite > 0)
    jac_mean = jac.mean(axis=0)
    num_layers = rho.shape[1]
    return [
        {"layer_a": i, "layer_b": j, "spearman": float(rho_mean[i, j]), "jaccard": float(jac_mean[i, j]),
         "n_samples": len(samples), "n_spearman": int(n_finite[i, j])}
        for i in range(num_layers)
        for j in range(num_layers)
    ]


# ------------------------------------------------------------------------------------------------ retention probe


def _split(train_idx: np.ndarray, test_idx: np.ndarray, n: int, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a train/test split of ``n`` samples: integer, in range, disjoint, at least ``min_size`` each."""
    train, test = np.asarray(train_idx), np.asarray(test_idx)
    for name, idx in (("train_idx", train), ("test_idx", test)):
        if idx.ndim != 1:
            raise ValueError(f"{name} must be 1-D; got shape {idx.shape}")
        if idx.size < min_size:
            raise ValueError(f"{name} needs at least {min_size} samples; got {idx.size}")
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"{name} must hold integer indices; got dtype {idx.dtype}")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"{name} has indices outside [0, {n})")
    if np.intersect1d(train, test).size:
        raise ValueError("train_idx and test_idx overlap; held-out scores would leak training samples")
    return train, test


def _features(X: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"X must be 2-D (n_samples, d) with d >= 1; got shape {x.shape}")
    if x.shape[0] != n:
        raise ValueError(f"X has {x.shape[0]} rows but the targets have {n}")
    if not np.isfinite(x).all():
        raise ValueError("X contains NaN or infinite entries")
    return x


def probe_r2(
    X: np.ndarray, Y: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> float:
    """Held-out R² of a standardised ridge probe from ``X`` to ``Y``.

    ``X``: ``(n_samples, d)`` features; ``Y``: ``(n_samples, k)`` continuous targets (``(n_samples,)`` is read as
    ``k = 1``). ``RidgeCV`` (efficient leave-one-out over ``alphas``) is fitted on ``train_idx`` after a
    ``StandardScaler``; the score is ``r2_score(..., multioutput="variance_weighted")`` on ``test_idx``, so targets
    with more variance count more. Both splits need at least 2 samples (R² is undefined on one).
    """
    y = np.asarray(Y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[1] == 0:
        raise ValueError(f"Y must be 2-D (n_samples, k) with k >= 1; got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("Y contains NaN or infinite entries")
    x = _features(X, y.shape[0])
    train, test = _split(train_idx, test_idx, y.shape[0], min_size=2)
    if len(alphas) == 0 or min(alphas) <= 0:
        raise ValueError("alphas must be a non-empty sequence of positive penalties")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=tuple(alphas)))
    model.fit(x[train], y[train])
    return float(r2_score(y[test], model.predict(x[test]), multioutput="variance_weighted"))


def probe_accuracy(X: np.ndarray, y: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray) -> float:
    """Held-out accuracy of a standardised logistic-regression probe from ``X`` to class labels ``y``.

    ``X``: ``(n_samples, d)``; ``y``: ``(n_samples,)`` labels of any comparable type. Multinomial (sklearn's
    default for several classes), ``max_iter=5000``, ``random_state=0``. A train split holding a single class
    cannot fit a classifier, so that class is predicted for every test sample.
    """
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,); got shape {labels.shape}")
    x = _features(X, labels.shape[0])
    train, test = _split(train_idx, test_idx, labels.shape[0], min_size=1)
    classes = np.unique(labels[train])
    if classes.size == 1:
        pred = np.full(test.size, classes[0], dtype=labels.dtype)
    else:
        model = Pipeline([("scale", StandardScaler()),
                          ("logreg", LogisticRegression(max_iter=5000, random_state=0))])
        model.fit(x[train], labels[train])
        pred = model.predict(x[test])
    return float(np.mean(pred == labels[test]))


def pca_targets(Y_train: np.ndarray, Y_all: np.ndarray, n_components: int) -> np.ndarray:
    """PCA fitted on the training rows only, applied to all rows.

    ``Y_train``: ``(n_train, dim)``; ``Y_all``: ``(n_samples, dim)`` (e.g. the mean hidden state of each sample's
    discarded tokens). Returns ``(n_samples, c)`` with ``c = min(n_components, n_train - 1, dim)``: beyond
    ``n_train - 1`` components the training rows have no variance left to explain. Fitting on train only keeps
    the held-out rows out of the target definition.
    """
    train, full = np.asarray(Y_train, dtype=np.float64), np.asarray(Y_all, dtype=np.float64)
    if train.ndim != 2 or full.ndim != 2:
        raise ValueError(f"Y_train and Y_all must be 2-D (n, dim); got shapes {train.shape} and {full.shape}")
    if train.shape[1] != full.shape[1]:
        raise ValueError(f"Y_train and Y_all differ in dim: {train.shape[1]} vs {full.shape[1]}")
    if train.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 training rows; got {train.shape[0]}")
    if full.shape[0] == 0 or train.shape[1] == 0:
        raise ValueError("Y_all must have at least one row and dim >= 1")
    if n_components < 1:
        raise ValueError(f"n_components must be at least 1; got {n_components}")
    if not (np.isfinite(train).all() and np.isfinite(full).all()):
        raise ValueError("Y_train or Y_all contains NaN or infinite entries")
    c = min(n_components, train.shape[0] - 1, train.shape[1])
    return PCA(n_components=c, svd_solver="full").fit(train).transform(full)


def split_indices(n: int, test_frac: float = 0.2, rng: RngLike = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random held-out split of ``n`` samples: sorted ``(train_idx, test_idx)``.

    The test size is ``round(test_frac * n)`` clamped to ``[2, n - 2]`` so both sides can be scored with R²,
    hence ``n >= 4``.
    """
    if n < 4:
        raise ValueError(f"a held-out split needs at least 4 samples (2 train, 2 test); got n={n}")
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1); got {test_frac}")
    n_test = min(n - 2, max(2, round(test_frac * n)))
    order = np.random.default_rng(rng).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def retention(score_l: float, score_floor: float, score_ceiling: float) -> float:
    """Share of the floor-to-ceiling gap that a layer's probe score recovers: ``(l - floor) / (ceiling - floor)``.

    0 = no better than the uninformative floor, 1 = as good as the ceiling; values outside ``[0, 1]`` are kept.
    NaN when ``ceiling - floor < 1e-6`` (including a ceiling below the floor): without a gap there is nothing to
    retain, and dividing by a near-zero gap would turn noise into arbitrarily large retention.
    """
    gap = score_ceiling - score_floor
    if not np.isfinite(gap) or gap < MIN_GAP:
        return float("nan")
    return float((score_l - score_floor) / gap)


def bootstrap_retention(
    fit_fn: Callable[[np.ndarray, np.ndarray], tuple[float, float, float]],
    n: int, n_boot: int = 100, rng: RngLike = 0, test_frac: float = 0.2, ci: float = 0.95,
) -> dict:
    """Retention over ``n_boot`` random train/test resplits of ``n`` samples.

    ``fit_fn(train_idx, test_idx) -> (score_l, score_floor, score_ceiling)`` scores the layer, floor and
    ceiling probes on the same split. Each resplit comes from :func:`split_indices` with one generator made from
    ``rng``, so the result is deterministic given ``rng``. The interval is the percentile interval of the
    per-split retentions (it reflects split variability; samples are not resampled with replacement).

    Returns ``mean, ci_low, ci_high, n_boot_finite`` of the finite retentions (NaN when none are finite) and the
    mean raw scores ``score_l, score_floor, score_ceiling``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1; got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    gen = np.random.default_rng(rng)
    scores = np.array([fit_fn(*split_indices(n, test_frac, gen)) for _ in range(n_boot)], dtype=np.float64)
    if scores.shape != (n_boot, 3):
        raise ValueError("fit_fn must return (score_l, score_floor, score_ceiling)")
    ret = np.array([retention(*row) for row in scores])
    finite = ret[np.isfinite(ret)]
    tail = 100.0 * (1.0 - ci) / 2.0
    if finite.size:
        mean, (low, high) = float(finite.mean()), np.percentile(finite, [tail, 100.0 - tail])
    else:
        mean, low, high = (float("nan"),) * 3
    return {"mean": mean, "ci_low": float(low), "ci_high": float(high), "n_boot_finite": int(finite.size),
            "score_l": float(scores[:, 0].mean()), "score_floor": float(scores[:, 1].mean()),
            "score_ceiling": float(scores[:, 2].mean())}
