"""The inference stage: one (model, pre-LLM method, in-LLM method, budget) setting over the study's samples.

Per sample: encode the video, apply the pre-LLM mask, embed the prompt, solve the schedule for the budget,
time the prefill (warm-up, then the median of repeats), and answer greedily among the option letters.
"""

from __future__ import annotations

import time
import zlib
from functools import partial

import numpy as np
import torch

from .dataset.sample import LETTERS
from .errors import ConfigError
from .models import MAMBA, MLP, load_adapter
from .reduction.engine import prefill
from .reduction.methods import plan
from .redundancy import keep_mask
from .scoring.flops import prefill_flops
from .scoring.latency import peak_memory_mb, reset_peak_memory, timed

PATTERN = {MAMBA: "M", MLP: "-"}


def run_setting(model_name: str, model_cfg: dict, pre: str, pre_q: float, method: str, budget: float,
                samples: list[tuple[dict, np.ndarray]], reduction_cfg: dict, run_cfg: dict, seed: int):
    """Yield ``(table, row)`` pairs for the ``inference``, ``latency`` and ``failures`` tables."""
    device = torch.device(run_cfg.get("device", "cpu"))
    adapter = load_adapter(model_name, model_cfg, device=str(device))
    stack = adapter.stack
    pattern = "".join(PATTERN.get(t, "*") for t in stack.layer_types)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for sample, frames in samples:
        sid = sample["sample_id"]
        key = dict(model=model_name, pre_method=pre, method=method, budget=budget, sample_id=sid)
        reset_peak_memory(device)
        t0 = time.perf_counter()
        grid = adapter.encode_video(frames)
        vision_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        keep = None if pre == "none" else keep_mask(pre, grid, pre_q, seed=zlib.crc32(f"{seed}:{sid}".encode()))
        pre_s = time.perf_counter() - t0
        prompt = adapter.build_prompt(grid, keep, sample["question"], sample["options"])
        n_in = len(prompt.layout.vision_idx)
        try:
            schedule, scorer = plan(method, stack.layer_types, budget, n_in, reduction_cfg, seed=seed)
        except ConfigError as e:
            yield "failures", {"sample_id": sid, "stage": f"infer {model_name}/{pre}/{method}/{budget}",
                               "path": model_cfg.get("path") or "", "kind": "infeasible_schedule", "reason": str(e)}
            continue
        warmup, repeats = run_cfg.get("warmup", 1), run_cfg.get("repeats", 3)
        run = partial(prefill, stack, prompt.embeds, prompt.layout)
        result, prefill_s = timed(partial(run, schedule, scorer), device, warmup, repeats)
        # The baseline is timed here too: speedups compare runs on the same machine in the same process.
        none_s = prefill_s if not schedule.stage_layers else timed(run, device, warmup, repeats)[1]
        options = adapter.option_token_ids(len(sample["options"]))
        predicted = LETTERS[int(torch.argmax(result.logits[options]))]
        n_text = prompt.embeds.shape[1] - n_in
        per_layer = result.vision_per_layer
        realised = sum(per_layer) / (len(per_layer) * max(n_in, 1))
        yield "inference", {
            **key, "pre_q": pre_q if pre != "none" else 0.0, "qtype": sample.get("qtype", ""),
            "answer": sample["answer"], "predicted": predicted, "correct": predicted == sample["answer"],
            "vision_tokens_full": prompt.num_vision_full, "vision_tokens_in": n_in,
            "pre_kept_fraction": n_in / prompt.num_vision_full,
            "stage_layers": list(schedule.stage_layers), "keep_counts": list(schedule.keep_counts),
            "vision_per_layer": per_layer, "realised_budget": realised,
            "final_kept_fraction": per_layer[-1] / max(n_in, 1),
            "overall_budget": n_in / prompt.num_vision_full * realised,
            "flops": prefill_flops(stack, [n_text + n for n in per_layer]),
            "flops_none": prefill_flops(stack, [n_text + n_in] * len(per_layer)),
            "layer_pattern": pattern,
        }
        yield "latency", {
            **key, "device": device_name, "vision_encode_s": vision_s, "pre_llm_s": pre_s, "prefill_s": prefill_s,
            "prefill_none_s": none_s, "speedup": none_s / prefill_s, "score_s": result.score_s,
            "total_s": vision_s + pre_s + prefill_s,
            "repeats": run_cfg.get("repeats", 3), "peak_mem_mb": peak_memory_mb(device),
        }
