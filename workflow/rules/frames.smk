# Frame extraction: one job per video. Unusable videos are recorded in `failures` and yield 0 frames.
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
        mem_mb=job_size("extract_frames", "mem_mb"),
        runtime=job_size("extract_frames", "runtime"),
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
