# Frame extraction: one job per video. Unusable videos are recorded in `failures` and yield 0 frames.
def video_input(wildcards):
    # A user's video is an input only if it exists, so a missing file becomes a recorded failure, not a DAG error.
    path = VIDEOS[wildcards.sample]
    return [path] if config["dataset"]["source"] == "synthetic" or os.path.exists(path) else []


rule extract_frames:
    input:
        sample=f"{RESULTS}/dataset/samples/{{sample}}.json",
        video=video_input,
    output:
        frames=f"{RESULTS}/frames/{{sample}}.npz",
        result=f"{RESULTS}/frames/{{sample}}.json",
    params:
        frames=config["frames"],
    log:
        f"{RESULTS}/logs/extract_frames/{{sample}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_frames/{{sample}}.tsv"
    group:
        "frames"
    resources:
        # cluster job size (workflow/profiles/slurm): config `resources.extract_frames`, scaled by the attempt
        mem_mb=lambda wildcards, attempt: attempt * config["resources"]["extract_frames"]["mem_mb"],
        runtime=lambda wildcards, attempt: attempt * config["resources"]["extract_frames"]["runtime"],
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
