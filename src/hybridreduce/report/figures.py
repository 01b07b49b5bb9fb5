"""The report's figures. Each is one SQL query whose rows are both the table printed beside the figure and the
points drawn, by column name: ``panel`` (one small chart each; optional), ``series``, ``x``, ``y`` and optional
``ref`` (a dashed reference line) for line and scatter charts; ``panel``, ``row``, ``col``, ``value`` for
heatmaps. Other columns are context for the table.

This module imports nothing heavy: ``workflow/rules/report.smk`` reads the figure keys from it at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass

from .svg import PALETTE, compose, heatmap, line_chart

BASELINE = "none"  # in line charts, the no-reduction setting (budget 1) starts every method's line


@dataclass(frozen=True)
class Figure:
    key: str  # file name under reports/<study>/figures/ and anchor on the page
    title: str
    category: str  # Snakemake report category
    caption: str
    sql: str
    kind: str = "line"  # line | scatter | heatmap
    xlabel: str = ""
    ylabel: str = ""
    ref_label: str = ""


def draw(fig: Figure, rows: list[dict]) -> str | None:
    """The figure's SVG from its query rows, or None when no row has a value to draw."""
    panels: dict[str, list[dict]] = {}
    for r in rows:
        panels.setdefault(str(r.get("panel", "")), []).append(r)
    names = list(dict.fromkeys(r["series"] for r in rows if "series" in r))
    if fig.kind == "line" and len(names) > 1 and BASELINE in names:
        names.remove(BASELINE)
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}  # same colour in every panel
    charts = []
    for name, prows in panels.items():
        if fig.kind == "heatmap":
            chart = heatmap({(r["row"], r["col"]): r["value"] for r in prows if r["value"] is not None})
        else:
            series: dict[str, list] = {}
            refs: dict[str, list] = {}
            errors: dict[str, list] = {}  # rows with ci_low / ci_high: 95% CI bars on y
            for r in prows:
                series.setdefault(r["series"], []).append((r["x"], r["y"]))
                if "ref" in r:
                    refs.setdefault(r["series"], []).append((r["x"], r["ref"]))
                if "ci_low" in r:
                    errors.setdefault(r["series"], []).append((r["x"], r["ci_low"], r["ci_high"]))
            if fig.kind == "line" and BASELINE in series and len(series) > 1:
                base, base_ref = series.pop(BASELINE), refs.pop(BASELINE, [])
                base_err = errors.pop(BASELINE, [])
                series = {k: v + base for k, v in series.items()}
                refs = {k: v + base_ref for k, v in refs.items()}
                errors = {k: v + base_err for k, v in errors.items()}
            # rows with `chance`: the chance level as a dotted line (accuracy plots)
            chance = [r["chance"] for r in prows if r.get("chance") is not None]
            hline = (sum(chance) / len(chance), "chance") if chance else None
            chart = line_chart(series, fig.xlabel, fig.ylabel, refs=refs, ref_label=fig.ref_label,
                               lines=fig.kind == "line", colours=colours, errors=errors, hline=hline)
        if chart:
            charts.append((name, chart))
    return compose(charts, fig.title) if charts else None


