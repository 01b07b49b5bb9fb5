"""The study report: computed verdicts, figures, traceable queries, the index of studies, Snakemake's report, and the
page as real headless Chromium renders it."""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import pytest
from conftest import REPO, run_snakemake

from hybridreduce.report import render
from hybridreduce.report.claims import ALL_FIGURES, CONFIRMED, NOT_CONFIRMED, NOT_MEASURED
from hybridreduce.report.query import create_views
from hybridreduce.store import TABLES, JobResult, collect

CHROMIUM = "/usr/bin/chromium"
MODELS = {"hyb": "M*M-", "trf": "****"}  # a hybrid (Mamba, attention, Mamba, MLP) and a Transformer, 4 layers each
SAMPLES = [f"s{i}" for i in range(40)]  # enough for the verdicts' paired bootstrap CIs to separate 1.0 from 0.5
REDUCED = ("hybrid_progressive", "early_aggressive", "mamba_decay", "fastv", "pdrop", "random", "zero_out")


def row(table: str, **values) -> dict:
    """A full row of ``table``: unnamed columns are NULL."""
    return {c: values.get(c) for c, _, _ in TABLES[table]}


def accuracy(model: str, pre: str, method: str, budget: float) -> float:
    """Designed so that every claim's rule holds: the paper's method keeps full accuracy, the rest lose some."""
    return {"none": 1.0, "hybrid_progressive": 1.0, "mamba_decay": 0.75,
            "early_aggressive": 0.5 if budget <= 0.25 else 0.75}.get(method, 0.5)


def speedup(method: str, budget: float) -> float:
    return 1.0 if method == "none" else 0.8 / budget


