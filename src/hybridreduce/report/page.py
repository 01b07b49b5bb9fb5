"""Render ``reports/<study>/index.html`` from a study's DuckDB file alone, plus, beside it, ``figures/<key>.svg``
(the main figures as standalone files, for Snakemake's report) and ``summary.json`` (the study's headline numbers);
then re-render ``reports/index.html``, the list of every study under ``reports/``, from all ``summary.json`` files.

Every table in the page is the result of a query printed beside it, so each number can be traced and re-run
(``duckdb results/<study>/study.duckdb "<query>"``); figures and verdicts are drawn from such tables too.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from importlib import resources

import duckdb
import jinja2
import yaml

from ..files import atomic_write
from . import definitions
from .claims import ALL_FIGURES, CLAIM5_BUDGET, CLAIMS, NOT_MEASURED
from .figures import FIGURES, Figure, draw
from .query import VIEWS, Table, create_views, run
from .svg import placeholder

QUERIES = {
    "dataset": """
SELECT source, split, qtype, count(*) AS samples,
       string_agg(DISTINCT answer, ', ' ORDER BY answer) AS answers
FROM samples GROUP BY ALL ORDER BY ALL""",
    "videos": """
SELECT v.sample_id, v.container, v.codec, v.source_width || 'x' || v.source_height AS source_size,
       v.total_frames, round(v.duration_s, 2) AS duration_s, v.sampled_frames,
       round(avg(f.motion), 3) AS mean_motion, round(v.decode_s * 1000, 1) AS decode_ms
FROM videos v JOIN frames f USING (sample_id)
GROUP BY ALL ORDER BY v.sample_id""",
    "accuracy": """
WITH test AS (
    SELECT a.model, coalesce(s.qtype, 'all') AS qtype, count(*) AS samples,
           round(avg(a.score), 3) AS test_accuracy, round(avg(1.0 / len(s.options)), 3) AS chance
    FROM sample_scores a JOIN samples s USING (sample_id)
    WHERE a.pre_method = 'none' AND a.method = 'none' AND a.metric = 'accuracy'
    GROUP BY GROUPING SETS ((a.model), (a.model, s.qtype)))
SELECT t.model, t.qtype, t.samples, t.test_accuracy,
       round(CAST(json_extract(m.val_accuracy, '/' || t.qtype) AS DOUBLE), 3) AS val_accuracy, t.chance
FROM test t LEFT JOIN models m USING (model)
ORDER BY t.model, t.qtype <> 'all', t.qtype""",
    "models": """
SELECT model, origin, kind, path, base, seed, steps, reduction_budgets,
       round(CAST(val_accuracy ->> 'all' AS DOUBLE), 4) AS val_accuracy, left(recipe_hash, 12) AS recipe_hash,
       left(code_commit, 12) AS code_commit
FROM models ORDER BY model""",
    "finetuned": """
WITH pairs AS (SELECT f.model AS finetuned, b.model AS base FROM models f JOIN models b ON b.path = f.base)
SELECT p.finetuned, p.base, s.pre_method, s.method, s.budget, round(s.accuracy, 4) AS finetuned_accuracy,
       round(s.ci_low, 4) AS ft_ci_low, round(s.ci_high, 4) AS ft_ci_high, round(b.accuracy, 4) AS base_accuracy,
       round(b.ci_low, 4) AS base_ci_low, round(b.ci_high, 4) AS base_ci_high,
       round(s.evidence_survival, 4) AS ft_evidence_kept, round(b.evidence_survival, 4) AS base_evidence_kept
FROM pairs p JOIN settings s ON s.model = p.finetuned
     JOIN settings b ON b.model = p.base AND (b.pre_method, b.method, b.budget) = (s.pre_method, s.method, s.budget)
ORDER BY p.finetuned, s.pre_method, s.method, s.budget DESC""",
    "inference": """
