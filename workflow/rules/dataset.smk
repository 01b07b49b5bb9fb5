# Dataset stage: one job per sample writes the sample record (and, for the synthetic benchmark, its video).
if config["dataset"]["source"] == "synthetic":

    rule synthesize_sample:
        output:
            video=f"{RESULTS}/dataset/videos/{{sample}}.{config['dataset']['synthetic'].get('container', 'mp4')}",
            sample=f"{RESULTS}/dataset/samples/{{sample}}.json",
        params:
            synthetic=config["dataset"]["synthetic"],
            seed=config["seed"],
        log:
            f"{RESULTS}/logs/synthesize_sample/{{sample}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/synthesize_sample/{{sample}}.tsv"
        resources:
            mem_mb=500,
        script:
            "../scripts/job.py"

else:

    rule manifest_sample:
        output:
            sample=f"{RESULTS}/dataset/samples/{{sample}}.json",
        params:
            # The manifest path alone: editing one row must not rerun every sample (read and validated at start-up).
            manifest=config["dataset"]["manifest"],
        log:
            f"{RESULTS}/logs/manifest_sample/{{sample}}.log",
        resources:
            mem_mb=200,
        script:
            "../scripts/job.py"
