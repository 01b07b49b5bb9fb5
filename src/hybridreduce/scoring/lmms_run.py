"""Run lmms-eval's CLI with the ``hybridreduce`` model and read back what it wrote.

lmms-eval 0.7.3 exits 0 even when evaluation fails, so success is judged by the results file, and a failure
raises :class:`LmmsEvalError` carrying lmms-eval's own error lines. Runs are offline: ``HF_HUB_OFFLINE``,
``HF_DATASETS_OFFLINE`` and ``HF_HOME`` are set in the child's environment before lmms-eval is imported.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ..store import atomic_write

LOCAL_TASK = "hybridreduce_local"
LOCAL_TASK_DIR = Path(__file__).parent / "lmms_tasks" / LOCAL_TASK


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # loguru colours its lines even into a pipe


class LmmsEvalError(RuntimeError):
    pass


def write_local_task(samples: list[dict], out_dir: str) -> None:
    """Copy the ``hybridreduce_local`` task (YAML + utils) to ``out_dir`` with ``samples.jsonl`` beside it; pass
    ``out_dir`` to lmms-eval's ``--include_path``. ``samples``: rows of the ``samples`` table."""
    os.makedirs(out_dir, exist_ok=True)
    for name in ("hybridreduce_local.yaml", "utils.py"):
        shutil.copyfile(LOCAL_TASK_DIR / name, os.path.join(out_dir, name))
    with atomic_write(os.path.join(out_dir, "samples.jsonl")) as f:
        for s in samples:
            doc = {"sample_id": s["sample_id"], "video": os.path.abspath(s["video_path"]), "question": s["question"],
                   "options": list(s["options"]), "answer": s["answer"], "qtype": s.get("qtype") or ""}
            f.write(json.dumps(doc) + "\n")


def _plugin_path(shim_dir: str) -> list[str]:
    """``PYTHONPATH`` entries that let the lmms-eval child import this library and find its ``hybridreduce``
    model. Where the package is not pip-installed (Snakemake's conda envs import it from ``src/``), a minimal
    ``.dist-info`` carrying the entry point is written to ``shim_dir``: entry points are discovered on sys.path."""
    src = str(Path(__file__).resolve().parents[2])
    if any(ep.name == "hybridreduce" for ep in metadata.entry_points(group="lmms_eval.models")):
        return [src]
    info = Path(shim_dir) / "hybridreduce_lmms_plugin-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hybridreduce-lmms-plugin\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[lmms_eval.models]\nhybridreduce = hybridreduce.scoring.lmms_plugin:manifest\n")
    return [src, str(shim_dir)]


def lmms_env(shim_dir: str, hf_home: str | None = None, datasets_cache: str | None = None) -> dict[str, str]:
    """The lmms-eval child's environment: offline, this library importable, ``HF_HOME`` and the datasets cache
    as configured."""
    path = [*_plugin_path(shim_dir), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(path)}
    if hf_home:
        env["HF_HOME"] = os.path.abspath(hf_home)
    if datasets_cache:  # on shared filesystems: a cache the job may write to
        env["LMMS_EVAL_DATASETS_CACHE"] = os.path.abspath(datasets_cache)
    return env


def lmms_eval_command(tasks: list[str], model_args: dict, output_dir: str, include_path: str | None = None,
                      limit: int | None = None) -> list[str]:
    args = ",".join(f"{k}={v}" for k, v in model_args.items() if v is not None)
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "hybridreduce", "--model_args", args,
           "--tasks", ",".join(tasks), "--batch_size", "1", "--output_path", output_dir, "--log_samples",
           "--timezone", "UTC", "--verbosity", "INFO"]
    if include_path:
        cmd += ["--include_path", include_path]
    if limit:
        cmd += ["--limit", str(limit)]
    return cmd


def _error_lines(output: str, keep: int = 15) -> str:
    """The part of lmms-eval's output that explains a failure: from its last traceback or ERROR line on."""
    lines = output.rstrip().splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith("Traceback") or "| ERROR" in line
             or "Error:" in line]
    start = marks[-1] if marks else max(0, len(lines) - keep)
    return "\n".join(lines[start : start + 40])