SELECT model, pre_method AS pre, method, budget, samples, round(accuracy, 3) AS accuracy,
       round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high, round(evidence_survival, 3) AS evidence_kept,
       round(realised_budget, 4) AS realised_budget, round(final_kept, 4) AS final_kept,
       round(overall_budget, 4) AS overall_budget, round(prefill_s * 1000, 2) AS prefill_ms,
       round(speedup, 2) AS speedup, round(flops_limit, 2) AS flops_limit, round(total_s * 1000, 2) AS total_ms
FROM settings ORDER BY model, pre, method, budget DESC""",
    "schedules": """
SELECT model, method, budget, any_value(stage_layers) AS stage_layers, any_value(rank_layers) AS rank_layers,
       any_value(keep_counts) AS keep_counts,
       any_value(vision_per_layer) AS vision_per_layer, any_value(vision_tokens_in) AS vision_in
FROM inference WHERE pre_method = 'none' AND method <> 'none'
GROUP BY ALL ORDER BY model, method, budget DESC""",
    "training": """
SELECT model, step, split, qtype, round(loss, 4) AS loss, round(accuracy, 4) AS accuracy, samples_seen,
       round(elapsed_s, 1) AS elapsed_s
FROM training ORDER BY model, split DESC, step, qtype""",
    "failures": """
SELECT sample_id, stage, kind, reason, path FROM failures WHERE kind <> 'infeasible_schedule'
ORDER BY stage, kind, sample_id""",
    "unreadable": """
SELECT model, count(DISTINCT sample_id) AS samples, round(max(unknown_share), 2) AS max_unknown_share,
       string_agg(DISTINCT sample_id, ', ' ORDER BY sample_id) AS sample_ids
FROM inference WHERE question_unreadable GROUP BY model ORDER BY model""",
    "infeasible": """
SELECT stage AS setting, reason, count(*) AS samples FROM failures WHERE kind = 'infeasible_schedule'
GROUP BY stage, reason ORDER BY stage""",
    "runs": """
SELECT rule, count(*) AS jobs, round(sum(duration_s), 2) AS total_s, round(max(duration_s), 2) AS max_s
FROM runs GROUP BY rule ORDER BY rule""",
    "settings_used": """
SELECT p AS setting, json_extract(config, '$.' || p) AS value
FROM study, unnest(['inference.models', 'inference.pre_llm', 'inference.pre_llm_q', 'inference.methods',
                    'inference.budgets', 'reduction', 'frames', 'redundancy.methods', 'redundancy.q', 'probing',
                    'scoring.tasks', 'scoring.limit', 'inference.warmup', 'inference.repeats', 'inference.device',
                    'inference.threads']) t(p)""",
    "versions": """
SELECT k AS package, versions ->> k AS version, count(*) AS jobs, string_agg(DISTINCT rule, ', ' ORDER BY rule) AS rules
FROM (SELECT rule, versions, unnest(json_keys(versions)) AS k FROM runs) GROUP BY ALL ORDER BY package, version""",
    "hardware": """
SELECT device, count(*) AS timed_samples, min(repeats) AS repeats, round(max(peak_mem_mb), 1) AS max_peak_mem_mb,
       (SELECT string_agg(DISTINCT host, ', ') FROM runs) AS job_hosts
FROM latency GROUP BY device ORDER BY device""",
    "benchmarks": """
SELECT benchmark, setting, metric, round(value, 3) AS value, unit, target,
       CASE WHEN met IS NULL THEN '' WHEN met THEN 'met' ELSE 'missed' END AS target_met
FROM benchmarks ORDER BY benchmark, setting, metric""",
    "benchmark_machines": """
