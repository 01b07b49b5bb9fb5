"""Job entry points: each reads its input files, calls the library, and writes its outputs and one result file.

Rules in ``workflow/rules/*.smk`` call these through ``workflow/scripts/job.py`` (which dispatches on the rule
name), so the .smk files only wire files and parameters. Arguments are Snakemake's named lists (attribute
access) or any object with the same attributes.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, replace

import numpy as np

from .dataset import Sample, SyntheticSpec, generate_sample
from .errors import VideoError, is_out_of_memory
from .setting import RunOptions, Setting
from .store import JobResult, atomic_write, collect, read_result
from .video import FrameSampling, decode_frames, read_extracted


def synthesize_sample(input, output, params, wildcards) -> None:
    result = JobResult(rule="synthesize_sample", params={"synthetic": params.synthetic, "seed": params.seed})
    spec = SyntheticSpec.from_config(params.synthetic, seed=params.seed)
    sample = generate_sample(spec, spec.index_of(wildcards.sample), output.video)
    result.add("samples", sample.to_row())
    result.write(output.sample)


def manifest_sample(input, output, params, wildcards) -> None:
    result = JobResult(rule="manifest_sample", params=params.sample)
    result.add("samples", Sample(**params.sample).to_row())
    result.write(output.sample)


def task_sample(input, output, params, wildcards) -> None:
    """One document of a real lmms-eval task (:mod:`hybridreduce.lmms.documents`); a document whose video could not
    be resolved is recorded in ``failures`` here, and frame extraction leaves its frames empty."""
    row = dict(params.sample)
    failure = row.pop("failure", None)
    result = JobResult(rule="task_sample", params=params.sample)
    result.add("samples", Sample(**row).to_row())
    if failure:
        print(f"sample {row['sample_id']} has no usable video: {failure}", flush=True)  # the job's log
        result.add("failures", {"sample_id": row["sample_id"], "stage": "task_sample", "path": row["video_path"],
                                "kind": "missing", "reason": failure})
    result.write(output.sample)


def _save_npz(path: str, **arrays: np.ndarray) -> None:
    with atomic_write(path, "wb", suffix=".npz") as f:
        np.savez(f, **arrays)


def extract_frames(input, output, params, wildcards) -> None:
    """Decode the sample's video. A video that cannot be used is recorded in ``failures`` and leaves an empty
    frames file (0 frames), so the other samples go on and downstream jobs know to skip this one."""
    tables = read_result(input.sample)["tables"]
    sample = tables["samples"][0]
    sampling = FrameSampling.from_config(params.frames)
    result = JobResult(rule="extract_frames", params=params.frames)
    t0 = time.perf_counter()
    try:
        if tables.get("failures"):  # the dataset stage found no video for it (recorded there)
            raise VideoError("missing", sample["video_path"], tables["failures"][0]["reason"])
        video = decode_frames(sample["video_path"], sampling)
    except VideoError as e:
        print(f"sample {sample['sample_id']} failed: {e.kind}: {e.reason} ({e.path})", flush=True)  # the job's log
        if not tables.get("failures"):
            result.add("failures", {"sample_id": sample["sample_id"], "stage": "extract_frames", "path": e.path,
                                    "kind": e.kind, "reason": e.reason})
        h, w = sampling.size
        _save_npz(output.frames, frames=np.zeros((0, h, w, 3), np.uint8), timestamps=np.zeros(0))
        result.write(output.result)
        return
    decode_s = time.perf_counter() - t0
    motion = np.zeros(len(video.frames))
    motion[1:] = np.abs(np.diff(video.frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    _save_npz(output.frames, frames=video.frames, timestamps=video.timestamps)
    result.add("videos", {"sample_id": sample["sample_id"], "container": video.container, "codec": video.codec,
                          "source_width": video.source_width, "source_height": video.source_height,
                          "total_frames": video.total_frames, "duration_s": video.duration_s,
                          "sampled_frames": len(video.frames), "decode_s": decode_s})
    result.add("frames", *[
        {"sample_id": sample["sample_id"], "frame_index": i, "source_index": int(video.source_indices[i]),
         "timestamp_s": float(video.timestamps[i]), "height": sampling.size[0], "width": sampling.size[1],
         "motion": float(motion[i])}
        for i in range(len(video.frames))
    ])
    result.write(output.result)


def encode_vision(input, output, params, wildcards) -> None:
    """Every sample's vision tokens on one model (its encoder and projector), once per model and video: the
    redundancy jobs and every infer job of the model read them instead of encoding again per method and setting.
    Output folder: ``<sample>.safetensors`` per sample (:func:`~.redundancy.save_grid`) and ``index.json`` (the
    encoded samples, and those left out because frame extraction kept no frames: recorded in ``failures``)."""
    import os

    import torch  # only the jobs that need it pay for the import

    from .dataset.synthetic import truth_masks
    from .inference import with_query
    from .models import load_adapter
    from .redundancy import save_grid

    torch.set_num_threads(params.threads)  # the infer jobs' threads, as when they encoded for themselves
    adapter = load_adapter(wildcards.model, params.model, device=params.device)
    index = {"model": wildcards.model, "encoded": [], "no_frames": []}
    for frames_path, sample_path in zip(input.frames, input.samples, strict=True):
        sample = read_result(sample_path)["tables"]["samples"][0]
        sample_id = sample["sample_id"]
        frames, timestamps = read_extracted(frames_path)
        if not len(frames):  # extraction failed: already recorded in `failures`
            index["no_frames"].append(sample_id)
            continue
        t0 = time.perf_counter()
        try:
            grid = adapter.encode_video(frames, timestamps)
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(e):
                raise
            t, h, w = frames.shape[:3]
            raise MemoryError(f"out of memory on sample {sample_id} while encoding {t} frames of {w}x{h} with "
                              f"{wildcards.model} ({params.device}): {e}") from e
        seconds = time.perf_counter() - t0
        grid = with_query(adapter, grid, sample["question"], list(sample["options"]))
        events = sample.get("events") or []
        truth = truth_masks(json.loads(events) if isinstance(events, str) else events, timestamps, grid.shape)
        save_grid(os.path.join(output.vision, f"{sample_id}.safetensors"), grid, seconds, truth)
        index["encoded"].append(sample_id)
    with atomic_write(os.path.join(output.vision, "index.json")) as f:
        json.dump(index, f, indent=1)
    print(f"{len(index['encoded'])} of {len(input.samples)} samples encoded by {wildcards.model}", flush=True)


def reduce_redundancy(input, output, params, wildcards) -> None:
    """Masks of one pre-LLM method at every pruning rate ``q`` for every sample, on the vision tokens of one model
    (``encode_vision``'s, with the question's token embeddings for query-conditioned methods; one job per model and
    method). Infer jobs apply exactly these masks. Keys of the npz,
    per sample and rate: ``<sample>/q=<q>/keep`` ``(T, h, w)`` bool, ``<sample>/q=<q>/time_s`` (the method's
    wall time), and for merging methods ``<sample>/q=<q>/merged`` ``(kept, D)``: the tokens that replace the kept
    ones."""
    import os

    import torch  # only the jobs that need it pay for the import (no model: these jobs read the tokens)

    from .redundancy import load_grid, load_truth, mask_arrays

    method, cfg = wildcards.method, params.redundancy
    torch.set_num_threads(params.threads)
    result = JobResult(rule="reduce_redundancy", params={"model": wildcards.model, "method": method, **cfg})
    with open(os.path.join(input.vision, "index.json")) as f:
        encoded = json.load(f)["encoded"]  # the samples with frames (the others are recorded in `failures`)
    masks = {}
    for sample_id in encoded:
        path = os.path.join(input.vision, f"{sample_id}.safetensors")
        grid, _ = load_grid(path)
        truth = load_truth(path)  # the sample's evidence and distractor tokens (synthetic samples)
        seed = zlib.crc32(f"{params.seed}:{sample_id}".encode())
        for q in cfg["q"]:
            arrays, row = mask_arrays(method, grid, q, seed=seed, options=cfg.get("options"))
            masks.update({f"{sample_id}/q={q}/{k}": v for k, v in arrays.items()})
            for name in ("evidence", "distractor"):  # NULL without ground truth
                mask = truth.get(name)
                row[f"{name}_tokens"] = int(mask.sum()) if mask is not None else None
                row[f"{name}_kept"] = int((mask & arrays["keep"]).sum()) if mask is not None else None
            result.add("visual_reduction", {"sample_id": sample_id, "model": wildcards.model, **row})
    _save_npz(output.masks, **masks)
    result.write(output.result)


def build_model(input, output, params, wildcards) -> None:
    """A tiny model: trained on the synthetic benchmark when its config has ``training``, else seeded random."""
    import torch

    from .models.build import build_tiny_model
    from .training import train_tiny_model

    torch.set_num_threads(params.model.get("training", {}).get("threads", 1))
    data = params.training_data
    result = JobResult(rule="build_model", params={"model": params.model, "training_data": data, "seed": params.seed})
    if "training" in params.model:
        from .models.provenance import code_commit, recipe, write_provenance

        base = input.base[0] if input.base else None
        log, commit = [], code_commit()
        for row in train_tiny_model(params.model, data["synthetic"], data["num_frames"], output.model, params.seed,
                                    data["reduction"], init_from=base):
            log.append(row)
            result.add("training", {"model": wildcards.model, **row})
            print(json.dumps(row), flush=True)  # the training curve in the job's log as it goes
        write_provenance(output.model, recipe(params.model, data, params.seed), log, commit, base=base)
    else:
        build_tiny_model(params.model, output.model, seed=params.seed)
    result.write(output.result)


def lmms_task(input, output, params, wildcards) -> None:
    """The study's samples as the local lmms-eval task ``hybridreduce_local`` (YAML + utils + samples.jsonl)."""
    from .lmms.run import write_local_task

    usable = []
    for sample_path, frames_path in zip(input.samples, input.frames):
        if not read_result(frames_path)["tables"].get("failures"):
            usable.append(read_result(sample_path)["tables"]["samples"][0])
    write_local_task(usable, output.task)
    print(f"{len(usable)} of {len(input.samples)} samples in {output.task}")


