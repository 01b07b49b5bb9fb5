# Probing (STUDY.md §4): one job per tiny model of the study (finetuned copies excluded: they share their base's
# architecture question), on a probe set rendered from the synthetic benchmark's val split.
rule probe:
    input:
        model=model_input,
    output:
        result=f"{RESULTS}/probing/{{model}}.json",
    params:
        model=lambda wildcards: {**config["models"][wildcards.model], "path": MODEL_PATHS[wildcards.model]},
        probing=config["probing"],
        # the generator's settings, not the test set's size: growing the test set does not rerun probing
        data={"synthetic": generator_settings(config["dataset"]["synthetic"]),
              "num_frames": config["frames"]["num_frames"]},
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/probe/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe/{{model}}.tsv"
    # probing runs tiny models on CPUs only (never a GPU)
    threads: config["probing"]["threads"]
    resources:
        # cluster job size (workflow/profiles/slurm): config `resources.probe`, scaled by the attempt
        mem_mb=job_size("probe", "mem_mb"),
        runtime=job_size("probe", "runtime"),
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
