"""The probing stage for one model (STUDY.md §4): importance sparsity per layer, cross-layer stability, and how
much of the discarded tokens' information survives a reduction at each scoring layer (retention probes).

Probing needs many samples for its linear probes, so it runs on its own probe set: videos of the synthetic
benchmark's ``val`` split rendered in memory at the frames frame extraction would sample (as training does).

Retention at scoring layer ``l`` with keep ratio ``r``:

* ``state``: keep the top ``r`` of the vision tokens by the layer's own importance (the paper's score); the target
  is the PCA-reduced mean of the *discarded* tokens' layer-``l`` input states, predicted by a ridge probe from
  the last query token's final hidden state.
* ``event``: drop every vision token of the frames in which an event is visible; the target is the first event's
  colour, predicted by a logistic probe.

Controls: the same tokens removed at the input (floor) and nothing removed (ceiling);
``retention = (score_l - floor) / (ceiling - floor)``, with a confidence interval over resampled splits.

Evidence ranking (``evidence_ranking``): the generator knows which vision tokens show the asked-about events
(:func:`~hybridreduce.dataset.synthetic.evidence_mask`); per scoring layer and score variant, the ROC-AUC and
recall@k (k = ``topk_frac`` of N) of those tokens on the unreduced forward. Variants: ``attention`` (attention
layers), ``mamba_decay_free`` (the paper's Mamba score) and its variants ``mamba_decay``, ``mamba_signed``,
``mamba_head_max``, ``mamba_x_norm``, ``mamba_clip`` (Mamba layers; :data:`~.record.MAMBA_VARIANTS`), ``last_token`` (the
layer's score with the last token as the query, FastV's), and two controls: ``norm`` (the token's hidden-state
norm at the layer's input, a saliency score that ignores the question) and ``random``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..dataset.synthetic import COLOURS, SyntheticSpec, evidence_mask
from ..models.adapter import TinyVLMAdapter, load_adapter
from ..training import Pool
from ..reduction.engine import PromptLayout
from . import analysis
from .record import hidden_without, record_layers


def _nulls(row: dict) -> dict:
    """NaN (an undefined statistic, e.g. retention when ceiling = floor) is stored as SQL NULL."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in row.items()}


def _event_frames(sample, num_frames: int, spec: SyntheticSpec) -> np.ndarray:
    """``(T,)`` bool: sampled frames in which any event is visible."""
    idx = np.linspace(0, spec.num_frames - 1, num_frames, dtype=np.int64)
    t = idx / spec.fps
    return np.array([any(e["start_s"] <= ti < e["end_s"] for e in sample.events) for ti in t])


def _evidence_rows(name: str, records, evidence: list[np.ndarray], frac: float, seed: int):
    """``evidence_ranking`` rows: every score variant at every scoring layer (see the module docstring)."""
    rng = np.random.default_rng(seed)
    random = [rng.random(len(e)) for e in evidence]
    layers, types = records[0].layers, records[0].types
    for j, (layer, kind) in enumerate(zip(layers, types)):
        variants = {"last_token": [r.importance_last[j] for r in records],
                    "norm": [np.linalg.norm(r.vision_states[j], axis=-1) for r in records],
                    "random": random}
        if kind == "attention":
            variants["attention"] = [r.importance[j] for r in records]
        else:
            variants["mamba_decay_free"] = [r.importance[j] for r in records]
            for variant in records[0].variants:
                variants[variant] = [r.variants[variant][j] for r in records]
        for score, maps in variants.items():
            yield "evidence_ranking", _nulls({"model": name, "layer": layer, "layer_type": kind, "score": score,
                                              "k_frac": frac, **analysis.evidence_summary(maps, evidence, frac,
                                                                                         rng=seed)})


