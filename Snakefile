# hybridreduce: stateful token reduction for long-video hybrid VLMs, from video files to an HTML report.
# Stages: dataset -> extract_frames -> reduce_redundancy -> build_model -> infer -> collect (DuckDB) -> report.
# All logic lives in src/hybridreduce; rules only wire files to it (workflow/scripts/job.py).
import os

from snakemake.utils import min_version

from hybridreduce.config import (base_model, check_checkpoints, check_study_name, claim_study_name,
                                 inference_settings, model_paths, training_data, validate_config)
from hybridreduce.dataset import read_manifest, study_samples
from hybridreduce.dataset.synthetic import generator_settings

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate_config(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))


report: "workflow/report/workflow.rst"

STUDY = config["study"]
RESULTS = f"results/{STUDY}"
# sample_id -> video path (manifests are read and validated here, before any job runs)
VIDEOS = study_samples(config, RESULTS)
SAMPLES = list(VIDEOS)
# model name -> checkpoint folder (a configured path, or where build_model writes it)
MODEL_PATHS = model_paths(config, RESULTS, workflow.basedir)
# A pretraining run (config/pretrain-tiny.yaml) only builds and trains its models, into pretraining.out_dir.
PRETRAINING = config.get("pretraining")
MODEL_DIR = PRETRAINING["out_dir"] if PRETRAINING else f"{RESULTS}/models"
# (model, pre-LLM method, in-LLM method, budget) of every inference setting, and each setting's result file
SETTINGS = inference_settings(config)
INFERENCE_RESULT = f"{RESULTS}/inference/{{model}}/{{pre}}/{{method}}/b{{budget}}.json"
# (model, pre-LLM method) of every inference job with inference.job_per: model
INFER_JOBS = list(dict.fromkeys((model, pre) for model, pre, _, _ in SETTINGS))


onstart:
    # Real runs only (not `-n`, which plans a study without its weights), before any job starts.
    check_checkpoints(config)
    check_study_name(STUDY, RESULTS, workflow.configfiles)
    claim_study_name(RESULTS, workflow.configfiles)


wildcard_constraints:
    sample="[A-Za-z0-9][A-Za-z0-9_.-]*",
    method="[a-z_0-9]+",
    model="[A-Za-z0-9_.-]+",
    pre="[a-z_0-9]+",
    budget="[0-9.]+",


include: "workflow/rules/dataset.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/redundancy.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/inference.smk"
include: "workflow/rules/probing.smk"
include: "workflow/rules/store.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        [MODEL_PATHS[m] for m in PRETRAINING["models"]] if PRETRAINING else f"reports/{STUDY}/index.html",
    default_target: True
