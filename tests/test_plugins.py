"""Third-party methods as plugins (hybridreduce.plugins): an example package installed with pip registers one
pre-LLM and one in-LLM method through entry points; a study names them in its config and finds their rows in DuckDB
and the report."""

import shutil
import subprocess
import sys

import duckdb
import pytest
from conftest import REPO, run_snakemake, tiny_config

PLUGIN = REPO / "tests" / "plugin_example"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """The example package installed into its own folder (offline: the environment's setuptools builds it), put
    on PYTHONPATH for every process the tests start."""
    site, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("plugin") / "src"
    shutil.copytree(PLUGIN, source)  # pip builds in the source tree: a copy keeps the repository clean
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, capture_output=True, text=True)
    return site


def _run(args, site, **kw):
    env = {"PYTHONPATH": str(site), "PATH": f"{sys.executable.rsplit('/', 1)[0]}:/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, cwd=REPO, **kw)


def test_installed_plugins_are_listed_with_their_docs(plugin_site):
    pre = _run(["-m", "hybridreduce", "methods"], plugin_site, check=True).stdout
    assert "frame_stride\tControl: whole frames at an even stride" in pre and "evs\t" in pre
    inllm = _run(["-m", "hybridreduce", "methods", "--stage", "reduction"], plugin_site, check=True).stdout
    assert "progressive_last_token\tablation: the paper's progressive schedule with FastV's query" in inllm


def test_a_study_runs_plugin_methods_named_in_its_config(plugin_site, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(plugin_site))
    cfg = tiny_config("plugins")
    cfg["inference"].update(pre_llm=["none", "frame_stride"], methods=["none", "progressive_last_token"],
                            models=["tiny_hybrid"])
    cfg["redundancy"]["methods"] = ["evs", "frame_stride"]  # infer applies the redundancy stage's masks
    run_snakemake(tmp_path, cfg)
    with duckdb.connect(str(tmp_path / "results/plugins/study.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT pre_method, method, budget, count(*), min(vision_tokens_in) FROM inference "
                           "GROUP BY ALL ORDER BY ALL").fetchall()
    # 4 samples of 8 frames x 4 x 4 tokens; frame_stride at pre_llm_q 0.5 keeps 4 whole frames
    assert rows == [("frame_stride", "none", 1.0, 4, 64), ("none", "none", 1.0, 4, 128),
                    ("none", "progressive_last_token", 0.5, 4, 128)]
    with duckdb.connect(str(tmp_path / "results/plugins/study.duckdb"), read_only=True) as con:
        assert con.execute("SELECT model, q, count(*), min(tokens_kept) FROM visual_reduction WHERE method = "
                           "'frame_stride' GROUP BY ALL ORDER BY ALL").fetchall() == [
            ("tiny_hybrid", 0.5, 4, 64), ("tiny_hybrid", 0.75, 4, 32)]
    html = (tmp_path / "reports/plugins/index.html").read_text()
    assert "progressive_last_token" in html and "frame_stride" in html


def test_an_unknown_method_is_rejected_at_config_validation_listing_the_plugins(plugin_site, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(plugin_site))
    cfg = tiny_config("unknown")
    cfg["inference"]["methods"] = ["none", "no_such_method"]
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    assert "config field 'inference.methods[1]': 'no_such_method' is not allowed; expected one of [" in proc.stderr
    assert "'progressive_last_token']" in proc.stderr  # the plugin's name among the registered ones
    assert not (tmp_path / "results").exists()
