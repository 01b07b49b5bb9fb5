"""The lmms-eval model ``hybridreduce``: any model adapter with any pre-LLM and in-LLM reduction method and budget.

``python -m lmms_eval --model hybridreduce --model_args model=PATH,method=hybrid_progressive,budget=0.25 ...``.
Model args (all optional but ``model`` or ``config``):

- ``model``: checkpoint folder; ``kind``: adapter family (``tiny``, ``nemotron_h_omni``, ``qwen2_5_vl``);
- ``method`` / ``budget``: in-LLM method and token budget; ``pre`` / ``pre_q``: pre-LLM method and pruning rate;
- ``num_frames``, ``frame_size``: frame extraction (uniform sampling, square frames);
- ``config``: a JSON file with the workflow's full setting (:class:`~hybridreduce.setting.Setting`: model, pre-LLM
  and in-LLM method, budget, frames, reduction, run options, seed, ``frames_dir``, ``pre_masks``), which the
  other args override;
- ``record``: a JSONL file that receives the ``inference`` / ``latency`` / ``failures`` rows of every request.

In the workflow, a document's frames are the ones frame extraction saved (``frames_dir/<sample_id>.npz``) and the
pre-LLM masks the redundancy stage computed on this model's tokens (``pre_masks``): infer decodes no video. On its
own, the plugin decodes with the workflow's own extractor (PyAV), never lmms-eval's or decord, and runs the pre-LLM
method itself. The answer is the
greedy choice among the option letters parsed from the task's prompt, returned as that letter.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from dataclasses import replace

from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from ..errors import ConfigError, VideoError, is_out_of_memory

# the model args the plugin takes, and what lmms-eval itself adds to every model's (from its --batch_size etc.)
MODEL_ARGS = {"model", "kind", "method", "budget", "pre", "pre_q", "num_frames", "frame_size", "config", "record",
              "device"}
LMMS_EVAL_EXTRAS = {"batch_size", "max_batch_size"}
_OPTION = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.*\S)\s*$")


def split_choices(context: str) -> tuple[str, list[str]]:
    """A multiple-choice prompt (``question`` lines, then ``A. option`` lines, then an instruction) as the question
    and the option texts. Options must be consecutive letters from A."""
    lines = context.splitlines()
    start = next((i for i, line in enumerate(lines) if (m := _OPTION.match(line)) and m.group(1) == "A"), None)
    if start is None:
        raise ValueError(f"no 'A. ...' option line in the prompt: {context[:200]!r}")
    options = []
    for line in lines[start:]:
        m = _OPTION.match(line)
        if not m or m.group(1) != chr(ord("A") + len(options)):
            break
        options.append(m.group(2))
    return " ".join(line.strip() for line in lines[:start] if line.strip()), options


FRAME_CACHE_BYTES = 1 << 30
_frame_cache: OrderedDict[tuple, object] = OrderedDict()


def decoded_frames(path: str, sampling):
    """The :class:`~hybridreduce.video.DecodedVideo` (frames ``(T, H, W, 3)`` uint8, timestamps) of ``path``,
    decoded once per process.

    A job that runs several settings answers the same videos in each. Decoding was about a quarter of a setting's
    time in the default study (measured), so the frames are kept, least recently used first out, up to
    ``FRAME_CACHE_BYTES``. Failures are not kept: they raise again, and are recorded again, in every setting.
    """
    from ..video import decode_frames

    try:
        stat = os.stat(path)
    except OSError:  # missing or unreachable: the decoder reports it as a video failure, as it does uncached
        return decode_frames(path, sampling)
    key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size, sampling)
    if key in _frame_cache:
        _frame_cache.move_to_end(key)
        return _frame_cache[key]
    video = decode_frames(path, sampling)
    _frame_cache[key] = video
    while sum(v.frames.nbytes for v in _frame_cache.values()) > FRAME_CACHE_BYTES and len(_frame_cache) > 1:
        _frame_cache.popitem(last=False)
    return video


class HybridReduceLMM(lmms):
    def __init__(self, model: str | None = None, kind: str | None = None, method: str | None = None,
                 budget: float | None = None, pre: str | None = None, pre_q: float | None = None,
                 num_frames: int | None = None, frame_size: int | None = None, config: str | None = None,
                 record: str | None = None, device: str | None = None, **kwargs) -> None:
        super().__init__()
        from ..inference import SettingRunner
        from ..reduction.methods import get_method
        from ..redundancy import registry as pre_llm_registry
        from ..setting import Setting
        from ..video import FrameSampling

        unknown = sorted(set(kwargs) - LMMS_EVAL_EXTRAS)
        if unknown:
            raise ConfigError(f"lmms-eval --model_args: unknown key(s) {', '.join(unknown)}; accepted: "
                              f"{', '.join(sorted(MODEL_ARGS))}")
        if config:  # the workflow's setting (setting.Setting), which the other args override
            with open(config) as f:
                setting = Setting.from_json(f.read(), config)
            if model:
                setting = replace(setting, model={**setting.model, "path": str(model)})
        elif model:
            setting = Setting(model_name=os.path.basename(os.path.normpath(str(model))),
                              model={"kind": "tiny", "path": str(model)})
        else:
            raise ConfigError("lmms-eval --model_args: 'model' (a checkpoint folder) or 'config' is required")
        if kind:
            setting = replace(setting, model={**setting.model, "kind": kind})
        setting = setting.with_overrides(
            method=method, budget=float(budget) if budget is not None else None, pre=pre,
            pre_q=float(pre_q) if pre_q is not None else None,
            frames_num_frames=int(num_frames) if num_frames else None,
            frames_size=[int(frame_size), int(frame_size)] if frame_size else None,
            # lmms-eval passes its own --device through additional_config
            run_device=str(device) if device and device != "None" else None)
        get_method(setting.method)  # an unknown in-LLM method fails here, before any document runs
        if setting.pre != "none" and setting.pre not in pre_llm_registry():
            raise ConfigError(f"lmms-eval --model_args: unknown pre-LLM method '{setting.pre}' (known: none, "
                              f"{', '.join(pre_llm_registry())})")
        if setting.run.threads:
            import torch

            torch.set_num_threads(int(setting.run.threads))
        self.sampling = FrameSampling.from_config(setting.frames)
        self.runner = SettingRunner(setting)
        self.frames_dir = setting.frames_dir
        self.record_path = record
        self.failed = 0  # documents of the current generate_until whose video could not be used
        if record:
            os.makedirs(os.path.dirname(os.path.abspath(record)), exist_ok=True)
            open(record, "w").close()

    def _record(self, rows: list[tuple[str, dict]], task: str, doc_id: int) -> None:
        if self.record_path:
            with open(self.record_path, "a") as f:
                for table, row in rows:
                    f.write(json.dumps({"table": table, "task": task, "doc_id": doc_id, "row": row}) + "\n")

    def _out_of_memory(self, e: BaseException, sample_id: str, task: str, doc_id: int, step: str) -> MemoryError | None:
        """A :class:`MemoryError` naming the sample and the setting when ``e`` is an out-of-memory error (CPU
        allocators raise ``MemoryError`` or a RuntimeError "can't allocate memory"; CUDA ``torch.OutOfMemoryError``,
        a RuntimeError "CUDA out of memory"), else ``None``."""
        if not is_out_of_memory(e):
            return None
        return MemoryError(f"out of memory on sample {sample_id} (task {task}, document {doc_id}) in setting "
                           f"{self.runner.setting} ({self.runner.device}) while {step}: {e}")

    def clean(self) -> None:
        """lmms-eval calls this after each evaluation to free the model. Ours is shared by every setting of the job
        (``inference._shared_adapter``) and is freed with the process, so there is nothing to release. lmms-eval's
        own ``clean`` spends about 1 s per setting in two full garbage collections (measured)."""

    def _answer(self, context: str, doc_to_visual, doc_id: int, task: str, split: str) -> str:
        from ..video import read_extracted

        doc = self.task_dict[task][split][doc_id]
        # the local task's own id, else the dataset stage's id of a real task's document
        sample_id = str(doc.get("sample_id") or f"{task}/{doc_id}")
        height, width = self.sampling.size
        try:
            if self.frames_dir:  # the workflow: frame extraction decoded every document's video already
                path = os.path.join(self.frames_dir, f"{sample_id}.npz")
                step = f"reading the extracted frames of {sample_id}"
                if not os.path.exists(path):
                    raise ConfigError(f"task {task}, document {doc_id}: no extracted frames at {path}; the dataset "
                                      "stage did not list this document (were scoring.tasks or scoring.limit changed "
                                      "outside the workflow?)")
                frames, timestamps = read_extracted(path)
            else:
                visuals = [v for v in doc_to_visual(doc) if isinstance(v, str)]
                if not visuals:
                    raise VideoError("missing", "", f"task {task}: document {doc_id} has no video")
                path = visuals[0]
                step = f"decoding {path} to {width}x{height} frames"
                video = decoded_frames(path, self.sampling)
                frames, timestamps = video.frames, video.timestamps
            if not len(frames):  # the reason is in `failures`, from the stage that found it
                raise VideoError("zero_frames", path, "frame extraction kept no frames of this video")
            question, options = split_choices(context)
            step = f"answering from {len(frames)} frames of {width}x{height}"
            events = json.loads(doc.get("events") or "[]")  # the local task's ground truth (synthetic samples)
            predicted, rows = self.runner.answer(sample_id, str(doc.get("qtype", "")), frames, question,
                                                 options, events=events, timestamps=timestamps)
        except VideoError as e:
            # in lmms-eval's own log too, so a run of the CLI without a record file shows every failed document;
            # its empty answer is scored (wrong), so the document counts in the task's results
            logger.warning(f"hybridreduce: task {task}, document {doc_id} ({sample_id}): the video could not be "
                           f"used ({e.kind}: {e.reason}; {e.path}); answered with no option, scored as wrong")
            self.failed += 1
            self._record([self.runner.failure(sample_id, e.kind, e.reason, e.path)], task, doc_id)
            return ""
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
            oom = self._out_of_memory(e, sample_id, task, doc_id, step)
            if oom is None:
                raise
            raise oom from e
        self._record(rows, task, doc_id)
        return predicted or ""

    def generate_until(self, requests) -> list[str]:
        self.failed = 0
        answers = [self._answer(context, doc_to_visual, doc_id, task, split)
                   for context, _gen_kwargs, doc_to_visual, doc_id, task, split
                   in tqdm([r.args for r in requests], desc="hybridreduce", mininterval=5)]
        if self.failed:
            logger.warning(f"hybridreduce: {self.failed} of {len(requests)} documents had a video that could not be "
                           "used (see the warnings above); they are scored as wrong answers")
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("hybridreduce answers multiple-choice tasks with generate_until (option letter); "
                                  "loglikelihood / multiple_choice output types are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("hybridreduce does not support multi-round generation")