FIGURES = [
    Figure(
        "kept", "Kept visual tokens per pre-LLM method and pruning rate", "Data",
        "Mean kept fraction of the visual tokens per method and pruning rate q, on each model's own vision tokens "
        "(one panel per model: these masks are the ones its infer jobs apply). random and uniform keep EVS's token "
        "count by construction, so their lines lie on the evs line; they differ in which tokens they keep.",
        """
SELECT model AS panel, method AS series, q AS x, round(avg(kept_fraction), 4) AS y, count(*) AS samples,
       round(avg(tokens_total), 1) AS tokens_total, round(avg(tokens_kept), 1) AS tokens_kept,
       round(min(kept_fraction), 4) AS min_kept, round(max(kept_fraction), 4) AS max_kept,
       round(avg(time_ms), 2) AS time_ms
FROM visual_reduction GROUP BY model, method, q ORDER BY model, method, q""",
        xlabel="q (pruning rate)", ylabel="kept fraction"),
    Figure(
        "evs_motion", "Pre-LLM kept fraction vs scene motion", "Data",
        "Fraction of a frame's visual tokens each pre-LLM method keeps against the frame's motion (mean absolute "
        "RGB difference to the previous extracted frame, from the frames table), per pruning rate q. Frames (all "
        "but the first, which EVS always keeps and which has no motion) are pooled over samples into six motion "
        "bins per model and method. Per "
        "sample the kept fraction is fixed by q (EVS keeps a global top-k count), so the per-frame view is the one "
        "that shows where EVS spends its tokens; the random and uniform controls do not look at motion.",
        """
WITH per_frame AS (
    SELECT r.model, r.method, r.q, f.motion, r.kept_per_frame[f.frame_index + 1] / (r.grid_h * r.grid_w) AS kept
    FROM visual_reduction r JOIN frames f ON f.sample_id = r.sample_id AND f.frame_index BETWEEN 1 AND r.frames - 1),
binned AS (SELECT *, ntile(6) OVER (PARTITION BY model, method, q ORDER BY motion) AS bin FROM per_frame)
SELECT model || ' · q = ' || q AS panel, method AS series, bin, round(avg(motion), 3) AS x, round(avg(kept), 4) AS y,
       count(*) AS frames, round(min(motion), 3) AS motion_min, round(max(motion), 3) AS motion_max
FROM binned GROUP BY ALL ORDER BY panel, series, bin""",
        xlabel="frame motion (mean |ΔRGB|)", ylabel="kept fraction of the frame"),
    Figure(
        "pre_llm_distractors", "Evidence kept before the LLM, with and without distractors", "Data",
        "Share of the ground-truth evidence tokens (those showing the shapes the question asks about) that each "
        "pre-LLM method keeps, against the pruning rate q, on the videos with distractors (white shapes no question "
        "asks about, as bright, brief and moving as the targets) and on those without, per model; bars: 95% normal "
        "CIs over videos. Motion saliency (evs) cannot tell a distractor from a target, so distractors take part of "
        "its budget; a query-conditioned selection (cdpruner, dart_embed) can, so it should lose less evidence to "
        "them. distractor_kept: the share of the distractor tokens kept.",
        """
WITH v AS (
    SELECT model, method, q, evidence_kept / evidence_tokens AS kept,
           distractor_kept / nullif(distractor_tokens, 0) AS distractor_kept,
           CASE WHEN distractor_tokens > 0 THEN 'with distractors' ELSE 'without distractors' END AS videos
    FROM visual_reduction WHERE evidence_tokens > 0)
SELECT model || ' · ' || videos AS panel, method AS series, q AS x, round(avg(kept), 4) AS y,
       round(avg(kept) - 1.96 * coalesce(stddev_samp(kept), 0) / sqrt(count(*)), 4) AS ci_low,
       round(avg(kept) + 1.96 * coalesce(stddev_samp(kept), 0) / sqrt(count(*)), 4) AS ci_high,
       round(avg(distractor_kept), 4) AS distractor_kept, count(*) AS videos
FROM v GROUP BY model, videos, method, q ORDER BY panel, series, x""",
        xlabel="q (pruning rate)", ylabel="evidence tokens kept"),
    Figure(
        "accuracy", "Accuracy vs in-LLM token budget", "Token reduction inside the LLM",
        "Accuracy (lmms-eval, mean per-sample score) against the realised in-LLM budget, per model, pre-LLM method "
        "and in-LLM method, with 95% bootstrap CIs over samples (bars) and the chance level (dotted). The "
        "no-reduction setting (budget 1) starts every line.",
        """
SELECT model || ' · pre-LLM ' || pre_method AS panel, method AS series, budget,
       round(realised_budget, 4) AS x, round(accuracy, 4) AS y, round(ci_low, 4) AS ci_low,
       round(ci_high, 4) AS ci_high, round(chance, 4) AS chance, samples
FROM settings ORDER BY model, pre_method, method, budget DESC""",
        xlabel="realised budget", ylabel="accuracy"),
    Figure(
        "speedup", "Prefill speedup vs in-LLM token budget", "Token reduction inside the LLM",
        "Prefill speedup (prefill without in-LLM reduction ÷ with it, timed in the same job; median over samples) "
        "against the realised budget. Dashed, same colour: the analytic FLOPs limit of the same schedule "
        "(flops_none ÷ flops), the speedup if time followed FLOPs.",
        """
SELECT model || ' · pre-LLM ' || pre_method AS panel, method AS series, budget,
       round(realised_budget, 4) AS x, round(speedup, 3) AS y, round(flops_limit, 3) AS ref,
       round(prefill_s * 1000, 2) AS prefill_ms, samples
FROM settings ORDER BY model, pre_method, method, budget DESC""",
        xlabel="realised budget", ylabel="prefill speedup", ref_label="FLOPs limit"),
    Figure(
        "zero_out", "Removing vs zeroing the dropped tokens", "Token reduction inside the LLM",
        "Accuracy against the budget asked for: hybrid_progressive (dropped tokens removed) vs the zero_out ablation "
        "(the same selection, the dropped tokens zeroed in place at every later layer: same sequence length, "
        "positions and recurrence steps), no pre-LLM reduction. vs_ours: zero_out minus hybrid_progressive with its "
        "95% paired-bootstrap CI. On a hybrid, a gap says what removing tokens does to the Mamba state beyond losing "
        "their content (claim 3's mechanism); zero_out saves no compute.",
        """
SELECT model AS panel, method AS series, budget AS x, round(accuracy, 4) AS y, round(ci_low, 4) AS ci_low,
       round(ci_high, 4) AS ci_high, round(vs_ours, 4) AS vs_ours, round(vs_ours_low, 4) AS vs_ours_low,
       round(vs_ours_high, 4) AS vs_ours_high, hybrid, samples
FROM settings WHERE pre_method = 'none' AND method IN ('none', 'hybrid_progressive', 'zero_out')
  AND model IN (SELECT model FROM settings WHERE method = 'zero_out')
ORDER BY model, method, budget DESC""",
        xlabel="budget", ylabel="accuracy"),
    Figure(
        "schedule", "Per-layer kept-token schedule", "Token reduction inside the LLM",
        "Fraction of the vision tokens entering the LLM that each decoder layer processes (mean over samples), per "
        "model, budget and method; no pre-LLM reduction. The budget is the mean of each line over the layers.",
        """
SELECT model || ' · budget ' || budget AS panel, method AS series, layer AS x,
       round(avg(vision_per_layer[layer + 1] / vision_tokens_in), 4) AS y,
       round(avg(vision_per_layer[layer + 1]), 1) AS tokens, count(*) AS samples
FROM (SELECT *, unnest(range(len(vision_per_layer))) AS layer FROM inference
      WHERE pre_method = 'none' AND method <> 'none')
GROUP BY model, budget, method, layer ORDER BY model, budget DESC, method, layer""",
        xlabel="decoder layer", ylabel="fraction of vision tokens processed"),
    Figure(
        "evidence_survival", "Ground-truth evidence tokens kept vs in-LLM budget", "Token reduction inside the LLM",
        "Fraction of the vision tokens that show what the question asks about (the synthetic generator's ground "
        "truth) still present after the last stage, mean over samples, against the budget asked for; no pre-LLM "
        "reduction. oracle keeps them first (the ceiling at each budget schedule), random is the chance line of "
        "the same schedule.",
        """
SELECT model AS panel, method AS series, budget AS x, round(evidence_survival, 4) AS y,
       round(realised_budget, 4) AS realised_budget, round(final_kept, 4) AS final_kept, samples
FROM settings WHERE pre_method = 'none' AND evidence_survival IS NOT NULL ORDER BY model, method, budget DESC""",
        xlabel="budget", ylabel="evidence tokens kept"),
    Figure(
        "evidence", "Which score finds the evidence: ROC-AUC per scoring layer", "Probing",
        "ROC-AUC of the ground-truth evidence tokens under each score on unreduced forwards of the probe videos "
        "(mean over samples, 95% bootstrap CI): attention, the Mamba score without (mamba_decay_free, the paper's) "
        "and with the decay and its other variants (signed C·B, maximum over heads, times ||x_s||), the "
        "last-token query (FastV's), and two question-blind controls, the hidden-state norm and random (0.5). Above 0.5 the score ranks evidence above the background.",
        """
SELECT model AS panel, score AS series, layer AS x, round(auc, 4) AS y, round(auc_low, 4) AS ci_low,
       round(auc_high, 4) AS ci_high, layer_type, round(recall_at_k, 4) AS recall_at_k, k_frac, n_samples
FROM evidence_ranking ORDER BY model, score, layer""",
        xlabel="decoder layer", ylabel="ROC-AUC of evidence tokens"),
    Figure(
        "sparsity", "Importance sparsity per scoring layer", "Probing",
        "Sparsity of each scoring layer's query-conditioned importance over the vision tokens (decay-free score; "
        "mean over probe samples): mass90 = the smallest fraction of tokens holding 90% of the importance (lower "
        "= sparser), Gini (higher = sparser), normalised entropy (lower = sparser).",
        """
SELECT metric AS panel, model AS series, layer AS x, round(mean, 4) AS y, layer_type,
       round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high, n_samples
FROM layer_sparsity WHERE score = 'decay_free' ORDER BY metric DESC, model, layer""",
        xlabel="decoder layer", ylabel="mean over probe samples"),
    Figure(
        "stability", "Cross-layer stability of importance", "Probing",
        "Agreement of the importance of every pair of scoring layers, mean over probe samples: Spearman ρ of the "
        "rankings and Jaccard overlap of the top-k token sets (M = Mamba, A = attention layer).",
        """
WITH types AS (SELECT DISTINCT model, layer, CASE layer_type WHEN 'mamba' THEN ' M' ELSE ' A' END AS t
               FROM layer_sparsity)
SELECT s.model || ' · ' || m.measure AS panel, 'L' || s.layer_a || ta.t AS row, 'L' || s.layer_b || tb.t AS col,
       round(CASE m.measure WHEN 'Spearman ρ' THEN s.spearman ELSE s.jaccard END, 4) AS value, s.n_samples
FROM layer_stability s CROSS JOIN (VALUES (1, 'Spearman ρ'), (2, 'top-k Jaccard')) m(i, measure)
     JOIN types ta ON ta.model = s.model AND ta.layer = s.layer_a
     JOIN types tb ON tb.model = s.model AND tb.layer = s.layer_b
ORDER BY s.model, m.i, s.layer_a, s.layer_b""",
        kind="heatmap"),
    Figure(
        "retention", "Retention of discarded-token information vs layer", "Probing",
        "Retention = (probe score with the tokens removed at layer l − floor) ÷ (ceiling − floor), mean over "
        "resampled train/test splits, against the layer l at which the tokens are removed; one panel per probe "
        "target.",
        """
SELECT target AS panel, model AS series, layer AS x, round(mean, 4) AS y, layer_type, round(ci_low, 4) AS ci_low,
       round(ci_high, 4) AS ci_high, round(score_l, 4) AS score_l, round(score_floor, 4) AS floor,
       round(score_ceiling, 4) AS ceiling, n_boot_finite
FROM probe_retention ORDER BY target, model, layer""",
        xlabel="layer at which tokens are removed", ylabel="retention"),
]
