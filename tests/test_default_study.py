"""The default study end to end (README line 1's `snakemake --cores all`), its report in headless Chromium and
Snakemake's own report. About 15-20 minutes on 2 cores, so it runs in CI (``CI`` set) and is skipped otherwise;
``HYBRIDREDUCE_DEFAULT_STUDY=<folder>`` checks a folder where the default study has already run instead."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import pytest
from conftest import REPO
from test_report import CHROMIUM, assert_renders

from hybridreduce.report.claims import ALL_FIGURES

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("HYBRIDREDUCE_DEFAULT_STUDY")),
    reason="runs the whole default study (~15-20 min on 2 cores): set CI=true, or HYBRIDREDUCE_DEFAULT_STUDY to a "
           "folder where it has run")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "all", *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=3600, check=True)


@pytest.fixture(scope="module")
def default_study(tmp_path_factory) -> Path:
    given = os.environ.get("HYBRIDREDUCE_DEFAULT_STUDY")
    if given:
        return Path(given)
    workdir = tmp_path_factory.mktemp("default_study")
    snakemake(workdir)
    return workdir


def test_default_study_scores_trained_models_through_lmms_eval(default_study):
    with duckdb.connect(str(default_study / "results/default/study.duckdb"), read_only=True) as con:
        rows = con.execute("""SELECT model, value FROM scores WHERE task = 'hybridreduce_local' AND metric = 'accuracy'
                              AND pre_method = 'none' AND method = 'none' ORDER BY model""").fetchall()
    assert [m for m, _ in rows] == ["tiny_hybrid", "tiny_hybrid_ft", "tiny_transformer"]
    assert all(acc > 0.5 for _, acc in rows), rows  # trained, far above the 4-option chance of 0.25


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")
def test_default_study_report_renders_in_chromium(default_study, tmp_path):
    assert_renders(default_study / "reports/default/index.html", tmp_path / "default.png",
                   {"kept", "evs_motion", "accuracy", "speedup", "schedule", "sparsity", "stability", "retention"})


def test_snakemake_report_of_the_default_study(default_study, tmp_path):
    snakemake(default_study, "--report", str(tmp_path / "report.zip"))
    with zipfile.ZipFile(tmp_path / "report.zip") as z:
        names = {Path(n).name for n in z.namelist()}
    assert {f"{fig.key}.svg" for fig in ALL_FIGURES} <= names
