# Inference: one job per (model, pre-LLM method, in-LLM method, budget) over every sample of the study.
def model_input(wildcards):
    # Only workflow-built models are inputs; a real checkpoint's path is checked by the job (clear error).
    return [] if config["models"][wildcards.model].get("path") else [MODEL_PATHS[wildcards.model]]


rule infer:
    input:
        model=model_input,
        samples=expand(f"{RESULTS}/dataset/samples/{{sample}}.json", sample=SAMPLES),
        frames=expand(f"{RESULTS}/frames/{{sample}}.npz", sample=SAMPLES),
    output:
        result=f"{RESULTS}/inference/{{model}}/{{pre}}/{{method}}/b{{budget}}.json",
    params:
        model=lambda wildcards: {**config["models"][wildcards.model], "path": MODEL_PATHS[wildcards.model]},
        run={k: v for k, v in config["inference"].items() if k not in ("models", "pre_llm", "methods", "budgets")},
        reduction=config["reduction"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/infer/{{model}}/{{pre}}/{{method}}/b{{budget}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/infer/{{model}}/{{pre}}/{{method}}/b{{budget}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=lambda wildcards: 1 if config["inference"].get("device", "cpu").startswith("cuda") else 0,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