def make_study(folder: Path, name: str = "synthetic", skip: tuple[str, ...] = (), probing: bool = True,
               accuracy=accuracy, speedup=speedup, scoring: dict | None = None) -> Path:
    """A small study database written through the real store (job result files -> ``collect``): two models, four
    samples, pre-LLM none/evs, every in-LLM method of the claims (minus ``skip``) at budgets 0.5 and 0.25."""
    jobs: dict[str, JobResult] = {r: JobResult(rule=r, params={}) for r in ("synthesize_sample", "extract_frames",
                                                                           "reduce_redundancy", "infer", "probe")}
    for i, sid in enumerate(SAMPLES):
        jobs["synthesize_sample"].add("samples", row(
            "samples", sample_id=sid, split="test", source="synthetic", video_path=f"{sid}.mp4", question="?",
            options=["a", "b", "c", "d"], answer="A", qtype=["colour", "count"][i % 2], events="[]"))
        jobs["extract_frames"].add("videos", row(
            "videos", sample_id=sid, container="mp4", codec="h264", source_width=64, source_height=64,
            total_frames=16, duration_s=4.0, sampled_frames=4, decode_s=0.01))
        for t, motion in enumerate([0.0, 1.0, 5.0, 10.0]):
            jobs["extract_frames"].add("frames", row("frames", sample_id=sid, frame_index=t, source_index=4 * t,
                                                     timestamp_s=t, height=64, width=64, motion=motion + i))
        for method, per_frame in (("evs", [4, 0, 1, 3]), ("random", [2, 2, 2, 2])):
            jobs["reduce_redundancy"].add("visual_reduction", row(
                "visual_reduction", sample_id=sid, method=method, q=0.5, frames=4, grid_h=2, grid_w=2, tokens_total=16,
                tokens_kept=8, kept_fraction=0.5, kept_per_frame=per_frame, time_ms=0.1, evidence_tokens=4,
                evidence_kept=3 if method == "evs" else 2, distractor_tokens=2 * (i % 2), distractor_kept=i % 2))
    settings = [(m, p, "none", 1.0) for m in MODELS for p in ("none", "evs")]
    settings += [(m, p, meth, b) for m in MODELS for p in ("none", "evs") for meth in REDUCED if meth not in skip
                 for b in (0.5, 0.25)]
    for model, pre, method, budget in settings:
        n = 16 if pre == "none" else 8
        rest = round((4 * budget - 1) * n / 3)  # layer 0 sees all tokens; the mean over 4 layers is the budget
        per_layer = [n] * 4 if method == "none" else [n, rest, rest, rest]
        correct = round(len(SAMPLES) * accuracy(model, pre, method, budget))
        kept = 1.0 if method in ("none", "hybrid_progressive") else 0.5  # evidence tokens surviving the last stage
        none_s = 0.010 if pre == "none" else 0.006
        for i, sid in enumerate(SAMPLES):
            key = {"model": model, "pre_method": pre, "method": method, "budget": budget, "sample_id": sid}
            jobs["infer"].add("inference", row(
                "inference", **key, pre_q=0.5 if pre == "evs" else 0.0, task="hybridreduce_local", qtype="colour",
                predicted="A" if i < correct else "B", vision_tokens_full=16, vision_tokens_in=n,
                pre_kept_fraction=n / 16, stage_layers=[] if method == "none" else [1], keep_counts=[],
                vision_per_layer=per_layer, realised_budget=sum(per_layer) / (4 * n),
                final_kept_fraction=per_layer[-1] / n, overall_budget=sum(per_layer) / 64, flops=1e6 * sum(per_layer),
                flops_none=1e6 * 4 * n, layer_pattern=MODELS[model], evidence_tokens=4,
                evidence_per_stage=[4] if method == "none" else [4, round(4 * kept)], evidence_survival=kept))
            prefill = none_s / speedup(method, budget)
            pre_s = 0.001 if pre == "evs" else 0.0
            jobs["infer"].add("latency", row(
                "latency", **key, device="cpu", vision_encode_s=0.002, pre_llm_s=pre_s, prefill_s=prefill,
                prefill_none_s=none_s, speedup=none_s / prefill, score_s=0.0, total_s=0.002 + pre_s + prefill,
                repeats=2, peak_mem_mb=100.0))
            jobs["infer"].add("sample_scores", row(
                "sample_scores", **key, task="hybridreduce_local", doc_id=i, target="A",
                response="A" if i < correct else "B", metric="accuracy", score=float(i < correct)))
    jobs["infer"].add("failures", row("failures", sample_id="s0", stage="infer trf/none/fastv/0.1",
                                      path="models/trf", kind="infeasible_schedule", reason="budget 0.1 is too low"))
    if probing:
        for model, pattern in MODELS.items():
            layers = [(i, "mamba" if c == "M" else "attention") for i, c in enumerate(pattern) if c != "-"]
            for layer, ltype in layers:
                for score in ("decay_free", "decay"):
                    for metric, value in (("mass90", 0.3 if model == "hyb" else 0.6), ("gini", 0.6), ("entropy", 0.7)):
                        jobs["probe"].add("layer_sparsity", row(
                            "layer_sparsity", model=model, score=score, layer=layer, layer_type=ltype, metric=metric,
                            mean=value, std=0.1, ci_low=value - 0.05, ci_high=value + 0.05, n_samples=8))
                for other, _ in layers:
                    rho = 1.0 if other == layer else (0.2 if model == "hyb" else 0.7)
                    jobs["probe"].add("layer_stability", row(
                        "layer_stability", model=model, layer_a=layer, layer_b=other, spearman=rho, jaccard=rho,
                        n_samples=8))
                for score in ("attention", "last_token", "random") if ltype == "attention" else (
                        "mamba_decay_free", "mamba_decay", "last_token", "random"):
                    auc = {"random": 0.5, "last_token": 0.55, "mamba_decay": 0.6}.get(score, 0.8)
                    jobs["probe"].add("evidence_ranking", row(
                        "evidence_ranking", model=model, layer=layer, layer_type=ltype, score=score, auc=auc,
                        auc_low=auc - 0.05, auc_high=auc + 0.05, recall_at_k=auc / 2, k_frac=0.25, n_samples=8))
                for target in ("state", "event"):
                    value = 0.0 if layer == 0 else (0.8 if model == "hyb" else 0.3)
                    jobs["probe"].add("probe_retention", row(
                        "probe_retention", model=model, layer=layer, layer_type=ltype, target=target,
                        keep_ratio=0.25 if target == "state" else None, mean=value, ci_low=value - 0.1,
                        ci_high=value + 0.1, n_boot_finite=10, score_l=value, score_floor=0.0, score_ceiling=1.0))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for rule, job in jobs.items():
        paths.append(str(folder / f"{rule}.json"))
        job.write(paths[-1])
    config = {"study": name, "seed": 0, "inference": {"models": list(MODELS), "pre_llm": ["none", "evs"],
                                                      "methods": ["none", *REDUCED], "budgets": [1.0, 0.5, 0.25]},
              **({"scoring": scoring} if scoring else {})}
    database = folder / "study.duckdb"
    collect(paths, str(database), config)
    return database


