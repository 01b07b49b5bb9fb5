# hybridreduce: stateful token reduction for long-video hybrid VLMs, from video files to an HTML report.
# Stages: dataset -> extract_frames -> reduce_redundancy -> collect (DuckDB) -> report (HTML).
# All logic lives in src/hybridreduce; rules only wire files to it (workflow/scripts/job.py).
import os

from snakemake.utils import min_version

from hybridreduce.config import validate_config
from hybridreduce.dataset import read_manifest, study_samples

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate_config(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))

STUDY = config["study"]
RESULTS = f"results/{STUDY}"
# sample_id -> video path (manifests are read and validated here, before any job runs)
VIDEOS = study_samples(config, RESULTS)
SAMPLES = list(VIDEOS)


wildcard_constraints:
    sample="[A-Za-z0-9][A-Za-z0-9_.-]*",
    method="|".join(config["redundancy"]["methods"]),


include: "workflow/rules/dataset.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/redundancy.smk"
include: "workflow/rules/store.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"reports/{STUDY}/index.html",
    default_target: True
