"""Run lmms-eval with the ``hybridreduce`` model and read back what it wrote.

Two ways, one output format: :func:`run_lmms_eval` (lmms-eval's evaluator in this process, what the workflow's
jobs use) and :func:`run_lmms_eval_cli` (``python -m lmms_eval`` in a child process). lmms-eval 0.7.3's CLI exits 0
even when evaluation fails, so success is judged by the results file, and a failure raises
:class:`LmmsEvalError` carrying lmms-eval's own error. Runs are offline (:func:`offline_vars`).
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

from ..files import atomic_write

LOCAL_TASK = "hybridreduce_local"
LOCAL_TASK_DIR = Path(__file__).parent / "tasks" / LOCAL_TASK


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # loguru colours its lines even into a pipe


class LmmsEvalError(RuntimeError):
    pass


def _events(events) -> list:
    """A sample row's events as a list (the samples table stores JSON text)."""
    if isinstance(events, str):
        return json.loads(events or "[]")
    return list(events or [])


def write_local_task(samples: list[dict], out_dir: str) -> None:
    """Copy the ``hybridreduce_local`` task (YAML + utils) to ``out_dir`` with ``samples.jsonl`` beside it; pass
    ``out_dir`` to lmms-eval's ``--include_path``. ``samples``: rows of the ``samples`` table."""
    os.makedirs(out_dir, exist_ok=True)
    for name in ("hybridreduce_local.yaml", "utils.py"):
        shutil.copyfile(LOCAL_TASK_DIR / name, os.path.join(out_dir, name))
    with atomic_write(os.path.join(out_dir, "samples.jsonl")) as f:
        for s in samples:
            doc = {"sample_id": s["sample_id"], "video": os.path.abspath(s["video_path"]), "question": s["question"],
                   "options": list(s["options"]), "answer": s["answer"], "qtype": s.get("qtype") or "",
                   # the generator's ground truth (synthetic samples), as JSON text: evidence tokens and the oracle
                   "events": json.dumps(_events(s.get("events")))}
            f.write(json.dumps(doc) + "\n")


def offline_vars(hf_home: str | None = None, datasets_cache: str | None = None) -> dict[str, str]:
    """Environment for an offline lmms-eval run: no hub access, ``HF_HOME`` and the datasets cache as configured.
    Read by huggingface_hub, datasets and some lmms-eval tasks at import time, so set before those imports."""
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if hf_home:
        env["HF_HOME"] = os.path.abspath(hf_home)
    if datasets_cache:  # on shared filesystems: a cache the job may write to
        env["LMMS_EVAL_DATASETS_CACHE"] = os.path.abspath(datasets_cache)
    return env


def offline_state() -> dict[str, bool]:
    """Whether this process's Hugging Face libraries run offline, as they read it (at their import, which
    :func:`offline_vars` must precede): huggingface_hub (also transformers' downloads) and datasets."""
    import datasets.config
    from huggingface_hub import constants

    return {"huggingface_hub": bool(constants.is_offline_mode()), "datasets": bool(datasets.config.HF_DATASETS_OFFLINE)}


