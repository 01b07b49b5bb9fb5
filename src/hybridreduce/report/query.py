"""Queries behind the report: every number on the page is a row of a :class:`Table`, printed beside the SQL that
produced it, so it can be re-run with ``duckdb results/<study>/study.duckdb "<query>"``.

``VIEWS`` are shared definitions (one row per inference setting); the page prints them under Methods and every
query that reads one links to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

VIEWS = {
    # one row per inference setting: accuracy from lmms-eval's per-sample log with bootstrap CIs (`accuracy`),
    # latency medians over the timed samples (inference.latency_samples), FLOPs ratio, evidence survival
    "settings": """
WITH inf AS (
    SELECT model, pre_method, method, budget, bool_or(layer_pattern LIKE '%M%') AS hybrid, count(*) AS samples,
           avg(realised_budget) AS realised_budget, avg(final_kept_fraction) AS final_kept,
           avg(overall_budget) AS overall_budget, avg(flops_none) / avg(flops) AS flops_limit,
           avg(evidence_survival) AS evidence_survival
    FROM inference GROUP BY ALL),
lat AS (
    SELECT model, pre_method, method, budget, median(prefill_s) AS prefill_s, median(speedup) AS speedup,
           median(total_s) AS total_s, count(*) AS timed_samples
    FROM latency GROUP BY ALL),
acc AS (  -- one task: its bootstrap CIs; several: the sample-weighted accuracy only
    SELECT model, pre_method, method, budget, sum(accuracy * samples) / sum(samples) AS accuracy,
           CASE WHEN count(*) = 1 THEN any_value(ci_low) END AS ci_low,
           CASE WHEN count(*) = 1 THEN any_value(ci_high) END AS ci_high, avg(chance) AS chance,
           CASE WHEN count(*) = 1 THEN any_value(vs_full) END AS vs_full,
           CASE WHEN count(*) = 1 THEN any_value(vs_full_low) END AS vs_full_low,
           CASE WHEN count(*) = 1 THEN any_value(vs_full_high) END AS vs_full_high,
           CASE WHEN count(*) = 1 THEN any_value(vs_ours) END AS vs_ours,
           CASE WHEN count(*) = 1 THEN any_value(vs_ours_low) END AS vs_ours_low,
           CASE WHEN count(*) = 1 THEN any_value(vs_ours_high) END AS vs_ours_high
    FROM accuracy GROUP BY ALL)
SELECT * FROM inf LEFT JOIN acc USING (model, pre_method, method, budget)
                  LEFT JOIN lat USING (model, pre_method, method, budget)""",
}


@dataclass
class Table:
    title: str
    sql: str
    columns: list[str]
    rows: list[tuple]
    empty: str = "no rows"
    views: list[str] = field(default_factory=list)  # views the query reads (linked on the page)

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r)) for r in self.rows]


def create_views(con) -> None:
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")


def run(con, sql: str, title: str = "", empty: str = "no rows") -> Table:
    sql = sql.strip()
    cur = con.execute(sql)
    views = [v for v in VIEWS if re.search(rf"\b(FROM|JOIN)\s+{v}\b", sql)]
    return Table(title, sql, [d[0] for d in cur.description], cur.fetchall(), empty, views)
