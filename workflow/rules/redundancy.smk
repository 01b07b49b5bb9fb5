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
    resources:
        mem_mb=2000,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
