# Each model's vision tokens of every sample, encoded once per model and video: the redundancy jobs and every infer
# job of that model read them.
rule encode_vision:
    input:
        frames=frames_input,
        samples=expand(f"{RESULTS}/dataset/samples/{{sample}}.json", sample=SAMPLES),
        model=model_input,
    output:
        vision=directory(f"{RESULTS}/vision/{{model}}"),
    params:
        model=model_setting,
        device=config["inference"]["device"],
        threads=config["inference"]["threads"],
    log:
        f"{RESULTS}/logs/encode_vision/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/encode_vision/{{model}}.tsv"
    threads: config["inference"]["threads"]
    resources:
        # cluster job size (workflow/profiles/slurm): config `resources.encode_vision`, scaled by the attempt
        mem_mb=job_size("encode_vision", "mem_mb"),
        runtime=job_size("encode_vision", "runtime"),
        cpus_per_task=lambda wildcards, threads: threads,
        gpu=uses_gpu,
    conda:
        MODEL_ENV
    script:
        "../scripts/job.py"


# Visual redundancy reduction before the LLM, on each model's own vision tokens: one job per model and method over
# every sample, all pruning rates q at once, on CPUs (no model: the tokens come from encode_vision). The infer jobs
# apply these masks (redundancy_input).
rule reduce_redundancy:
    input:
        vision=f"{RESULTS}/vision/{{model}}",
    output:
        masks=f"{RESULTS}/redundancy/{{model}}/{{method}}.npz",
        result=f"{RESULTS}/redundancy/{{model}}/{{method}}.json",
    params:
        # This method's rates alone: adding a method or changing another's rates must not rerun it.
        redundancy=lambda wildcards: {"q": method_rates(config, wildcards.method),
                                      **({"options": o} if (o := method_options(config, wildcards.method)) else {})},
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
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