def verdicts(database: Path, reports: Path) -> dict[int, str]:
    summary = render(str(database), str(reports / "synthetic" / "index.html"))
    return {c["id"]: c["verdict"] for c in summary["claims"]}


def test_every_verdict_names_its_sample_count_and_too_few_samples_give_no_verdict(tmp_path):
    summary = render(str(make_study(tmp_path / "enough", scoring={"min_samples": 8})),
                     str(tmp_path / "r" / "synthetic" / "index.html"))
    found = {c["id"]: c for c in summary["claims"]}
    assert {i: c["verdict"] for i, c in found.items()} == {i: CONFIRMED for i in range(1, 7)}
    # probe claims count probe samples (8), accuracy claims the samples behind their fewest-sample row (40)
    assert all(found[i]["finding"].startswith("n = 8 samples (the fewest behind a row); ") for i in (1, 3))
    assert all(found[i]["finding"].startswith("n = 40 samples (the fewest behind a row); ") for i in (2, 4, 5, 6))
    summary = render(str(make_study(tmp_path / "few", scoring={"min_samples": 41})),
                     str(tmp_path / "r" / "synthetic" / "index.html"))
    for c in summary["claims"]:
        assert c["verdict"] == NOT_MEASURED
        assert re.match(r"too few samples: (8|40) behind a row, fewer than scoring.min_samples = 41; the rows say: ",
                        c["finding"])


def test_verdicts_are_computed_from_the_rows(tmp_path):
    assert verdicts(make_study(tmp_path / "all"), tmp_path / "r1") == {i: CONFIRMED for i in range(1, 7)}

    # the same study without the rows a claim needs: that claim is not measured, the others unchanged
    db = make_study(tmp_path / "less", skip=("mamba_decay", "early_aggressive", "fastv"), probing=False)
    assert verdicts(db, tmp_path / "r2") == {1: NOT_MEASURED, 2: NOT_MEASURED, 3: NOT_MEASURED, 4: NOT_MEASURED,
                                             5: CONFIRMED, 6: CONFIRMED}

    # numbers that break each rule: no speedup, the paper's method below FastV, the decay score better
    def acc(model, pre, method, budget):
        return {"none": 1.0, "hybrid_progressive": 0.75, "mamba_decay": 1.0, "fastv": 1.0}.get(method, 0.5)

    db = make_study(tmp_path / "worse", skip=("early_aggressive",), accuracy=acc, speedup=lambda m, b: 1.0)
    found = verdicts(db, tmp_path / "r3")
    assert {i: found[i] for i in (2, 4, 5, 6)} == {i: NOT_CONFIRMED for i in (2, 4, 5, 6)}


def test_claim2_says_which_early_method_it_used(tmp_path):
    db = make_study(tmp_path / "s", skip=("early_aggressive",))
    summary = render(str(db), str(tmp_path / "reports" / "s" / "index.html"))
    assert summary["claims"][1]["finding"].startswith(
        "n = 40 samples (the fewest behind a row); early method: fastv (early_aggressive is not in this study")


