# Collect: every job's result file -> results/<study>/study.duckdb (rebuilt from scratch, atomically), with the
# checkout's saved benchmark records (benchmarks/*.py --save; hybridreduce.store.benchmarks) for the report's Methods.
localrules:
    collect,


rule collect:
    input:
        results=result_files,
        provenance=provenance_inputs,
    output:
        database=f"{RESULTS}/study.duckdb",
    params:
        # the study's config as stored in the database; cluster job sizes are not part of the study
        config={k: v for k, v in config.items() if k != "resources"},
        model_paths={m: MODEL_PATHS[m] for m in config["inference"]["models"]},
    log:
        f"{RESULTS}/logs/collect.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect.tsv"
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
