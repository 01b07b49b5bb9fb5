# Visual redundancy reduction before the LLM: one job per method over every sample, all pruning rates q at once.
rule reduce_redundancy:
    input:
        frames=expand(f"{RESULTS}/frames/{{sample}}.npz", sample=SAMPLES),
        samples=expand(f"{RESULTS}/dataset/samples/{{sample}}.json", sample=SAMPLES),
    output:
        masks=f"{RESULTS}/redundancy/{{method}}.npz",
        result=f"{RESULTS}/redundancy/{{method}}.json",
    params:
        # Not the method list: adding a method must not rerun the others.
        redundancy={k: v for k, v in config["redundancy"].items() if k != "methods"},
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/reduce_redundancy/{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/reduce_redundancy/{{method}}.tsv"
    group:
        "redundancy"
    resources:
        # cluster job size (workflow/profiles/slurm): config `resources.reduce_redundancy`, scaled by the attempt
        mem_mb=job_size("reduce_redundancy", "mem_mb"),
        runtime=job_size("reduce_redundancy", "runtime"),
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
