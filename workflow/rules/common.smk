# Shared set-up of the workflow (included first by the Snakefile): config validation, the study's samples, models
# and settings, and every input function of the rules. All logic lives in src/hybridreduce; these only map
# wildcards to files.
import glob
import os

from hybridreduce.config import (base_model, check_checkpoints, check_study_name, claim_study_name,
                                 inference_settings, method_options, method_rates, model_paths, training_data, validate_config)
from hybridreduce.dataset import read_manifest, study_samples
from hybridreduce.dataset.synthetic import generator_settings
from hybridreduce.lmms.documents import task_samples


validate_config(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))

STUDY = config["study"]
RESULTS = f"results/{STUDY}"
# sample_id -> video path (manifests are read and validated here, before any job runs)
VIDEOS = study_samples(config, RESULTS)
# the documents of the real lmms-eval tasks (scoring.tasks), read offline: sample `<task>/<doc_id>` each
TASK_ROWS = {row["sample_id"]: row for row in task_samples(config)}
VIDEOS.update({sample: row["video_path"] for sample, row in TASK_ROWS.items()})
SAMPLES = list(VIDEOS)
# the samples of the local lmms-eval task (hybridreduce_local): the synthetic or manifest ones
LOCAL_SAMPLES = [s for s in SAMPLES if s not in TASK_ROWS]
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
# models whose vision tokens the pre-LLM methods run on (every model of the inference stage)
INFER_MODELS = list(dict.fromkeys(model for model, _, _, _ in SETTINGS))


# --- resources ---------------------------------------------------------------------------------------------------
def job_size(rule, resource):
    # cluster job size of `rule` (config resources.<rule>.<resource>: mem_mb or runtime in minutes) for the first
    # attempt; the slurm profile retries a failed job with attempt x this
    return lambda wildcards, attempt: attempt * config["resources"][rule][resource]


# The jobs that run a model (reduce_redundancy, infer) on the inference device, with the software it needs: cuda
# jobs take a GPU and the GPU environment (mamba-ssm kernels) under --software-deployment-method conda.
ON_GPU = config["inference"]["device"].startswith("cuda")
MODEL_ENV = "../../envs/gpu.yaml" if ON_GPU else "../../envs/cpu.yaml"


def uses_gpu(wildcards):
    return 1 if ON_GPU else 0


# --- frames ------------------------------------------------------------------------------------------------------
def video_input(wildcards):
    # A user's video is an input only if it can be read, so a missing or unreadable file becomes a recorded failure
    # (extract_frames), not a DAG error; Snakemake itself reads inputs (checksums in its metadata), and an
    # unreadable one would stop the whole run.
    path = VIDEOS[wildcards.sample]
    made = config["dataset"]["source"] == "synthetic" and wildcards.sample not in TASK_ROWS  # synthesize_sample's
    return [path] if made or os.access(path, os.R_OK) else []


# --- inference: how settings are spread over jobs (inference.job_per) ------------------------------------------
if config["inference"]["job_per"] == "setting":
    INFER_JOB = "{model}/{pre}/{method}/b{budget}"
    INFER_RESULT = INFERENCE_RESULT

    def infer_settings(wildcards):
        return [(wildcards.method, float(wildcards.budget))]

else:
    INFER_JOB = "{model}/{pre}"
    # one result file holding every setting of the job (each model and pre-LLM method may run its own methods)
    INFER_RESULT = f"{RESULTS}/inference/{{model}}/{{pre}}.json"

    def infer_settings(wildcards):
        return [(m, b) for model, pre, m, b in SETTINGS if (model, pre) == (wildcards.model, wildcards.pre)]


def infer_run_dirs(wildcards):
    # one lmms-eval run folder per setting, in the order of infer_settings (= the job's `runs` folder per setting)
    base = f"{RESULTS}/lmms_eval/runs/{wildcards.model}/{wildcards.pre}"
    return [f"{base}/{method}/b{budget}" for method, budget in infer_settings(wildcards)]


def model_setting(wildcards):
    # the model's config with the checkpoint folder it is loaded from
    return {**config["models"][wildcards.model], "path": MODEL_PATHS[wildcards.model]}


def frames_input(wildcards):
    # every sample's extracted frames: encode_vision reads them, infer their timestamps; no later job reads a video
    return expand(f"{RESULTS}/frames/{{sample}}.npz", sample=SAMPLES)


def redundancy_input(wildcards):
    # the pre-LLM masks that an infer job applies: its model's, of its pre-LLM method
    return [] if wildcards.pre == "none" else [f"{RESULTS}/redundancy/{wildcards.model}/{wildcards.pre}.npz"]


def model_input(wildcards):
    # Only workflow-built models are inputs; a real checkpoint's path is checked at start-up (Snakefile onstart).
    return [] if config["models"][wildcards.model].get("path") else [MODEL_PATHS[wildcards.model]]


def local_task_input(wildcards):
    return [f"{RESULTS}/lmms_eval/task"] if "hybridreduce_local" in config["scoring"]["tasks"] else []


# --- probing -------------------------------------------------------------------------------------------------------
def probed_models():
    if not config["probing"]["enabled"] or config["dataset"]["source"] != "synthetic":
        return []
    return [m for m in config["inference"]["models"]
            if config["models"][m].get("kind", "tiny") == "tiny" and not base_model(config, m)]


# --- store ---------------------------------------------------------------------------------------------------------
def result_files(wildcards):
    files = [f"{RESULTS}/dataset/samples/{s}.json" for s in SAMPLES]
    files += [f"{RESULTS}/frames/{s}.json" for s in SAMPLES]
    files += [f"{RESULTS}/redundancy/{m}/{meth}.json" for m in INFER_MODELS for meth in config["redundancy"]["methods"]]
    if config["inference"]["job_per"] == "setting":
        files += [INFERENCE_RESULT.format(model=m, pre=p, method=meth, budget=b) for m, p, meth, b in SETTINGS]
    else:
        files += [f"{RESULTS}/inference/{m}/{p}.json" for m, p in INFER_JOBS]
    files += [f"{RESULTS}/probing/{m}.json" for m in probed_models()]
    files += [f"{RESULTS}/models/{m}.json" for m in sorted({s[0] for s in SETTINGS}) if not config["models"][m].get("path")]
    files += sorted(glob.glob(os.path.join(workflow.basedir, "benchmarks", "records", "*.json")))
    return files


def provenance_inputs(wildcards):
    # the models' provenance (models table): a shipped checkpoint's provenance.json, a built model's folder
    paths = [MODEL_PATHS[m] for m in config["inference"]["models"]]
    return [p if not config["models"][m].get("path") else f"{p}/provenance.json"
            for m, p in zip(config["inference"]["models"], paths)
            if not config["models"][m].get("path") or os.path.exists(f"{p}/provenance.json")]
