"""Probing stage (layer-wise sparsity, cross-layer stability, retention probes): pure analysis functions."""

from .analysis import (
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

__all__ = [
    "bootstrap_retention",
    "gini",
    "mass_fraction",
    "normalised_entropy",
    "pca_targets",
    "probe_accuracy",
    "probe_r2",
    "retention",
    "sparsity_summary",
    "spearman",
    "split_indices",
    "stability_summary",
    "topk_jaccard",
]
