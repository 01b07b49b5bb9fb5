# Models: the workflow builds the tiny models of a study (config models.<name>.path: null); real checkpoints are
# read from their path by the jobs that use them (a missing one is reported by name when such a job runs).
rule build_model:
    output:
        model=directory(f"{RESULTS}/models/{{model}}"),
    params:
        model=lambda wildcards: config["models"][wildcards.model],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/build_model/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/build_model/{{model}}.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