def lmms_env(hf_home: str | None = None, datasets_cache: str | None = None) -> dict[str, str]:
    """A child process's environment for ``python -m lmms_eval``: offline, and this library importable."""
    src = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([src, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    return {**os.environ, **offline_vars(hf_home, datasets_cache), "PYTHONPATH": path}


def lmms_eval_command(tasks: list[str], model_args: dict, output_dir: str, include_path: str | None = None,
                      limit: int | None = None) -> list[str]:
    """lmms-eval's own CLI with the ``hybridreduce`` model (found through its entry point)."""
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


def read_outputs(output_dir: str, tasks: list[str], output: str = "") -> tuple[dict, dict[str, list[dict]]]:
    """lmms-eval's results JSON and, per task, its per-sample log rows, as written under ``output_dir``. Raises
    :class:`LmmsEvalError` (with ``output``'s error lines) when the results file or a task is missing:
    lmms-eval 0.7.3's CLI exits 0 when evaluation fails."""
    found = sorted(glob.glob(os.path.join(output_dir, "**", "*_results.json"), recursive=True))
    if not found:
        raise LmmsEvalError(f"lmms-eval failed (no results file in {output_dir}):\n{_error_lines(output)}")
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


def run_lmms_eval_cli(tasks: list[str], model_args: dict, output_dir: str, include_path: str | None = None,
                      limit: int | None = None, env: dict | None = None) -> tuple[dict, dict[str, list[dict]]]:
    """Run ``python -m lmms_eval`` in a child process and return what it wrote (see :func:`read_outputs`);
    its output is echoed to stdout."""
    shutil.rmtree(output_dir, ignore_errors=True)  # a rerun must not read an earlier run's files
    os.makedirs(output_dir)
    cmd = lmms_eval_command(tasks, model_args, output_dir, include_path, limit)
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env or lmms_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = _ANSI.sub("", proc.stdout)
    print(output, flush=True)
    if proc.returncode != 0:
        raise LmmsEvalError(f"lmms-eval failed (exit code {proc.returncode}):\n{_error_lines(output)}")
    return read_outputs(output_dir, tasks, output)


def run_lmms_eval(tasks: list[str], model_args: dict, output_dir: str, include_path: str | None = None,
                  limit: int | None = None) -> tuple[dict, dict[str, list[dict]]]:
    """lmms-eval's own evaluator in this process, writing the same files as its CLI (``EvaluationTracker``), and
    what it wrote (see :func:`read_outputs`). What the workflow's jobs use: no second interpreter start and, when
    only the local task is asked for, no indexing of lmms-eval's hundreds of built-in tasks (together ~4-5 s a job).
    Set :func:`offline_vars` in ``os.environ`` before lmms-eval or any Hugging Face library is first imported."""
    from lmms_eval import evaluator
    from lmms_eval.loggers import EvaluationTracker
    from lmms_eval.tasks import TaskManager
    from lmms_eval.utils import get_datetime_str
    from loguru import logger

    from .model import HybridReduceLMM

    logger.remove()  # lmms-eval's log into this job's log (sys.stderr now), uncoloured
    logger.add(sys.stderr, level="INFO", colorize=False)
    shutil.rmtree(output_dir, ignore_errors=True)  # a rerun must not read an earlier run's files
    os.makedirs(output_dir)
    manager = TaskManager("INFO", include_path=include_path, include_defaults=set(tasks) != {LOCAL_TASK})
    unknown = [t for t in tasks if not manager.match_tasks([t])]
    if unknown:
        raise LmmsEvalError(f"lmms-eval failed: Tasks not found: {', '.join(unknown)} (lmms-eval {_version()}; "
                            f"local tasks from {include_path})")
    tracker = EvaluationTracker(output_path=output_dir)  # writes the files the CLI writes
    try:
        results = evaluator.simple_evaluate(
            model=HybridReduceLMM(**model_args), model_args=model_args, tasks=tasks, batch_size=1, limit=limit,
            log_samples=True, evaluation_tracker=tracker, task_manager=manager, verbosity="INFO")
    except MemoryError:  # out of memory on a sample (named by the plugin model): the job's own error, not lmms-eval's
        raise
    except Exception as e:  # lmms-eval's own error, named, with the traceback above it in the log
        raise LmmsEvalError(f"lmms-eval failed: {type(e).__name__}: {e}") from e
    if results is None:
        raise LmmsEvalError("lmms-eval returned no results")
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples, datetime_str=get_datetime_str(timezone="UTC"))
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return read_outputs(output_dir, tasks)


def _version() -> str:
    return metadata.version("lmms-eval")


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
    version = _version()
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
                score = _number(value)
                per_sample.append({
                    **key, "task": task, "doc_id": doc_id,
                    "sample_id": sample_ids.get((task, doc_id), f"{task}/{doc_id}"),
                    "target": str(log.get("target", "")), "response": str(response), "metric": metric,
                    "score": score, "detail": None if score is not None else json.dumps(value),
                })
    return scores, per_sample