SELECT benchmark, any_value(machine) AS machine, strftime(any_value(measured_at) AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M UTC')
       AS measured_at, any_value(command) AS command
FROM benchmarks GROUP BY benchmark ORDER BY benchmark""",
    "headline": f"""
SELECT model, round(max(accuracy) FILTER (method = 'none'), 4) AS full_accuracy,
       round(max(accuracy) FILTER (method = 'hybrid_progressive' AND budget = {CLAIM5_BUDGET}), 4) AS paper_accuracy,
       round(max(speedup) FILTER (method = 'hybrid_progressive' AND budget = {CLAIM5_BUDGET}), 3) AS paper_speedup
FROM settings WHERE pre_method = 'none' GROUP BY model ORDER BY model""",
}

TITLES = {
    "dataset": ("Samples per source, split and question type", "no rows"),
    "videos": ("Videos and extracted frames", "no video was decoded"),
    "accuracy": (("Full-token accuracy per model and question type (test: the study's samples; val: the model's "
                  "validation split at the end of its training, from its provenance; chance: 1 / options)"),
                 "no inference in this study"),
    "inference": ("Accuracy, realised budget and prefill time per setting", "no inference in this study"),
    "schedules": ("Schedules (first sample; tokens per stage and per layer)", "no reduced setting"),
    "training": ("Training log of the models trained or finetuned by the study",
                 "no model was trained in this study"),
    "models": (("Models: where the weights come from (shipped checkpoints carry the recipe that made them; "
                "provenance.json in their folder)"), "no model in this study"),
    "finetuned": ("Finetuned copy against its base model, at every setting both ran (95% bootstrap CIs)",
                  "no model of this study is finetuned from another"),
    "failures": ("Failed samples, one row per sample and stage", "no failures"),
    "unreadable": (("Questions the model cannot read: more than 20% of their tokens are unknown to its tokenizer, "
                    "so its answers to them are guesses (the tiny models know only the synthetic benchmark's "
                    "words)"), "every question was readable by its model's tokenizer"),
    "infeasible": (("Settings not run: budgets a schedule cannot reach with every layer above the floor "
                    "(reduction.min_layer_share), recorded instead of realised"), "every setting ran"),
    "runs": ("Jobs per rule", "no rows"),
    "settings_used": ("Settings of this study (from its config)", "no rows"),
    "versions": ("Software versions used by the jobs", "no rows"),
    "hardware": ("Hardware the timings come from", "no timings in this study"),
    "benchmarks": ("Implementation performance (benchmarks/*.py; targets of issue 10)",
                   "no saved benchmark results (run benchmarks/*.py --save)"),
    "benchmark_machines": ("Where and how each benchmark was measured", "no saved benchmark results"),
    "headline": ((f"Headline: full-token accuracy, and accuracy and prefill speedup of hybrid_progressive at "
                  f"budget {CLAIM5_BUDGET:g} (no pre-LLM reduction)"), "no inference in this study"),
}


@dataclass
class Shown:
    """A figure as the page shows it: spec, SVG (None when the query has nothing to draw) and its table."""

    spec: Figure
    svg: str | None
    table: Table


def _figure(con, spec: Figure) -> Shown:
    table = run(con, spec.sql, empty="no rows: not measured in this study")
    return Shown(spec, draw(spec, table.dicts()), table)


def _claim(con, claim, min_samples: int) -> dict:
    table = run(con, claim.sql, empty="no rows: not measured in this study")
    verdict, finding = claim.judge(table.dicts()) if table.rows else (NOT_MEASURED, "the query returned no rows")
    # sample-size honesty: every verdict names n, and too few samples behind any row is no verdict at all
    n = min((r["samples"] for r in table.dicts() if r.get("samples") is not None), default=None)
    if n is not None and n < min_samples:
        verdict, finding = NOT_MEASURED, (f"too few samples: {n} behind a row, fewer than scoring.min_samples = "
                                          f"{min_samples}; the rows say: {finding}")
    elif n is not None:
        finding = f"n = {n} samples (the fewest behind a row); {finding}"
    # a comparison with one side missing is not drawn: the rows stay in the table
    svg = draw(claim.figure, table.dicts()) if claim.figure and verdict != NOT_MEASURED else None
    figure = Shown(claim.figure, svg, table) if claim.figure else None
    return {"id": claim.id, "text": claim.text, "rule": claim.rule, "verdict": verdict, "finding": finding,
            "table": table, "figure": figure, "evidence": list(claim.evidence)}


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("hybridreduce.report") / "templates")),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.globals["css"] = (resources.files("hybridreduce.report") / "templates" / "style.css").read_text()
    return env


def _read(database: str) -> dict:
    """Everything the page shows, from the study's DuckDB file alone."""
    con = duckdb.connect(database, read_only=True)
    try:
        create_views(con)
        study, config_hash, seed, config = con.execute(
            "SELECT study, config_hash, seed, config FROM study").fetchall()[0]
        (date, n_samples, n_failed), = con.execute(
            "SELECT (SELECT strftime(max(finished_at) AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M UTC') FROM runs), "
            "(SELECT count(*) FROM samples), (SELECT count(DISTINCT sample_id) FROM failures "
            "WHERE kind <> 'infeasible_schedule')").fetchall()
        failure_kinds = dict(con.execute("SELECT kind, count(DISTINCT sample_id) FROM failures GROUP BY kind "
                                         "ORDER BY kind").fetchall())
        used_pre = [m for (m,) in con.execute("SELECT method FROM visual_reduction UNION SELECT pre_method "
                                              "FROM inference ORDER BY 1").fetchall()]
        used_in = [m for (m,) in con.execute("SELECT DISTINCT method FROM inference ORDER BY 1").fetchall()]
        return {
            "study": study, "config_hash": config_hash, "seed": seed, "config": json.loads(config), "date": date,
            "samples": n_samples, "failed_samples": n_failed, "failure_kinds": failure_kinds,
            "tables": {k: run(con, sql, *TITLES[k]) for k, sql in QUERIES.items()},
            "figures": {f.key: _figure(con, f) for f in FIGURES},
            # a database collected outside the workflow may lack the key: then no minimum applies
            "claims": [_claim(con, c, json.loads(config).get("scoring", {}).get("min_samples", 0)) for c in CLAIMS],
            "pre_llm": {m: definitions.PRE_LLM.get(m, "(no definition recorded)") for m in used_pre},
            "in_llm": {m: definitions.IN_LLM.get(m, "(no definition recorded)") for m in used_in},
        }
    finally:
        con.close()


def render(database: str, html_path: str) -> dict:
    """Write the study's page, figures and summary beside ``html_path`` and refresh the index of studies in the
    folder above it. Returns the summary."""
    data = _read(database)
    folder = os.path.dirname(os.path.abspath(html_path))
    summary = {
        **{k: data[k] for k in ("study", "date", "config_hash", "seed", "samples", "failed_samples",
                                "failure_kinds")},
        "models": list(data["config"].get("inference", {}).get("models", [])),
        "model_provenance": data["tables"]["models"].dicts(),
        "report": f"{os.path.basename(folder)}/index.html",
        "headline": data["tables"]["headline"].dicts(), "headline_budget": CLAIM5_BUDGET,
        "claims": [{k: c[k] for k in ("id", "text", "verdict", "finding")} for c in data["claims"]],
    }
    html = _env().get_template("index.html").render(
        **data, summary=summary, views=VIEWS, scores=definitions.SCORES, terms=definitions.TERMS,
        config_yaml=yaml.safe_dump(data["config"], sort_keys=False, allow_unicode=True))
    shown = [*data["figures"].values(), *(c["figure"] for c in data["claims"] if c["figure"])]
    assert [f.spec.key for f in shown] == [f.key for f in ALL_FIGURES]  # the files report.smk declares
    for fig in shown:
        with atomic_write(os.path.join(folder, "figures", f"{fig.spec.key}.svg")) as f:
            f.write(fig.svg or placeholder(f"{fig.spec.title}: not measured in this study"))
    with atomic_write(os.path.join(folder, "summary.json")) as f:
        json.dump(summary, f, indent=1)
    with atomic_write(html_path) as f:
        f.write(html)
    render_index(os.path.dirname(folder))
    return summary


def render_index(reports: str) -> None:
    """``reports/index.html``: every study that has a ``reports/<study>/summary.json``, newest first."""
    summaries = []
    for path in glob.glob(os.path.join(reports, "*", "summary.json")):
        with open(path) as f:
            summaries.append(json.load(f))
    summaries.sort(key=lambda s: s.get("date") or "", reverse=True)
    html = _env().get_template("studies.html").render(summaries=summaries, claim_ids=[c.id for c in CLAIMS])
    with atomic_write(os.path.join(reports, "index.html")) as f:
        f.write(html)
