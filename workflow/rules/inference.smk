# Inference + scoring: one lmms-eval run per (model, pre-LLM method, in-LLM method, budget). The plugin model
# `hybridreduce` answers every document through the inference code path and records kept counts, FLOPs and
# timings as it goes, so no sample is run twice for one setting.
def model_input(wildcards):
    # Only workflow-built models are inputs; a real checkpoint's path is checked at start-up (Snakefile onstart).
    return [] if config["models"][wildcards.model].get("path") else [MODEL_PATHS[wildcards.model]]


def local_task_input(wildcards):
    return [f"{RESULTS}/lmms_eval/task"] if "hybridreduce_local" in config["scoring"]["tasks"] else []


rule lmms_task:
    input:
        samples=expand(f"{RESULTS}/dataset/samples/{{sample}}.json", sample=SAMPLES),
        # samples whose video could not be decoded (recorded in `failures` by extract_frames) are left out
        frames=expand(f"{RESULTS}/frames/{{sample}}.json", sample=SAMPLES),
    output:
        task=directory(f"{RESULTS}/lmms_eval/task"),
    log:
        f"{RESULTS}/logs/lmms_task.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"


rule infer:
    input:
        model=model_input,
        task=local_task_input,
    output:
        result=f"{RESULTS}/inference/{{model}}/{{pre}}/{{method}}/b{{budget}}.json",
        run=directory(f"{RESULTS}/lmms_eval/runs/{{model}}/{{pre}}/{{method}}/b{{budget}}"),
    params:
        model=lambda wildcards: {**config["models"][wildcards.model], "path": MODEL_PATHS[wildcards.model]},
        run={k: v for k, v in config["inference"].items() if k not in ("models", "pre_llm", "methods", "budgets")},
        frames=config["frames"],
        scoring=config["scoring"],
        reduction=config["reduction"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/infer/{{model}}/{{pre}}/{{method}}/b{{budget}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/infer/{{model}}/{{pre}}/{{method}}/b{{budget}}.tsv"
    threads: config["inference"]["threads"]
    resources:
        # cluster job size (workflow/profiles/slurm): config `resources.infer`, scaled by the attempt
        mem_mb=lambda wildcards, attempt: attempt * config["resources"]["infer"]["mem_mb"],
        runtime=lambda wildcards, attempt: attempt * config["resources"]["infer"]["runtime"],
        cpus_per_task=lambda wildcards, threads: threads,
        gpu=lambda wildcards: 1 if config["inference"].get("device", "cpu").startswith("cuda") else 0,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
