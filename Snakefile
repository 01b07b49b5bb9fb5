# hybridreduce: stateful token reduction for long-video hybrid VLMs, from video files to an HTML report.
# Stages: dataset (synthetic or manifest samples, and the real lmms-eval tasks' documents) -> extract_frames ->
# build_model -> encode_vision (each model's vision tokens, once per video) -> reduce_redundancy (on those tokens)
# -> infer (reads the tokens and the frames' timestamps, applies those masks) -> collect (DuckDB) -> report.
# All logic lives in src/hybridreduce; rules only wire files to it (workflow/scripts/job.py).
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


onstart:
    # Real runs only (not `-n`, which plans a study without its weights), before any job starts.
    check_checkpoints(config, MODEL_PATHS)
    check_study_name(STUDY, RESULTS, workflow.configfiles)
    claim_study_name(RESULTS, workflow.configfiles)


onsuccess:
    from hybridreduce.report.console import success_message

    done = f"checkpoints: {', '.join(MODEL_PATHS[m] for m in PRETRAINING['models'])}" if PRETRAINING else None
    print(f"\n{done or success_message(STUDY)}")


onerror:
    from hybridreduce.report.console import error_message

    default = os.path.join(workflow.basedir, "config", "config.yaml")
    print(f"\n{error_message([f for f in workflow.configfiles if os.path.abspath(f) != default])}")


wildcard_constraints:
    sample="[A-Za-z0-9][A-Za-z0-9_.-]*(/[0-9]+)?",  # a synthetic or manifest id, or <task>/<doc_id>
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