def infer(input, output, params, wildcards) -> None:
    """The (in-LLM method, budget) settings of one model and pre-LLM method in ``params.settings`` (one, or all:
    ``inference.job_per``): one offline lmms-eval run of the configured tasks per setting with the ``hybridreduce``
    plugin model, which records the inference rows while it answers. Settings of one job share the process, so
    lmms-eval, the libraries and the model are loaded once."""
    import os
    import shutil

    from .lmms.run import LOCAL_TASK, offline_vars

    scoring = params.scoring
    # The datasets library caches every task's documents (arrow files, locks). The study's own task needs no shared
    # cache: it goes inside this job's run folder and is removed after, so the job writes nothing outside its
    # outputs. Real tasks read their downloaded datasets from the configured cache (scoring.datasets_cache, or
    # HF_HOME's), which they therefore also write to.
    private_cache = None
    if not scoring.get("datasets_cache") and set(scoring["tasks"]) == {LOCAL_TASK}:
        private_cache = os.path.join(output.runs, "datasets_cache")
    # before lmms-eval or any Hugging Face library is imported in this process: they read these at import time
    os.environ.update(offline_vars(scoring.get("hf_home"), scoring.get("datasets_cache") or private_cache))
    from .lmms.run import offline_state

    flags = " ".join(f"{k}={os.environ[k]}" for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))
    print(f"offline: {flags}; as the libraries read them: "
          + ", ".join(f"{lib} offline={on}" for lib, on in offline_state().items()), flush=True)

    # frames as frame extraction saved them, vision tokens as encode_vision and pre-LLM masks as the redundancy
    # stage computed them on this model
    job = Setting(model_name=wildcards.model, model=params.model, pre=wildcards.pre,
                  pre_q=float(params.run["pre_llm_q"]), frames=params.frames, reduction=params.reduction,
                  run=RunOptions.from_config(params.run), seed=params.seed,
                  frames_dir=os.path.abspath(params.frames_dir), vision_dir=os.path.abspath(input.vision),
                  pre_masks=os.path.abspath(input.masks[0]) if input.masks else None)
    # the job's settings differ only in their in-LLM method and budget, listed in `settings`
    shared = {k: v for k, v in asdict(job).items() if k not in ("method", "budget")}
    result = JobResult(rule="infer", params={**shared, "settings": params.settings, "scoring": scoring})
    try:
        for (method, budget), run_dir in zip(params.settings, params.run_dirs, strict=True):
            setting = replace(job, method=method, budget=float(budget))
            print(f"setting {setting.label}", flush=True)
            _infer_setting(result, setting, scoring, input.task[0] if input.task else None, run_dir)
        result.write(output.result)
    finally:
        if private_cache:
            shutil.rmtree(private_cache, ignore_errors=True)