def test_report_files_index_and_traceable_queries(tmp_path):
    reports = tmp_path / "reports"
    first = make_study(tmp_path / "a", name="first")
    second = make_study(tmp_path / "b", name="second", skip=("mamba_decay",))
    render(str(first), str(reports / "first" / "index.html"))
    summary = render(str(second), str(reports / "second" / "index.html"))

    # beside the page: one standalone SVG per main figure (Snakemake's report) and the summary
    folder = reports / "second"
    assert sorted(p.name for p in (folder / "figures").iterdir()) == sorted(f"{f.key}.svg" for f in ALL_FIGURES)
    assert json.loads((folder / "summary.json").read_text()) == summary
    assert summary["study"] == "second" and summary["models"] == ["hyb", "trf"] and summary["samples"] == len(SAMPLES)
    assert summary["headline"] == [{"model": m, "full_accuracy": 1.0, "paper_accuracy": 1.0, "paper_speedup": 3.2}
                                   for m in ("hyb", "trf")]
    assert "not measured" in (folder / "figures" / "claim4.svg").read_text()  # no mamba_decay: a placeholder

    # the index of studies lists both, linking to their pages
    index = (reports / "index.html").read_text()
    for name in ("first", "second"):
        assert f'href="{name}/index.html"' in index
        assert json.loads((reports / name / "summary.json").read_text())["config_hash"][:12] in index

    # every query printed on the page runs as printed against the study's database (views created first)
    html = (folder / "index.html").read_text()
    queries = [htmllib.unescape(q) for q in re.findall(r'<details class="query">.*?<pre>(.*?)</pre>', html, re.DOTALL)]
    con = duckdb.connect(str(second), read_only=True)
    try:
        create_views(con)
        for sql in queries:
            con.execute(sql).fetchall()
    finally:
        con.close()
    blocks = html.count('class="figure-block"')
    assert blocks == len(ALL_FIGURES) and len(queries) > blocks + 6  # each figure and claim shows its query
    for section in ("Methods", "Data", "Failures", "Reproduce", *(f"Claim {i}." for i in range(1, 7))):
        assert section in html
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}
    assert "<script" not in html


def test_benchmark_records_are_collected_and_shown_in_methods(tmp_path):
    """A record saved by benchmarks/*.py --save, given to collect beside the job results, becomes rows of the
    `benchmarks` table (not a job in `runs`) and a table in the report's Methods section with its machine."""
    from hybridreduce.store.benchmarks import make_record

    database = make_study(tmp_path / "s")
    with duckdb.connect(str(database), read_only=True) as con:
        config = json.loads(con.execute("SELECT config FROM study").fetchone()[0])
        jobs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    rows = [{"setting": "uniform16", "metric": "throughput_vs_ffmpeg", "value": 1.25, "unit": "ratio", "target": 1.0,
             "met": True},
            {"setting": "uniform16", "metric": "frames_per_s", "value": 14.5, "unit": "frames/s", "target": None,
             "met": None}]
    record = tmp_path / "benchmarks" / "records" / "frames.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(make_record("frames", "Test CPU, 2 cores", "python benchmarks/frames.py --save",
                                             rows)))
    collect([*map(str, (tmp_path / "s").glob("*.json")), str(record)], str(database), config)

    with duckdb.connect(str(database), read_only=True) as con:
        loaded = con.execute("SELECT benchmark, setting, metric, value, target, met, machine FROM benchmarks "
                             "ORDER BY metric DESC").fetchall()
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == jobs
    assert loaded == [("frames", "uniform16", "throughput_vs_ffmpeg", 1.25, 1.0, True, "Test CPU, 2 cores"),
                      ("frames", "uniform16", "frames_per_s", 14.5, None, None, "Test CPU, 2 cores")]
    render(str(database), str(tmp_path / "reports" / "s" / "index.html"))
    html = (tmp_path / "reports" / "s" / "index.html").read_text()
    methods = html[html.index('id="methods"'):html.index('id="data"')]
    for text in ("Implementation performance", "throughput_vs_ffmpeg", "1.25", "met", "Test CPU, 2 cores",
                 "python benchmarks/frames.py --save"):
        assert text in methods


def test_definitions_cover_every_registered_method():
    from hybridreduce.reduction.methods import REGISTRY as IN_LLM
    from hybridreduce.redundancy.methods import REGISTRY as PRE_LLM
    from hybridreduce.report import definitions

    assert set(IN_LLM) <= set(definitions.IN_LLM)
    assert set(PRE_LLM) <= set(definitions.PRE_LLM)


