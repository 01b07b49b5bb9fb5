"""The inference stage: one (model, pre-LLM method, in-LLM method, budget) setting, one sample at a time.

Per sample: encode the video (or read the workflow's encoding of it), apply the pre-LLM mask, embed the prompt, solve the schedule for the budget,
time the prefill (warm-up, then the median of repeats), and answer greedily among the option letters. The
lmms-eval plugin model (:mod:`.lmms.model`) drives it, so answering and measuring are one pass.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections import OrderedDict
from dataclasses import replace
from functools import lru_cache, partial

import numpy as np
import torch

from .dataset.sample import LETTERS
from .dataset.synthetic import evidence_mask
from .errors import ConfigError, InfeasibleBudget
from .models import layer_pattern, load_adapter
from .reduction.engine import prefill
from .reduction.methods import method_prefill, plan, realised_schedule
from .redundancy import apply_masks, load_grid, reduce_grid
from .scoring.flops import prefill_flops
from .scoring.latency import peak_memory_mb, reset_peak_memory, timed
from .setting import Setting

_baseline_s: dict[tuple, float] = {}  # unreduced prefill time per model, device, pre-LLM input and sample
# Vision tokens per (model, device, sample) with the time their encoding took: every setting of an infer job
# answers the same samples, and the encoder does not depend on the setting, so each sample is encoded once per job.
VISION_CACHE_BYTES = 1 << 30
_vision: OrderedDict[tuple, tuple] = OrderedDict()


@lru_cache(maxsize=1)
def _shared_adapter(model_name: str, model_cfg_json: str, device: str):
    """The adapter of the last model loaded in this process: an inference job runs every setting of one model, so
    its weights are read once (inference never changes them)."""
    return load_adapter(model_name, json.loads(model_cfg_json), device=device)


def _evidence_survival(evidence, evidence_in, layout, result, schedule) -> dict:
    """The evidence columns of an ``inference`` row: evidence tokens in the whole video, entering the LLM (after
    the pre-LLM method) and kept by each stage; NULL without ground truth."""
    if evidence is None:
        return {"evidence_tokens": None, "evidence_per_stage": None, "evidence_survival": None}
    total = int(evidence.sum())
    is_evidence = torch.zeros(int(layout.query_idx.max()) + 1, dtype=torch.bool)
    is_evidence[layout.vision_idx.cpu()[evidence_in]] = True
    counts = [int(evidence_in.sum())] + [int(is_evidence[result.stage_keep[layer].cpu()].sum())
                                        for layer in schedule.stage_layers]
    return {"evidence_tokens": total, "evidence_per_stage": counts,
            "evidence_survival": counts[-1] / total if total else None}


def with_query(adapter, grid, question: str, options: list[str]):
    """``grid`` with the question's token embeddings at the LLM input (``TokenGrid.query``): the query part of the
    model's own prompt for it, which the query-conditioned pre-LLM methods compare the vision tokens with."""
    if grid.query is not None:
        return grid
    prompt = adapter.build_prompt(grid, None, question, options)
    return replace(grid, query=prompt.embeds[0, prompt.layout.query_idx].detach().float())


# A question of which more than this share of tokens is unknown to the model's tokenizer is flagged: the model
# cannot read it, so its answer is a guess (the tiny models' word-level tokenizer on questions about own videos).
UNREADABLE_SHARE = 0.2


