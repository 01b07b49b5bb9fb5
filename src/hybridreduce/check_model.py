"""``python -m hybridreduce check-model --configfile config/paper.yaml``: what each model of a study will be, read
before a long GPU job, without loading any weights.

For every model in ``inference.models`` it builds the architecture on PyTorch's meta device from the checkpoint's
config and processor (a wrong path or an architecture the adapter does not read fails here, naming the config field),
and prints: the decoder's layer types (Nemotron-H notation), the vision token grid of the configured frames (the
model's own video processor on blank frames of ``frames.size``; ``frames.max_frames`` for fps sampling, the most a
video can give), the schedule :func:`~.reduction.methods.plan` gives every in-LLM method at every budget (stage
layers, kept tokens, realised budget, or why it is infeasible), analytic prefill FLOPs (:mod:`.scoring.flops`), and a
memory estimate: the weights in the checkpoint's dtype plus one layer's hidden states at full tokens in float32 (a
lower bound: the layer-wise prefill holds one layer's activations at a time, the mixers' inner activations add to it).

A model the study finetunes (``path: null`` with ``training.init_from``) is checked as its base; one the workflow
builds from its config (``path: null``, no base) is built at random on the spot (tiny models only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .config import inference_settings, load_config, model_paths
from .errors import ConfigError
from .models import layer_pattern, load_adapter
from .models.stack import ATTENTION, DELTANET, MAMBA, MLP
from .reduction.methods import get_method, plan
from .scoring.flops import prefill_flops

QUESTION, OPTIONS = "What colour was the circle that appeared?", ["red", "green", "blue", "yellow"]


@dataclass(frozen=True)
class ModelReport:
    """One model's check: the text lines printed for it (``ok`` False: it failed, ``lines`` say why)."""

    name: str
    ok: bool
    lines: tuple[str, ...]


def frames_for(config: dict) -> tuple[int, int, int, str]:
    """``(frames, height, width, how)``: the most frames a video gives under the config's sampling and their size."""
    frames = config["frames"]
    if not frames.get("size"):
        raise ConfigError("frames.size: check-model needs the frame size (null keeps each video's own resolution, "
                          "which is known only once a video is decoded)")
    height, width = frames["size"]
    if frames["sampling"] == "fps":
        return frames["max_frames"], height, width, f"fps sampling at {frames.get('fps')} fps, at most " \
                                                    f"{frames['max_frames']} frames"
    return frames["num_frames"], height, width, f"uniform sampling, {frames['num_frames']} frames"


def _adapter(name: str, config: dict, paths: dict[str, str]):
    """The model's architecture on the meta device, and a note on where it comes from."""
    cfg = config["models"][name]
    base = (cfg.get("training") or {}).get("init_from")
    if cfg.get("path"):
        return load_adapter(name, {**cfg, "path": paths[name]}, weights=False), f"checkpoint {paths[name]}"
    if base:
        adapter, where = _adapter(base, config, paths)
        return adapter, f"finetuned by the study from {base} ({where})"
    if cfg.get("kind", "tiny") != "tiny":
        raise ConfigError(f"models.{name}.path: a '{cfg.get('kind')}' model needs a checkpoint path")
    from .models.adapter import TinyVLMAdapter
    from .models.build import new_tiny_model

    model, tokenizer = new_tiny_model(cfg, seed=0)
    return TinyVLMAdapter.from_model(model.eval(), tokenizer, name), "built by the study from its config"


def _size(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:.2f} MB"


def _counts(types: list[str]) -> str:
    names = {MAMBA: "Mamba-2", DELTANET: "Gated DeltaNet", ATTENTION: "attention", MLP: "MLP"}
    return ", ".join(f"{types.count(t)} {label}" for t, label in names.items() if types.count(t))


def check_model(name: str, config: dict, paths: dict[str, str]) -> ModelReport:
    """The check of ``models.<name>`` (see the module docstring)."""
    try:
        adapter, where = _adapter(name, config, paths)
        num_frames, height, width, how = frames_for(config)
        t, h, w = adapter.grid_shape(num_frames, height, width)
    except (ConfigError, OSError, ValueError) as e:
        return ModelReport(name, False, (f"{name}: FAILED: {e}",))
    stack, types = adapter.stack, adapter.stack.layer_types
    prefix, query = adapter.prompt_ids(QUESTION, OPTIONS)
    n_vision, n_text = t * h * w, len(prefix) + len(query)
    params = list(adapter.model.parameters())
    dtype = getattr(adapter.model.config, "dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    weights = sum(p.numel() for p in params) * torch.tensor([], dtype=dtype).element_size()
    hidden = (n_vision + n_text) * stack.model.get_input_embeddings().weight.shape[1] * 4
    full = prefill_flops(stack, [n_text + n_vision] * len(types))
    lines = [
        f"{name} ({config['models'][name].get('kind', 'tiny')}; {where}): {type(adapter.model).__name__}",
        f"  decoder: {len(types)} layers {layer_pattern(types)} ({_counts(types)})",
        f"  vision tokens: {t} x {h} x {w} = {n_vision} for {how} of {height} x {width} px; {n_text} text tokens",
        f"  memory: {sum(p.numel() for p in params) / 1e6:.2f} M parameters = {_size(weights)} in "
        f"{str(dtype).removeprefix('torch.')}; hidden states at full tokens {_size(hidden)} (float32, one layer)",
        f"  prefill FLOPs at full tokens: {full / 1e9:.3f} GFLOP",
        "  method                budget  stages (layer: kept vision tokens)             realised  FLOPs / full",
    ]
    settings = sorted({(m, b) for model, pre, m, b in inference_settings(config) if model == name and pre == "none"},
                      key=lambda s: (s[0] != "none", s[0], -s[1]))
    for method, budget in settings:
        lines.append(f"  {method:21s} {budget:<7g} " + _schedule(method, budget, stack, n_vision, n_text, full, config))
    return ModelReport(name, True, tuple(lines))


def _schedule(method: str, budget: float, stack, n_vision: int, n_text: int, full: float, config: dict) -> str:
    """One method's line: its stages at ``budget``, realised budget and FLOPs against ``full`` (unreduced)."""
    if get_method(method).runner is not None and budget < 1:
        return "decided per video while the layers run (input-dependent method)"
    try:
        schedule, _ = plan(method, stack.layer_types, budget, n_vision, config.get("reduction") or {})
    except ConfigError as e:
        return f"infeasible: {e}"
    per_layer = schedule.tokens_per_layer()
    stages = ", ".join(f"{layer}: {k}" for layer, k in zip(schedule.stage_layers, schedule.keep_counts)) or "-"
    flops = prefill_flops(stack, [n_text + (n_vision if schedule.zero_out else n) for n in per_layer])
    return f"{stages:46s} {schedule.realised_budget:<9.3f} {flops / full:.3f}"


def run(configfiles: list[str], repo_dir: str = ".", models: list[str] | None = None) -> tuple[list[ModelReport], int]:
    """The checks of a study config's inference models (or ``models``); the exit status (1 if one failed)."""
    for path in configfiles:
        if not os.path.isfile(path):
            raise ConfigError(f"--configfile {path}: no such file")
    config = load_config(repo_dir, *configfiles)
    names = models or list(config["inference"]["models"])
    unknown = [m for m in names if m not in config["models"]]
    if unknown:
        raise ConfigError(f"--models: {', '.join(unknown)} not under models (known: {', '.join(config['models'])})")
    paths = model_paths(config, os.path.join("results", config["study"]), repo_dir)
    reports = [check_model(name, config, paths) for name in names]
    return reports, 0 if all(r.ok for r in reports) else 1