def _infer_setting(result: JobResult, setting: Setting, scoring: dict, task_dir: str | None, run_dir: str) -> None:
    """One lmms-eval run of one setting into ``run_dir``; its rows go into ``result``."""
    import os

    from .lmms.run import read_records, run_lmms_eval, score_rows

    os.makedirs(run_dir, exist_ok=True)
    setting_path, records_path = os.path.join(run_dir, "setting.json"), os.path.join(run_dir, "records.jsonl")
    with atomic_write(setting_path) as f:
        f.write(setting.to_json())
    model_args = {"config": os.path.abspath(setting_path), "record": os.path.abspath(records_path)}
    results, samples = run_lmms_eval(scoring["tasks"], model_args, os.path.join(run_dir, "lmms_eval"),
                                     include_path=task_dir, limit=scoring.get("limit"))
    key = {"model": setting.model_name, "pre_method": setting.pre, "method": setting.method,
           "budget": setting.budget}
    records, sample_ids = read_records(records_path)
    for table, row in records:
        result.add(table, row)
    scores, per_sample = score_rows(results, samples, key, sample_ids)
    result.add("scores", *scores)
    result.add("sample_scores", *per_sample)


def probe(input, output, params, wildcards) -> None:
    """Importance sparsity, cross-layer stability and retention probes for one model."""
    import torch

    from .probing.run import probe_model

    torch.set_num_threads(params.probing.get("threads", 1))
    result = JobResult(rule="probe", params={k: getattr(params, k) for k in ("model", "probing", "data", "seed")})
    for table, row in probe_model(wildcards.model, params.model, params.data["synthetic"], params.data["num_frames"],
                                  params.probing, params.seed):
        result.add(table, row)
    result.write(output.result)