class SettingRunner:
    """Answers samples under one setting and returns the ``inference`` / ``latency`` / ``failures`` rows."""

    def __init__(self, setting: Setting):
        """``setting.pre_masks``: the redundancy stage's masks of this model and pre-LLM method (an npz of
        :func:`~.redundancy.mask_arrays` per ``<sample>/q=<q>/``), which the setting applies; without it (the
        plugin used on its own) the pre-LLM method runs here."""
        self.device = torch.device(setting.run.device)
        self.adapter = _shared_adapter(setting.model_name, json.dumps(setting.model, sort_keys=True), str(self.device))
        self.model_name, self.model_path = setting.model_name, setting.model.get("path") or ""
        self.pre, self.pre_q, self.method, self.budget = setting.pre, setting.pre_q, setting.method, setting.budget
        self.reduction_cfg, self.run, self.seed = setting.reduction, setting.run, setting.seed
        self.vision_dir = setting.vision_dir
        self.pattern = layer_pattern(self.adapter.stack.layer_types)
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.answered = 0  # samples answered so far: the first run.latency_samples are timed
        self.masks = None  # sample id -> its arrays at pre_q (read into memory: lmms-eval pickles the model)
        pre, pre_q, pre_masks = setting.pre, setting.pre_q, setting.pre_masks
        if pre != "none" and pre_masks:
            with np.load(pre_masks) as data:
                rates = sorted({k.split("/")[-2] for k in data.files})
                if data.files and f"q={pre_q}" not in rates:
                    raise ConfigError(f"{pre_masks}: no {pre} masks at pre_llm_q {pre_q} (it has {', '.join(rates)})"
                                      ": inference.pre_llm_q must be one of redundancy.q")
                self.masks = {}
                for key in data.files:
                    sample_id, rate, name = key.rsplit("/", 2)
                    if rate == f"q={pre_q}":
                        self.masks.setdefault(sample_id, {})[name] = data[key]

    def _encode(self, sample_id: str, frames: np.ndarray, timestamps: np.ndarray | None):
        """The sample's vision token grid and the seconds its encoding took: the workflow's ``encode_vision``
        output (``vision_dir``), else encoded here; cached per job (see ``_vision``)."""
        key = (self.model_name, str(self.device), sample_id, frames.shape, timestamps.tobytes()
               if timestamps is not None else None)
        if key in _vision:
            _vision.move_to_end(key)
            return _vision[key]
        if self.vision_dir:
            path = os.path.join(self.vision_dir, f"{sample_id}.safetensors")
            if not os.path.exists(path):
                raise ConfigError(f"no vision tokens of sample {sample_id} at {path} (encode_vision's output)")
            _vision[key] = load_grid(path, self.device)
        else:
            t0 = time.perf_counter()
            grid = self.adapter.encode_video(frames, timestamps)
            _vision[key] = grid, time.perf_counter() - t0
        while sum(g.embeddings.nbytes for g, _ in _vision.values()) > VISION_CACHE_BYTES and len(_vision) > 1:
            _vision.popitem(last=False)
        return _vision[key]

    def _pre_llm(self, sample_id: str, grid, question: str, options: list[str]):
        """The grid the pre-LLM method leaves, its keep mask (None: all kept) and the method's time."""
        if self.pre == "none":
            return grid, None, 0.0
        if self.masks is not None:
            if sample_id not in self.masks:
                raise ConfigError(f"no pre-LLM mask for sample {sample_id} ({self.pre}, q {self.pre_q}) in the "
                                  "redundancy stage's output")
            return apply_masks(grid, self.masks[sample_id])
        grid = with_query(self.adapter, grid, question, options)  # for the query-conditioned methods
        t0 = time.perf_counter()
        seed = zlib.crc32(f"{self.seed}:{sample_id}".encode())
        grid, keep = reduce_grid(self.pre, grid, self.pre_q, seed=seed)
        return grid, keep, time.perf_counter() - t0

    @property
    def setting(self) -> str:
        return f"{self.model_name}/{self.pre}/{self.method}/{self.budget}"

    def failure(self, sample_id: str, kind: str, reason: str, path: str = "") -> tuple[str, dict]:
        return "failures", {"sample_id": sample_id, "stage": f"infer {self.setting}", "path": path or self.model_path,
                            "kind": kind, "reason": reason}

    def answer(self, sample_id: str, qtype: str, frames: np.ndarray, question: str, options: list[str],
               events: list[dict] | None = None, timestamps: np.ndarray | None = None
               ) -> tuple[str | None, list[tuple[str, dict]]]:
        """The predicted option letter (``None`` when the setting cannot run on this sample) and the rows.

        ``frames``: ``(T, H, W, 3)`` uint8, as frame extraction returns them, sampled at ``timestamps`` (seconds).
        ``events``: the synthetic generator's ground truth, if any; its evidence tokens (:func:`evidence_mask`)
        feed the ``oracle`` method and the evidence-survival columns.
        """
        adapter, stack, device = self.adapter, self.adapter.stack, self.device
        key = dict(model=self.model_name, pre_method=self.pre, method=self.method, budget=self.budget,
                   sample_id=sample_id)
        reset_peak_memory(device)
        grid, vision_s = self._encode(sample_id, frames, timestamps)
        # a merging method also replaces the kept tokens by the merged ones
        grid, keep, pre_s = self._pre_llm(sample_id, grid, question, options)
        prompt = adapter.build_prompt(grid, keep, question, options)
        unknown = adapter.unknown_share(question, options)
        if unknown > UNREADABLE_SHARE:
            print(f"warning: sample {sample_id} ({self.setting}): {unknown:.0%} of the question's tokens are unknown "
                  f"to {self.model_name}'s tokenizer; its answer is a guess (the tiny models read only the synthetic "
                  "benchmark's words: use a real checkpoint for your own videos)", flush=True)
        n_in = len(prompt.layout.vision_idx)
        evidence = evidence_mask(events, timestamps, tuple(grid.shape[1:])) if events and timestamps is not None \
            else None
        evidence_in = None
        if evidence is not None:
            flat = torch.from_numpy(evidence.reshape(-1))
            evidence_in = flat[keep.flatten().cpu()] if keep is not None else flat
            prompt.layout = replace(prompt.layout, evidence=evidence_in.to(self.device))
        elif self.method == "oracle":
            return None, [self.failure(sample_id, "no_ground_truth", "the oracle method needs the synthetic "
                                       "benchmark's ground-truth evidence tokens, which this sample has none of")]
        try:
            schedule, scorer = plan(self.method, stack.layer_types, self.budget, n_in, self.reduction_cfg,
                                    seed=self.seed)
        except ConfigError as e:
            return None, [self.failure(sample_id, "infeasible_schedule", str(e))]
        limit = self.run.latency_samples
        timing = limit is None or self.answered < limit
        self.answered += 1
        warmup, repeats = (self.run.warmup, self.run.repeats) if timing else (0, 1)
        run = partial(prefill, stack, prompt.embeds, prompt.layout)
        # each vision token's place in its frame (tokens are in (t, i, j) order), for FrameFusion's same-position merge
        t, h, w = grid.shape
        kept = torch.nonzero(keep.flatten()).view(-1) if keep is not None else torch.arange(t * h * w)
        method_run = method_prefill(self.method, stack, prompt.embeds, prompt.layout, schedule, scorer, self.budget,
                                    self.reduction_cfg, (kept % (h * w)).to(device))
        try:
            result, prefill_s = timed(method_run, device, warmup, repeats)
        except InfeasibleBudget as e:  # an input-dependent method that cannot reach the budget on this sample
            return None, [self.failure(sample_id, "infeasible_schedule", str(e))]
        schedule = realised_schedule(schedule, result)
        # The baseline is timed in this process too, so a speedup compares runs on one machine. The settings of a
        # job share it: timed once per (model, pre-LLM input, sample), by the first setting that needs it.
        baseline = (self.model_name, str(device), self.pre, self.pre_q, sample_id, n_in, warmup, repeats)
        if not timing:
            none_s = None
        elif not schedule.stage_layers:  # this run is the baseline
            none_s = prefill_s
            _baseline_s.setdefault(baseline, prefill_s)
        else:
            if baseline not in _baseline_s:
                _baseline_s[baseline] = timed(run, device, warmup, repeats)[1]
            none_s = _baseline_s[baseline]
        option_ids = adapter.option_token_ids(len(options))
        predicted = LETTERS[int(torch.argmax(result.logits[option_ids]))]
        n_text = prompt.embeds.shape[1] - n_in
        per_layer = result.vision_per_layer
        realised = sum(per_layer) / (len(per_layer) * max(n_in, 1))
        inference = {
            **key, "pre_q": self.pre_q if self.pre != "none" else 0.0, "qtype": qtype, "predicted": predicted,
            "vision_tokens_full": prompt.num_vision_full, "vision_tokens_in": n_in,
            "pre_kept_fraction": n_in / prompt.num_vision_full,
            "stage_layers": list(schedule.stage_layers), "rank_layers": list(schedule.ranking_layers),
            "keep_counts": list(schedule.keep_counts),
            "vision_per_layer": per_layer, "realised_budget": realised,
            "final_kept_fraction": per_layer[-1] / max(n_in, 1),
            "overall_budget": n_in / prompt.num_vision_full * realised,
            # zeroed tokens are still processed: zero_out saves no compute
            "flops": prefill_flops(stack, [n_text + (n_in if schedule.zero_out else n) for n in per_layer]),
            "flops_none": prefill_flops(stack, [n_text + n_in] * len(per_layer)),
            "layer_pattern": self.pattern,
            "unknown_share": unknown, "question_unreadable": unknown > UNREADABLE_SHARE,
            **_evidence_survival(evidence, evidence_in, prompt.layout, result, schedule),
        }
        latency = {
            **key, "device": self.device_name, "vision_encode_s": vision_s, "pre_llm_s": pre_s,
            "prefill_s": prefill_s, "prefill_none_s": none_s, "speedup": none_s / prefill_s if none_s else None,
            "score_s": result.score_s, "total_s": vision_s + pre_s + prefill_s, "repeats": repeats,
            "peak_mem_mb": peak_memory_mb(device),
        }
        # only timed samples (inference.latency_samples) have a latency row
        return predicted, [("inference", inference)] + ([("latency", latency)] if timing else [])
