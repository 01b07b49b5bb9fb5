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
    # one row per inference setting: accuracy from lmms-eval's per-sample log, latency medians, FLOPs ratio
    "settings": """
SELECT i.model, i.pre_method, i.method, i.budget, i.layer_pattern LIKE '%M%' AS hybrid, count(*) AS samples,
       avg(a.score) AS accuracy, avg(i.realised_budget) AS realised_budget, avg(i.final_kept_fraction) AS final_kept,
       avg(i.overall_budget) AS overall_budget, median(l.prefill_s) AS prefill_s, median(l.speedup) AS speedup,
       median(l.total_s) AS total_s, avg(i.flops_none) / avg(i.flops) AS flops_limit
FROM inference i JOIN latency l USING (model, pre_method, method, budget, sample_id)
     LEFT JOIN sample_scores a ON a.metric = 'accuracy' AND a.task = i.task
         AND (a.model, a.pre_method, a.method, a.budget, a.sample_id)
             = (i.model, i.pre_method, i.method, i.budget, i.sample_id)
GROUP BY ALL""",
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
