"""Load every job's result file into one DuckDB file, idempotently and atomically.

The database is rebuilt from scratch from the result files each time (same inputs -> same rows), written to a
temporary file and renamed over the old one, so readers never see a half-loaded database. Benchmark records
(:mod:`.benchmarks`) among the inputs go to the ``benchmarks`` table.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile

import duckdb

from ..scoring.stats import accuracy_rows
from .benchmarks import benchmark_rows, is_benchmark_record
from .results import canonical_hash, check_result, read_json
from .schema import ALL_TABLES, TABLES, create_statement


def _load_table(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict], scratch: str) -> None:
    if not rows:
        return
    path = os.path.join(scratch, f"{table}.ndjson")
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    columns = "{" + ", ".join(f"'{n}': '{t}'" for n, t, _ in ALL_TABLES[table]) + "}"
    names = ", ".join(f'"{n}"' for n, _, _ in ALL_TABLES[table])
    con.execute(
        f'INSERT INTO "{table}" SELECT {names} FROM read_json(?, format = \'newline_delimited\', '
        f"columns = {columns})",
        [path],
    )


def collect(result_paths: list[str], database: str, config: dict, model_paths: dict[str, str] | None = None
            ) -> dict[str, int]:
    """Build ``database`` from ``result_paths`` (the study's job result files, and any benchmark records), the
    study ``config`` and the checkpoint folder of every model (``model_paths``: name -> folder, for the ``models``
    table's provenance).

    Returns the row count per table.
    """
    rows: dict[str, list[dict]] = {t: [] for t in ALL_TABLES}
    rows["study"].append(
        {"study": config["study"], "config_hash": canonical_hash(config), "seed": config["seed"], "config": config}
    )
    for path in sorted(result_paths):
        data = read_json(path)
        if is_benchmark_record(data):
            rows["benchmarks"].extend(benchmark_rows(data))
            continue
        data = check_result(path, data)
        for table, table_rows in data["tables"].items():
            if table not in TABLES:
                raise ValueError(f"{path}: unknown table '{table}' (known: {', '.join(TABLES)})")
            rows[table].extend(table_rows)
        meta = data["meta"]
        rows["runs"].append({"output": path, **{c: meta[c] for c, _, _ in TABLES["runs"] if c != "output"}})

    from ..models.provenance import model_row  # here: the models package imports torch, which other jobs never need

    for name, path in (model_paths or {}).items():
        rows["models"].append(model_row(name, config["models"][name], path))
    chance = {r["sample_id"]: 1.0 / len(r["options"]) for r in rows["samples"] if r.get("options")}
    rows["accuracy"] = accuracy_rows(rows["sample_scores"], chance)

    folder = os.path.dirname(os.path.abspath(database))
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(os.path.join(folder, ".collect.*")):  # left by a collect that was killed
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".collect.") as scratch:
        tmp_db = os.path.join(scratch, "study.duckdb")
        con = duckdb.connect(tmp_db)
        try:
            for table in ALL_TABLES:
                con.execute(create_statement(table))
                _load_table(con, table, rows[table], scratch)
            counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in ALL_TABLES}
        finally:
            con.close()
        os.replace(tmp_db, database)
    return counts
