# Report: reports/<study>/index.html rendered from the study's DuckDB file alone, its main figures as standalone
# SVGs for Snakemake's own report (`snakemake --report report.zip`; captions in workflow/report/) and summary.json.
# The job also re-renders reports/index.html (every study under reports/) from all summary.json files: that page
# is shared by every study, so it is no output of one study's rule.
from hybridreduce.report.claims import ALL_FIGURES


localrules:
    report,


rule report:
    input:
        database=f"{RESULTS}/study.duckdb",
    output:
        html=report(f"reports/{STUDY}/index.html", caption="../report/index.rst", category="Study report"),
        summary=f"reports/{STUDY}/summary.json",
        figures=[
            report(f"reports/{STUDY}/figures/{f.key}.svg", caption=f"../report/{f.key}.rst", category=f.category)
            for f in ALL_FIGURES
        ],
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
