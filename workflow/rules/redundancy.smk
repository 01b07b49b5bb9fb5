# Visual redundancy reduction before the LLM: one job per (method, sample), all pruning rates q at once.
rule reduce_redundancy:
    input:
        frames=f"{RESULTS}/frames/{{sample}}.npz",
    output:
        masks=f"{RESULTS}/redundancy/{{method}}/{{sample}}.npz",
        result=f"{RESULTS}/redundancy/{{method}}/{{sample}}.json",
    params:
        # Not the method list: adding a method must not rerun the others.
        redundancy={k: v for k, v in config["redundancy"].items() if k != "methods"},
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/reduce_redundancy/{{method}}/{{sample}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/reduce_redundancy/{{method}}/{{sample}}.tsv"
    resources:
        mem_mb=1000,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
