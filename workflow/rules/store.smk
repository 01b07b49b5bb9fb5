# Collect: every job's result file -> results/<study>/study.duckdb (rebuilt from scratch, atomically).
def result_files(wildcards):
    files = [f"{RESULTS}/dataset/samples/{s}.json" for s in SAMPLES]
    files += [f"{RESULTS}/frames/{s}.json" for s in SAMPLES]
    files += [f"{RESULTS}/redundancy/{m}/{s}.json" for m in config["redundancy"]["methods"] for s in SAMPLES]
    files += [f"{RESULTS}/inference/{m}/{p}/{meth}/b{b}.json" for m, p, meth, b in SETTINGS]
    return files


localrules:
    collect,


rule collect:
    input:
        results=result_files,
    output:
        database=f"{RESULTS}/study.duckdb",
    params:
        config=config,
    log:
        f"{RESULTS}/logs/collect.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect.tsv"
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