def collect_results(input, output, params, wildcards) -> None:
    counts = collect(list(input.results), output.database, params.config, params.model_paths)
    print(json.dumps(counts, indent=1))


def render_report(input, output, params, wildcards) -> None:
    from .report import render

    render(input.database, output.html)


JOBS = {
    "synthesize_sample": synthesize_sample,
    "manifest_sample": manifest_sample,
    "task_sample": task_sample,
    "encode_vision": encode_vision,
    "extract_frames": extract_frames,
    "reduce_redundancy": reduce_redundancy,
    "build_model": build_model,
    "lmms_task": lmms_task,
    "infer": infer,
    "probe": probe,
    "collect": collect_results,
    "report": render_report,
}


def memory_limit_mb(smk) -> int | None:
    """The job's ``mem_mb`` when the study config asks for it to be enforced (``resources.enforce_mem_mb``) and
    the ``resources:`` block sizes this rule; else ``None``. ``mem_mb`` is already scaled by the attempt."""
    sizes = (getattr(smk, "config", None) or {}).get("resources") or {}
    if not sizes.get("enforce_mem_mb") or smk.rule not in sizes:
        return None
    mem_mb = getattr(smk.resources, "mem_mb", None)
    return int(mem_mb) if mem_mb else None


def enforce_memory_limit(mem_mb: int) -> None:
    """Hold this process (and its children) to ``mem_mb`` MB of private writable memory (``RLIMIT_DATA``: heap,
    anonymous mappings, thread stacks), so an allocation beyond it fails as ``MemoryError`` / torch's "can't
    allocate memory" instead of the machine swapping or the kernel killing the job. ``RLIMIT_AS`` would count
    the address space of every shared library too (several GB for torch's CUDA build before any work).

    OpenBLAS (numpy's, imported above, and scipy's) retries a failed allocation of its buffers forever while it
    is being loaded, so both are loaded before the limit is set: a limit too small for the job then fails it at
    the next allocation instead of hanging. Their memory still counts against the limit."""
    import importlib.util
    import resource

    if importlib.util.find_spec("scipy") is not None:
        import scipy.linalg  # noqa: F401
    limit = mem_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def run_from_snakemake(smk) -> None:
    """Run the job for ``smk.rule`` with stdout/stderr going to the rule's log file, under its memory limit when
    ``resources.enforce_mem_mb`` is set. An out-of-memory failure ends with a line naming the rule, its wildcards
    and the limit, in the log and on stderr (the Snakemake run's output, or the SLURM job's log)."""
    import contextlib
    import sys
    import traceback

    mem_mb = memory_limit_mb(smk)
    with open(smk.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        if mem_mb:
            print(f"memory limit: {mem_mb} MB (resources.enforce_mem_mb; RLIMIT_DATA)", flush=True)
            enforce_memory_limit(mem_mb)
        try:
            JOBS[smk.rule](smk.input, smk.output, smk.params, smk.wildcards)
        except Exception as e:
            traceback.print_exc()
            if is_out_of_memory(e):
                wildcards = ", ".join(f"{k}={v}" for k, v in dict(smk.wildcards.items()).items())
                limit = f"its limit of mem_mb={mem_mb}" if mem_mb else "the memory available"
                message = (f"rule {smk.rule} ({wildcards or 'no wildcards'}) ran out of memory under {limit}; "
                           f"a retry (snakemake --retries N, the SLURM profile's retries) asks for attempt x mem_mb")
                print(message, flush=True)
                print(message, file=sys.__stderr__, flush=True)
            raise
