"""The documents of lmms-eval tasks as study samples: the dataset stage's third source, beside synthetic and manifest.

A real benchmark (``videomme``, ``mlvu_dev``, ...) is read offline exactly as lmms-eval reads it when it evaluates:
the same task YAML through its ``TaskManager``, the same ``datasets`` cache under ``HF_HOME``, the same evaluation
split, and the task's own ``doc_to_visual`` to find each document's video. Document ``i`` of task ``t`` becomes the
sample ``t/i``, the id the plugin model gives the request lmms-eval sends it for that document, so frame extraction
and the redundancy stage process the benchmark's own videos and infer finds their frames by document id.

The workflow calls :func:`task_samples` while it builds the DAG (a dry run lists every document's jobs). It reads
the documents in a child process (``python -m hybridreduce.lmms.documents``): the Hugging Face libraries read
their offline switches when first imported, and the Snakemake process should not import lmms-eval's task index.
A document whose video cannot be resolved (lmms-eval's ``doc_to_visual`` exits or raises, or returns no video) is
still a sample, with no video and the reason, which its dataset job records as a failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from ..errors import ConfigError
from .run import LOCAL_TASK, lmms_env

TASK_SOURCE = "lmms_eval"  # the samples table's `source` of a task document


def read_documents(tasks: list[str], limit: int | None = None) -> list[dict]:
    """Every evaluation document of ``tasks`` (groups expanded into their subtasks, the first ``limit`` of each,
    as ``lmms_eval --limit``) as sample rows plus ``failure`` (None, or why its video is unusable). Run with the
    offline environment (:func:`~hybridreduce.lmms.run.offline_vars`) set before lmms-eval is imported."""
    from lmms_eval.evaluator_utils import get_task_list
    from lmms_eval.tasks import TaskManager, get_task_dict

    from .model import split_choices

    manager = TaskManager("WARNING")
    unknown = [t for t in tasks if not manager.match_tasks([t])]
    if unknown:
        raise ConfigError(f"scoring.tasks: unknown lmms-eval task(s) {', '.join(unknown)}")
    rows = []
    for out in get_task_list(get_task_dict(tasks, manager)):
        task, name = out.task, out.task_name
        docs = task.eval_docs
        split = task.config.test_split if task.has_test_docs() else task.config.validation_split
        for doc_id in range(len(docs) if limit is None else min(limit, len(docs))):
            doc = docs[doc_id]
            failure, video = None, ""
            try:
                videos = [v for v in task.doc_to_visual(doc) if isinstance(v, str)]
                video = videos[0] if videos else ""
                if not video:
                    failure = "the task's doc_to_visual returned no video path"
            except (Exception, SystemExit) as e:  # lmms-eval's video tasks sys.exit() on a missing file
                failure = f"the task's doc_to_visual failed: {e}"
            prompt = str(task.doc_to_text(doc))
            try:
                question, options = split_choices(prompt)
            except ValueError:  # not multiple choice: the plugin refuses it when it answers
                question, options = prompt, []
            rows.append({"sample_id": f"{name}/{doc_id}", "video_path": video, "question": question,
                         "options": options, "answer": str(task.doc_to_target(doc)), "source": TASK_SOURCE,
                         "split": split or "", "qtype": name, "events": [], "failure": failure})
    return rows


def task_samples(config: dict) -> list[dict]:
    """The documents of the config's real lmms-eval tasks (``scoring.tasks`` but the local task), read offline from
    ``scoring.hf_home`` (rows as :func:`read_documents` gives them). Raises :class:`ConfigError` naming the tasks
    and lmms-eval's own error when they cannot be read (not downloaded, unknown task)."""
    scoring = config["scoring"]
    tasks = [t for t in scoring["tasks"] if t != LOCAL_TASK]
    if not tasks:
        return []
    cmd = [sys.executable, "-m", "hybridreduce.lmms.documents", "--tasks", ",".join(tasks)]
    if scoring.get("limit"):
        cmd += ["--limit", str(scoring["limit"])]
    proc = subprocess.run(cmd, env=lmms_env(scoring.get("hf_home"), scoring.get("datasets_cache")),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise ConfigError(f"scoring.tasks: could not read the documents of {', '.join(tasks)} offline from HF_HOME "
                          f"{scoring.get('hf_home')!r} (download them first: docs/scoring.md). lmms-eval said:\n"
                          + "\n".join(lines[-12:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridreduce.lmms.documents",
                                     description="Print the documents of lmms-eval tasks as study samples (JSON).")
    parser.add_argument("--tasks", required=True, help="comma-separated lmms-eval task names")
    parser.add_argument("--limit", type=int, default=None, help="the first N documents of each task")
    args = parser.parse_args(argv)
    try:
        rows = read_documents(args.tasks.split(","), args.limit)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # lmms-eval and datasets print to stdout too: the rows go out last, on one line
    print("\n" + json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
