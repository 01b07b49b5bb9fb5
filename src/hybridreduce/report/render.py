"""Render ``reports/<study>/index.html`` from a study's DuckDB file.

Every table in the page is the result of a query printed beside it, so each number can be traced and re-run
(``duckdb results/<study>/study.duckdb "<query>"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import duckdb
import jinja2
import yaml

from ..store import atomic_write
from .probing import probing_section
from .svg import line_chart


@dataclass
class Table:
    title: str
    sql: str
    columns: list[str]
    rows: list[tuple]
    empty: str = "no rows"


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
SELECT t.model, t.qtype, t.samples, t.test_accuracy, round(v.accuracy, 3) AS val_accuracy, t.chance
FROM test t LEFT JOIN training v ON v.model = t.model AND v.split = 'val' AND v.qtype = t.qtype
ORDER BY t.model, t.qtype <> 'all', t.qtype""",
    "reduction": """
SELECT method, q, count(*) AS samples, round(avg(tokens_total), 1) AS tokens_total,
       round(avg(tokens_kept), 1) AS tokens_kept, round(avg(kept_fraction), 4) AS kept_fraction,
       round(min(kept_fraction), 4) AS min_kept, round(max(kept_fraction), 4) AS max_kept,
       round(avg(time_ms), 2) AS time_ms
FROM visual_reduction GROUP BY method, q ORDER BY method, q""",
    "inference": """
SELECT i.model, i.pre_method AS pre, i.method, i.budget, count(*) AS samples,
       round(avg(a.score), 3) AS accuracy,
       round(avg(i.realised_budget), 4) AS realised_budget, round(avg(i.final_kept_fraction), 4) AS final_kept,
       round(avg(i.overall_budget), 4) AS overall_budget,
       round(median(l.prefill_s) * 1000, 2) AS prefill_ms, round(median(l.speedup), 2) AS speedup,
       round(avg(i.flops_none) / avg(i.flops), 2) AS flops_limit
FROM inference i JOIN latency l USING (model, pre_method, method, budget, sample_id)
     LEFT JOIN sample_scores a ON a.metric = 'accuracy' AND a.task = i.task
         AND (a.model, a.pre_method, a.method, a.budget, a.sample_id) = (i.model, i.pre_method, i.method, i.budget, i.sample_id)
GROUP BY ALL ORDER BY i.model, pre, i.method, i.budget DESC""",
    "schedules": """
SELECT model, method, budget, any_value(stage_layers) AS stage_layers, any_value(keep_counts) AS keep_counts,
       any_value(vision_per_layer) AS vision_per_layer, any_value(vision_tokens_in) AS vision_in
FROM inference WHERE pre_method = 'none' AND method <> 'none'
GROUP BY ALL ORDER BY model, method, budget DESC""",
    "training": """
SELECT model, step, split, qtype, round(loss, 4) AS loss, round(accuracy, 4) AS accuracy, samples_seen,
       round(elapsed_s, 1) AS elapsed_s
FROM training ORDER BY model, split DESC, step, qtype""",
    "failures": """
SELECT stage, kind, count(*) AS samples, any_value(reason) AS reason, string_agg(sample_id, ', ') AS sample_ids
FROM failures GROUP BY stage, kind ORDER BY stage, kind""",
    "runs": """
SELECT rule, count(*) AS jobs, round(sum(duration_s), 2) AS total_s, round(max(duration_s), 2) AS max_s
FROM runs GROUP BY rule ORDER BY rule""",
}


def _table(con: duckdb.DuckDBPyConnection, title: str, key: str, queries: dict = QUERIES, empty: str = "no rows"
           ) -> Table:
    cur = con.execute(queries[key])
    return Table(title, queries[key].strip(), [d[0] for d in cur.description], cur.fetchall(), empty)


def _curves(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Per (model, pre-LLM method): accuracy and speedup vs realised budget, one line per method. The ``none``
    baseline (budget 1) starts every line."""
    rows = con.execute("""
        SELECT i.model, i.pre_method, i.method, avg(i.realised_budget), avg(a.score), median(l.speedup)
        FROM inference i JOIN latency l USING (model, pre_method, method, budget, sample_id)
             LEFT JOIN sample_scores a ON a.metric = 'accuracy' AND a.task = i.task
                 AND (a.model, a.pre_method, a.method, a.budget, a.sample_id)
                     = (i.model, i.pre_method, i.method, i.budget, i.sample_id)
        GROUP BY i.model, i.pre_method, i.method, i.budget ORDER BY ALL""").fetchall()
    groups: dict[tuple[str, str], dict] = {}
    for model, pre, method, budget, acc, speedup in rows:
        g = groups.setdefault((model, pre), {"acc": {}, "speed": {}, "base": None})
        if method == "none":
            g["base"] = (budget, acc, speedup)
            continue
        g["acc"].setdefault(method, []).append((budget, acc))
        g["speed"].setdefault(method, []).append((budget, speedup))
    out = []
    for (model, pre), g in groups.items():
        if g["base"]:
            for method in g["acc"]:
                g["acc"][method].append((g["base"][0], g["base"][1]))
                g["speed"][method].append((g["base"][0], g["base"][2]))
        out.append({"model": model, "pre": pre,
                    "accuracy": line_chart(g["acc"], "realised budget", "accuracy"),
                    "speedup": line_chart(g["speed"], "realised budget", "prefill speedup")})
    return out


def render(database: str, html_path: str) -> None:
    con = duckdb.connect(database, read_only=True)
    try:
        study, config_hash, seed, config = con.execute(
            "SELECT study, config_hash, seed, config FROM study").fetchall()[0]
        config = json.loads(config)
        versions = con.execute("SELECT versions FROM runs ORDER BY finished_at DESC LIMIT 1").fetchall()
        tables = {
            "dataset": _table(con, "Samples per source, split and question type", "dataset"),
            "videos": _table(con, "Videos and extracted frames", "videos", empty="no video was decoded"),
            "reduction": _table(con, "Kept visual tokens per method and pruning rate q", "reduction"),
            "inference": _table(con, "Accuracy, realised budget and prefill time per setting", "inference",
                                empty="no inference in this study"),
            "schedules": _table(con, "Schedules (first sample; tokens per stage and per layer)", "schedules",
                                empty="no reduced setting"),
            "accuracy": _table(con, "Full-token accuracy per model and question type (test: the study's samples; "
                               "val: the training run's validation split; chance: 1 / options)", "accuracy",
                               empty="no inference in this study"),
            "training": _table(con, "Training log", "training",
                               empty="no model was trained in this study (random weights)"),
            "failures": _table(con, "", "failures", empty="no failures"),
            "runs": _table(con, "Jobs per rule", "runs"),
        }
        series: dict[str, list[tuple[float, float]]] = {}
        for method, q, frac in con.execute(
            "SELECT method, q, avg(kept_fraction) FROM visual_reduction GROUP BY ALL ORDER BY ALL").fetchall():
            series.setdefault(method, []).append((q, frac))
        n_samples = con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
        curves = _curves(con)
        probing = probing_section(con, _table)
    finally:
        con.close()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("hybridreduce.report") / "templates")),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("index.html").render(
        study=study, config_hash=config_hash, seed=seed, n_samples=n_samples,
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        versions=json.loads(versions[0][0]) if versions else {},
        tables=tables,
        kept_chart=line_chart(series, "q (pruning rate)", "kept fraction"),
        curves=curves,
        probing=probing,
        css=(resources.files("hybridreduce.report") / "templates" / "style.css").read_text(),
    )
    with atomic_write(html_path) as f:
        f.write(html)
