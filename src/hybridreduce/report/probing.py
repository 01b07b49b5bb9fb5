"""The report's probing section (STUDY.md §4): figures, the numbers behind them, and computed verdicts on the
claims they test (§7 claims 1 and 3). Verdicts come from the DuckDB tables by the rules stated in ``RULES``;
nothing is hand-written."""

from __future__ import annotations

import duckdb

from .svg import heatmap, line_chart

QUERIES = {
    "sparsity": """
SELECT model, layer, layer_type, metric, round(mean, 4) AS mean, round(ci_low, 4) AS ci_low,
       round(ci_high, 4) AS ci_high, n_samples
FROM layer_sparsity WHERE score = 'decay_free' ORDER BY model, metric, layer""",
    "stability": """
SELECT model, round(avg(spearman), 4) AS mean_spearman, round(avg(jaccard), 4) AS mean_jaccard,
       count(*) AS layer_pairs
FROM layer_stability WHERE layer_a < layer_b GROUP BY model ORDER BY model""",
    "retention": """
SELECT model, target, layer, layer_type, round(mean, 3) AS retention, round(ci_low, 3) AS ci_low,
       round(ci_high, 3) AS ci_high, round(score_l, 3) AS score_l, round(score_floor, 3) AS floor,
       round(score_ceiling, 3) AS ceiling
FROM probe_retention ORDER BY model, target, layer""",
}

RULES = {
    "claim1": ("sparse: 90% of a layer's importance sits on under half of the vision tokens (mean mass90 over "
               "scoring layers < 0.5); unstable: mean Spearman ρ between different scoring layers < 0.5. "
               "Confirmed when both hold for every hybrid model."),
    "claim3": ("mean retention over the scoring layers after the first (where removal differs from removal at "
               "the input) is higher for every hybrid model than for every Transformer, for both probe targets."),
}


def _rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def probing_section(con: duckdb.DuckDBPyConnection, table) -> dict | None:
    """Figures, tables and verdicts, or None when the study has no probing results."""
    if _rows(con, "SELECT count(*) FROM layer_sparsity")[0][0] == 0:
        return None
    hybrids = {m for (m,) in _rows(con, "SELECT DISTINCT model FROM layer_sparsity WHERE layer_type = 'mamba'")}
    models = [m for (m,) in _rows(con, "SELECT DISTINCT model FROM layer_sparsity ORDER BY 1")]
    transformers = [m for m in models if m not in hybrids]

    sparsity: dict[str, list[tuple[float, float]]] = {}
    for model, layer, value in _rows(con, """SELECT model, layer, mean FROM layer_sparsity
                                           WHERE score = 'decay_free' AND metric = 'mass90' ORDER BY ALL"""):
        sparsity.setdefault(model, []).append((layer, value))
    heatmaps = []
    for model in models:
        layers = [r[0] for r in _rows(con, f"SELECT DISTINCT layer_a FROM layer_stability WHERE model = '{model}' "
                                           "ORDER BY 1")]
        pos = {layer: i for i, layer in enumerate(layers)}
        values = {(pos[a], pos[b]): rho for a, b, rho in _rows(
            con, f"SELECT layer_a, layer_b, spearman FROM layer_stability WHERE model = '{model}'")}
        labels = [f"L{layer}{'M' if t == 'mamba' else 'A'}" for layer, t in _rows(
            con, f"SELECT DISTINCT layer, layer_type FROM layer_sparsity WHERE model = '{model}' ORDER BY 1")]
        heatmaps.append(heatmap(labels, values, f"{model}: Spearman ρ between layers"))
    retention: dict[str, list[tuple[float, float]]] = {}
    for model, target, layer, value in _rows(con, "SELECT model, target, layer, mean FROM probe_retention "
                                                  "WHERE mean IS NOT NULL ORDER BY ALL"):
        retention.setdefault(f"{model} · {target}", []).append((layer, value))

    # claim 1
    mass = dict(_rows(con, "SELECT model, avg(mean) FROM layer_sparsity WHERE score = 'decay_free' AND "
                           "metric = 'mass90' GROUP BY model"))
    rho = dict(_rows(con, "SELECT model, avg(spearman) FROM layer_stability WHERE layer_a <> layer_b GROUP BY model"))
    if not hybrids:
        claim1 = "not measured in this study"
    else:
        claim1 = "confirmed" if all(mass[m] < 0.5 and rho.get(m, 1.0) < 0.5 for m in hybrids) else "not confirmed"
    finding1 = "; ".join(f"{m}: mean mass90 {mass[m]:.2f}, mean cross-layer ρ {rho.get(m, float('nan')):.2f}"
                         for m in models)
    # claim 3
    means = {(m, t): v for m, t, v in _rows(con, """
        SELECT r.model, r.target, avg(r.mean) FROM probe_retention r
        JOIN (SELECT model, min(layer) AS first FROM probe_retention GROUP BY model) f USING (model)
        WHERE r.layer > f.first AND r.mean IS NOT NULL GROUP BY ALL""")}
    targets = sorted({t for _, t in means})
    if not hybrids or not transformers or not targets:
        claim3 = "not measured in this study"
    else:
        holds = all(means.get((h, t), float("nan")) > means.get((tr, t), float("nan"))
                    for h in hybrids for tr in transformers for t in targets)
        claim3 = "confirmed" if holds else "not confirmed"
    finding3 = "; ".join(f"{m} {t}: {v:.2f}" for (m, t), v in sorted(means.items())) or "no retention measured"
    return {
        "sparsity_chart": line_chart(sparsity, "layer", "mass90 (fraction of tokens for 90% of importance)"),
        "heatmaps": heatmaps,
        "retention_chart": line_chart(retention, "layer", "retention"),
        "tables": {k: table(con, title, k, QUERIES) for k, title in (
            ("sparsity", "Sparsity per scoring layer (decay-free score)"),
            ("stability", "Cross-layer stability (pairs of different layers)"),
            ("retention", "Retention probes per layer"))},
        "claims": [
            {"id": 1, "text": "Importance is sparse within layers but unstable across layers.",
             "verdict": claim1, "finding": finding1, "rule": RULES["claim1"]},
            {"id": 3, "text": "Discarded-token information persists more in the hybrid than in the Transformer.",
             "verdict": claim3, "finding": f"mean retention after the first scoring layer: {finding3}",
             "rule": RULES["claim3"]},
        ],
    }
