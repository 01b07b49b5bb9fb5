# Report: reports/<study>/index.html rendered from the study's DuckDB file alone.
localrules:
    report,


rule report:
    input:
        database=f"{RESULTS}/study.duckdb",
    output:
        html=f"reports/{STUDY}/index.html",
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
