# Dataset stage: one job per sample writes the sample record (and, for the synthetic benchmark, its video). Its
# samples: the synthetic benchmark's or a manifest's (dataset.source), and every document of the real lmms-eval
# tasks (sample ids `<task>/<doc_id>`, which no other source uses).
if config["dataset"]["source"] == "synthetic":

    rule synthesize_sample:
        output:
            video=f"{RESULTS}/dataset/videos/{{sample}}.{config['dataset']['synthetic'].get('container', 'mp4')}",
            sample=f"{RESULTS}/dataset/samples/{{sample}}.json",
        wildcard_constraints:
            sample=r"[^/]+",
        params:
            # video i depends on the generator settings and i alone: growing the benchmark keeps existing videos
            synthetic={k: v for k, v in config["dataset"]["synthetic"].items() if k != "num_videos"},
            seed=config["seed"],
        log:
            f"{RESULTS}/logs/synthesize_sample/{{sample}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/synthesize_sample/{{sample}}.tsv"
        group:
            "frames"
        resources:
            # cluster job size (workflow/profiles/slurm): config `resources.synthesize_sample`, scaled by the attempt
            mem_mb=job_size("synthesize_sample", "mem_mb"),
            runtime=job_size("synthesize_sample", "runtime"),
            cpus_per_task=lambda wildcards, threads: threads,
        conda:
            "../../envs/cpu.yaml"
        script:
            "../scripts/job.py"

else:
    MANIFEST_ROWS = {s.sample_id: s.to_row() for s in read_manifest(config["dataset"]["manifest"])}

    rule manifest_sample:
        output:
            sample=f"{RESULTS}/dataset/samples/{{sample}}.json",
        wildcard_constraints:
            sample=r"[^/]+",
        params:
            # The row itself, not the manifest file: editing one row reruns that sample only.
            sample=lambda wildcards: MANIFEST_ROWS[wildcards.sample],
        log:
            f"{RESULTS}/logs/manifest_sample/{{sample}}.log",
        group:
            "frames"
        resources:
            # cluster job size (workflow/profiles/slurm): config `resources.manifest_sample`, scaled by the attempt
            mem_mb=job_size("manifest_sample", "mem_mb"),
            runtime=job_size("manifest_sample", "runtime"),
            cpus_per_task=lambda wildcards, threads: threads,
        conda:
            "../../envs/cpu.yaml"
        script:
            "../scripts/job.py"


rule task_sample:
    output:
        sample=f"{RESULTS}/dataset/samples/{{sample}}.json",
    wildcard_constraints:
        sample=r"[^/]+/\d+",
    params:
        # the document as read from the task's dataset: a changed document reruns its sample only
        sample=lambda wildcards: TASK_ROWS[wildcards.sample],
    log:
        f"{RESULTS}/logs/task_sample/{{sample}}.log",
    group:
        "frames"
    resources:
        # cluster job size (workflow/profiles/slurm): config `resources.task_sample`, scaled by the attempt
        mem_mb=job_size("task_sample", "mem_mb"),
        runtime=job_size("task_sample", "runtime"),
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
