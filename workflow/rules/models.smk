# Models: the workflow builds the tiny models of a study (config models.<name>.path: null), trained on the
# synthetic benchmark when the model has a `training` section; real checkpoints are read from their path by the
# jobs that use them (a missing one is reported by name when such a job runs).
rule build_model:
    input:
        # the model it is finetuned from (training.init_from), if any
        base=lambda wildcards: [MODEL_PATHS[b]] if (b := base_model(config, wildcards.model)) else [],
    output:
        model=directory(f"{MODEL_DIR}/{{model}}"),
        result=f"{RESULTS}/models/{{model}}.json",
    params:
        model=lambda wildcards: config["models"][wildcards.model],
        # only what training depends on: changing the test set must not rebuild models
        training_data=lambda wildcards: training_data(config, wildcards.model),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/build_model/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/build_model/{{model}}.tsv"
    # training threads (models.<name>.training.threads); tiny models train and run on CPUs only, never a GPU
    threads: lambda wildcards: config["models"][wildcards.model].get("training", {}).get("threads", 1)
    resources:
        # cluster job size (workflow/profiles/slurm): config `resources.build_model`, scaled by the attempt
        mem_mb=job_size("build_model", "mem_mb"),
        runtime=job_size("build_model", "runtime"),
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
