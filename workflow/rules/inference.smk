# Inference + scoring: one lmms-eval evaluation per (model, pre-LLM method, in-LLM method, budget) setting, each with
# its own result file and lmms-eval run folder. `inference.job_per` chooses how settings are spread over jobs:
#   setting: one job each (parallel on a cluster, incremental, a failure costs one setting);
#   model:   one job per model and pre-LLM method runs all its settings in one process, so lmms-eval and the model
#            are loaded once (CPU studies, whose settings take seconds), into one result file; a changed method
#            list reruns the job.
# The plugin model `hybridreduce` answers every document through the inference code path and records kept counts,
# FLOPs and timings as it goes, so no sample is run twice for one setting.
rule lmms_task:
    input:
        samples=expand(f"{RESULTS}/dataset/samples/{{sample}}.json", sample=LOCAL_SAMPLES),
        # samples whose video could not be decoded (recorded in `failures` by extract_frames) are left out
        frames=expand(f"{RESULTS}/frames/{{sample}}.json", sample=LOCAL_SAMPLES),
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
        frames=frames_input,
        vision=f"{RESULTS}/vision/{{model}}",
        masks=redundancy_input,
    output:
        # the job's result file (every setting's rows)
        result=INFER_RESULT,
        runs=directory(f"{RESULTS}/lmms_eval/runs/{INFER_JOB}"),
    params:
        settings=infer_settings,
        run_dirs=infer_run_dirs,
        model=model_setting,
        frames_dir=f"{RESULTS}/frames",
        run={k: v for k, v in config["inference"].items()
             if k not in ("models", "pre_llm", "methods", "budgets", "job_per", "with_pre_llm", "model_methods")},
        frames=config["frames"],
        scoring=config["scoring"],
        reduction=config["reduction"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/infer/{INFER_JOB}.log",
    benchmark:
        f"{RESULTS}/benchmarks/infer/{INFER_JOB}.tsv"
    threads: config["inference"]["threads"]
    resources:
        # cluster job size (workflow/profiles/slurm): config `resources.infer`, scaled by the attempt
        mem_mb=job_size("infer", "mem_mb"),
        runtime=job_size("infer", "runtime"),
        cpus_per_task=lambda wildcards, threads: threads,
        gpu=uses_gpu,
    conda:
        MODEL_ENV
    script:
        "../scripts/job.py"