def test_rule_file_reads_the_figures_without_heavy_imports():
    code = "import sys, hybridreduce.report.claims; sys.exit('duckdb' in sys.modules or 'jinja2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    for fig in ALL_FIGURES:  # one Snakemake caption per figure, saying what the page's caption says
        caption = (REPO / "workflow" / "report" / f"{fig.key}.rst").read_text()
        assert " ".join(fig.caption.split()) in " ".join(caption.split())


# --- the page in a real browser ----------------------------------------------------------------------------
FIGURE_CHECK = """() => [...document.querySelectorAll('figure')].map(fig => {
    const svg = fig.querySelector('svg'), box = svg.getBoundingClientRect();
    const marks = [...svg.querySelectorAll('.mark')];
    const inside = m => { const r = m.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && r.left >= box.left - 1 && r.right <= box.right + 1
            && r.top >= box.top - 1 && r.bottom <= box.bottom + 1; };
    const block = fig.closest('.figure-block');
    return {id: block.id, width: box.width, height: box.height, marks: marks.length,
            hidden: marks.filter(m => !inside(m)).length,
            untitled: marks.filter(m => !m.querySelector('title')).length,
            query: (block.querySelector('details.query pre') || {}).textContent || ''};
})"""


def open_in_chromium(page_path: Path, screenshot: Path) -> tuple[list[dict], list[str], list[str]]:
    """Load ``page_path`` in headless Chromium with every non-file request aborted; return per-figure facts,
    console errors and the blocked requests, after saving a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    errors, blocked = [], []

    def route(r):
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", route)
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            page.screenshot(path=str(screenshot), full_page=True)
            figures = page.evaluate(FIGURE_CHECK)
        finally:
            browser.close()
    return figures, errors, blocked


def assert_renders(page_path: Path, screenshot: Path, expected: set[str]) -> None:
    figures, errors, blocked = open_in_chromium(page_path, screenshot)
    assert screenshot.stat().st_size > 10_000
    assert errors == [] and blocked == []
    assert {f["id"] for f in figures} >= {f"fig-{k}" for k in expected}
    for f in figures:
        assert f["width"] > 0 and f["height"] > 0, f
        assert f["marks"] > 0 and f["hidden"] == 0 and f["untitled"] == 0, f
        assert "SELECT" in f["query"], f


needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")


@needs_chromium
def test_every_figure_renders_in_chromium(tmp_path):
    db = make_study(tmp_path / "s")
    render(str(db), str(tmp_path / "reports" / "synthetic" / "index.html"))
    assert_renders(tmp_path / "reports" / "synthetic" / "index.html", tmp_path / "synthetic.png",
                   {f.key for f in ALL_FIGURES})  # every figure has data in this study
    assert_renders(tmp_path / "reports" / "index.html", tmp_path / "index.png", set())


@needs_chromium
def test_workflow_report_renders_in_chromium(tiny_study, tmp_path):
    """The page the workflow's report rule wrote for the tiny study (the default study's pipeline, scaled down)."""
    assert_renders(tiny_study / "reports" / "tiny" / "index.html", tmp_path / "tiny.png",
                   {"kept", "evs_motion", "accuracy", "speedup", "schedule", "sparsity", "stability", "retention"})


def test_snakemake_report(tiny_study, tmp_path):
    out = tmp_path / "report.zip"
    run_snakemake(tiny_study, None, "--configfile", "config.yaml", "--report", str(out))
    with zipfile.ZipFile(out) as z:
        files = {Path(n).name for n in z.namelist()}
        page = z.read("report/report.html").decode()
    assert files == {"report.html", "index.html", *(f"{fig.key}.svg" for fig in ALL_FIGURES)}
    for fig in ALL_FIGURES:  # each figure is filed under its category (captions: see the rule-file test above)
        assert re.search(rf'"{re.escape(fig.category)}": {{[^}}]*reports/tiny/figures/{fig.key}\.svg', page), fig.key


def test_the_table_reference_in_the_docs_is_the_one_generated_from_the_schema():
    from hybridreduce.store.schema import markdown_reference

    assert markdown_reference().strip() in (REPO / "docs" / "tables.md").read_text()