def run_lmms_eval(tasks: list[str], model_args: dict, output_dir: str, include_path: str | None = None,
                  limit: int | None = None, env: dict | None = None) -> tuple[dict, dict[str, list[dict]]]:
    """Run ``python -m lmms_eval`` and return its results JSON and, per task, its per-sample log rows.

    lmms-eval's output is echoed to stdout (the job's log). Raises :class:`LmmsEvalError` when no results file
    appears or a task is missing from it.
    """
    shutil.rmtree(output_dir, ignore_errors=True)  # a rerun must not read an earlier run's files
    os.makedirs(output_dir)
    cmd = lmms_eval_command(tasks, model_args, output_dir, include_path, limit)
    print("$", " ".join(cmd), flush=True)
    env = env or lmms_env(os.path.join(output_dir, "plugin"))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = _ANSI.sub("", proc.stdout)
    print(output, flush=True)
    found = sorted(glob.glob(os.path.join(output_dir, "**", "*_results.json"), recursive=True))
    if proc.returncode != 0 or not found:
        raise LmmsEvalError(f"lmms-eval failed (exit code {proc.returncode}, no results file in {output_dir}):\n"
                            f"{_error_lines(output)}")
    with open(found[-1]) as f:
        results = json.load(f)
    missing = [t for t in tasks if t not in results.get("results", {})]
    if missing:
        raise LmmsEvalError(f"lmms-eval wrote {found[-1]} without results for task(s) {', '.join(missing)}:\n"
                            f"{_error_lines(output)}")
    samples = {}
    for task in tasks:
        logs = glob.glob(os.path.join(os.path.dirname(found[-1]), f"*_samples_{task}.jsonl"))
        if not logs:
            raise LmmsEvalError(f"lmms-eval wrote no per-sample log for task {task} next to {found[-1]}")
        with open(logs[0]) as f:
            samples[task] = [json.loads(line) for line in f if line.strip()]
    return results, samples


def read_records(path: str) -> tuple[list[tuple[str, dict]], dict[tuple[str, int], str]]:
    """The plugin model's ``(table, row)`` records (``inference`` rows get their task) and the sample id of every
    ``(task, doc_id)`` it answered."""
    records, sample_ids = [], {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            row = rec["row"]
            if rec["table"] == "inference":
                row["task"] = rec["task"]
            records.append((rec["table"], row))
            sample_ids[(rec["task"], int(rec["doc_id"]))] = row["sample_id"]
    return records, sample_ids


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def score_rows(results: dict, samples: dict[str, list[dict]], key: dict,
               sample_ids: dict[tuple[str, int], str]) -> tuple[list[dict], list[dict]]:
    """Rows of ``scores`` (one per task and metric) and ``sample_scores`` (one per document and metric) of one
    setting ``key`` (model, pre_method, method, budget). ``sample_ids``: ``(task, doc_id) -> sample_id``."""
    version = metadata.version("lmms-eval")
    scores, per_sample = [], []
    for task, values in results["results"].items():
        if task not in samples:
            continue
        metrics = []
        for name, value in values.items():
            metric, _, filt = name.partition(",")
            if metric == "alias" or "_stderr" in metric:
                continue
            metrics.append(metric)
            scores.append({**key, "task": task, "metric": metric, "filter": filt, "value": _number(value),
                           "stderr": _number(values.get(f"{metric}_stderr,{filt}")),
                           "num_samples": len(samples[task]), "lmms_eval_version": version})
        for log in samples[task]:
            doc_id = int(log["doc_id"])
            response = log.get("filtered_resps", "")
            while isinstance(response, list):
                response = response[0] if response else ""
            for metric in metrics:
                value = log.get(metric)
                per_sample.append({
                    **key, "task": task, "doc_id": doc_id,
                    "sample_id": sample_ids.get((task, doc_id), f"{task}/{doc_id}"),
                    "target": str(log.get("target", "")), "response": str(response), "metric": metric,
                    "score": _number(value), "detail": None if _number(value) is not None else json.dumps(value),
                })
    return scores, per_sample
