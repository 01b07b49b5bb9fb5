# Collect: every job's result file -> results/<study>/study.duckdb (rebuilt from scratch, atomically), with the
# checkout's saved benchmark records (benchmarks/*.py --save; hybridreduce.store.benchmarks) for the report's Methods.
import glob


def result_files(wildcards):
    files = [f"{RESULTS}/dataset/samples/{s}.json" for s in SAMPLES]
    files += [f"{RESULTS}/frames/{s}.json" for s in SAMPLES]
    files += [f"{RESULTS}/redundancy/{m}.json" for m in config["redundancy"]["methods"]]
    if config["inference"]["job_per"] == "setting":
        files += [INFERENCE_RESULT.format(model=m, pre=p, method=meth, budget=b) for m, p, meth, b in SETTINGS]
    else:
        files += [f"{RESULTS}/inference/{m}/{p}.json" for m, p in INFER_JOBS]
    files += [f"{RESULTS}/probing/{m}.json" for m in probed_models()]
    files += [f"{RESULTS}/models/{m}.json" for m in sorted({s[0] for s in SETTINGS}) if not config["models"][m].get("path")]
    files += sorted(glob.glob(os.path.join(workflow.basedir, "benchmarks", "records", "*.json")))
    return files


localrules:
    collect,


def provenance_inputs(wildcards):
    # the models' provenance (models table): a shipped checkpoint's provenance.json, a built model's folder
    paths = [MODEL_PATHS[m] for m in config["inference"]["models"]]
    return [p if not config["models"][m].get("path") else f"{p}/provenance.json"
            for m, p in zip(config["inference"]["models"], paths)
            if not config["models"][m].get("path") or os.path.exists(f"{p}/provenance.json")]


rule collect:
    input:
        results=result_files,
        provenance=provenance_inputs,
    output:
        database=f"{RESULTS}/study.duckdb",
    params:
        # the study's config as stored in the database; cluster job sizes are not part of the study
        config={k: v for k, v in config.items() if k != "resources"},
        model_paths={m: MODEL_PATHS[m] for m in config["inference"]["models"]},
    log:
        f"{RESULTS}/logs/collect.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect.tsv"
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/job.py"
