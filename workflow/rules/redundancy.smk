# Visual redundancy reduction before the LLM, on each model's own vision tokens: one job per model and method over
# every sample, all pruning rates q at once. The infer jobs apply these masks (redundancy_input).
rule reduce_redundancy:
    input:
        frames=expand(f"{RESULTS}/frames/{{sample}}.npz", sample=SAMPLES),
        samples=expand(f"{RESULTS}/dataset/samples/{{sample}}.json", sample=SAMPLES),
        model=model_input,
    output:
        masks=f"{RESULTS}/redundancy/{{model}}/{{method}}.npz",
        result=f"{RESULTS}/redundancy/{{model}}/{{method}}.json",
    params:
        # Not the method list: adding a method must not rerun the others.
        redundancy={k: v for k, v in config["redundancy"].items() if k != "methods"},
        model=model_setting,
        device=config["inference"]["device"],
        threads=config["inference"]["threads"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/reduce_redundancy/{{model}}/{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/reduce_redundancy/{{model}}/{{method}}.tsv"
    group:
        "redundancy"
    threads: config["inference"]["threads"]
    resources:
        # cluster job size (workflow/profiles/slurm): config `resources.reduce_redundancy`, scaled by the attempt
        mem_mb=job_size("reduce_redundancy", "mem_mb"),
        runtime=job_size("reduce_redundancy", "runtime"),
        cpus_per_task=lambda wildcards, threads: threads,
        gpu=uses_gpu,
    conda:
        MODEL_ENV
    script:
        "../scripts/job.py"