def probe_model(name: str, model_cfg: dict, synthetic_cfg: dict, num_frames: int, cfg: dict, seed: int
                ) -> Iterator[tuple[str, dict]]:
    """Yield ``(table, row)`` for ``layer_sparsity``, ``layer_stability`` and ``probe_retention``."""
    torch.manual_seed(seed)
    adapter = load_adapter(name, model_cfg)
    if not isinstance(adapter, TinyVLMAdapter):
        raise NotImplementedError("probing runs on the synthetic benchmark's ground truth: tiny models only")
    spec = SyntheticSpec.for_split(synthetic_cfg, "val", seed)
    pool = Pool(spec, cfg["num_videos"], num_frames, adapter.model.config.image_size)
    keep_ratio = cfg["keep_ratio"]

    records, state_x, state_floor, state_y, event_x, event_floor, colours, ceiling = [], [], [], [], [], [], [], []
    evidence = []
    for i, sample in enumerate(pool.samples):
        frames = pool.batch(i)
        with torch.no_grad():
            vision = adapter.model.video_features(frames)  # (T, h, w, D)
        t, h, w, _ = vision.shape
        mask = evidence_mask(sample.events, pool.timestamps, (h, w))
        evidence.append(mask.reshape(-1) if mask is not None else np.zeros(t * h * w, dtype=bool))
        row, p, _ = adapter.embed_prompt(vision.reshape(t * h * w, -1), sample.question, sample.options)
        layout = PromptLayout(torch.arange(p, p + t * h * w), torch.arange(p + t * h * w, row.shape[0]))
        embeds = row[None].detach()
        rec = record_layers(adapter.stack, embeds, layout)
        records.append(rec)
        ceiling.append(rec.last_hidden)
        n = t * h * w
        k = max(1, int(round(keep_ratio * n)))
        xs, fs, ys = [], [], []
        for j, layer in enumerate(rec.layers):
            order = np.argsort(-rec.importance[j], kind="stable")
            kept, dropped = np.sort(order[:k]), order[k:]
            keep = layout.vision_idx[torch.from_numpy(kept)]
            xs.append(hidden_without(adapter.stack, embeds, layout, layer, keep))
            fs.append(hidden_without(adapter.stack, embeds, layout, 0, keep))
            ys.append(rec.vision_states[j, dropped].mean(0))
        state_x.append(xs)
        state_floor.append(fs)
        state_y.append(ys)
        # event: every token of the frames showing an event is dropped
        visible = np.repeat(_event_frames(sample, num_frames, spec), h * w)
        keep = layout.vision_idx[torch.from_numpy(np.flatnonzero(~visible))]
        event_x.append([hidden_without(adapter.stack, embeds, layout, layer, keep) for layer in rec.layers])
        event_floor.append(hidden_without(adapter.stack, embeds, layout, 0, keep))
        colours.append(list(COLOURS).index(sample.events[0]["colour"]))

    layers, types = records[0].layers, records[0].types
    for score_name, maps in (("decay_free", [r.importance for r in records]),
                             ("decay", [r.variants["mamba_decay"] for r in records])):
        for row in analysis.sparsity_summary(maps, rng=seed):
            j = row.pop("layer")
            yield "layer_sparsity", _nulls({"model": name, "score": score_name, "layer": layers[j],
                                            "layer_type": types[j], **row})
    yield from _evidence_rows(name, records, evidence, cfg["topk_frac"], seed)
    for row in analysis.stability_summary([r.importance for r in records], frac=cfg["topk_frac"]):
        a, b = row.pop("layer_a"), row.pop("layer_b")
        row.pop("n_spearman", None)
        yield "layer_stability", _nulls({"model": name, "layer_a": layers[a], "layer_b": layers[b], **row})

    state_x, state_floor, state_y = np.array(state_x), np.array(state_floor), np.array(state_y)  # (n, S, D)
    event_x, event_floor, colours = np.array(event_x), np.array(event_floor), np.array(colours)
    ceiling = np.array(ceiling)
    n = len(records)
    # The event probe's floor and ceiling do not depend on the layer, and every layer's bootstrap draws the same
    # splits (one seed): they are fitted once per split, not once per layer (logistic fits were ~70% of a probe job)
    event_controls: dict[tuple[bytes, bytes], tuple[float, float]] = {}
    for j, (layer, kind) in enumerate(zip(layers, types)):
        def fit_state(train, test, j=j):
            y = analysis.pca_targets(state_y[train, j], state_y[:, j], cfg["pca_components"])
            return tuple(analysis.probe_r2(x, y, train, test) for x in (state_x[:, j], state_floor[:, j], ceiling))

        def fit_event(train, test, j=j):
            split = (np.asarray(train).tobytes(), np.asarray(test).tobytes())
            if split not in event_controls:
                event_controls[split] = tuple(analysis.probe_accuracy(x, colours, train, test)
                                              for x in (event_floor, ceiling))
            return (analysis.probe_accuracy(event_x[:, j], colours, train, test), *event_controls[split])

        for target, fit in (("state", fit_state), ("event", fit_event)):
            res = analysis.bootstrap_retention(fit, n, n_boot=cfg["n_boot"], rng=seed, test_frac=cfg["test_frac"])
            yield "probe_retention", _nulls({"model": name, "layer": layer, "layer_type": kind, "target": target,
                                             "keep_ratio": keep_ratio if target == "state" else None, **res})
