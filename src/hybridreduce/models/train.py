"""Train the tiny video VLMs end to end on the synthetic benchmark (vision encoder + projector + LLM).

Training samples are rendered in memory from the ``train`` split's seeds, only at the frame indices that
frame extraction would sample, resized to the model's input size; validation uses the ``val`` split; the study's
``test`` split goes through real mp4 files and frame extraction. The loss is cross-entropy on the answer letter
at the last prompt position. Saved with ``save_pretrained`` together with the tokenizer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..dataset.synthetic import SyntheticSpec, render_sample
from ..reduction.engine import PromptLayout, prefill
from ..reduction.methods import plan
from .adapter import TinyVLMAdapter


class Pool:
    """Rendered samples of one split: frames ``(n, T, 3, S, S)`` float in [0, 1], prompts and answers."""

    def __init__(self, spec: SyntheticSpec, count: int, num_frames: int, size: int):
        idx = np.linspace(0, spec.num_frames - 1, num_frames, dtype=np.int64)
        frames, self.samples = [], []
        for i in range(count):
            video, sample = render_sample(spec, i, idx)
            frames.append(torch.from_numpy(video))
            self.samples.append(sample)
        x = torch.stack(frames).permute(0, 1, 4, 2, 3).float() / 255.0  # (n, T, 3, H, W)
        n, t = x.shape[:2]
        if x.shape[-2:] != (size, size):  # as frame extraction resizes the test videos
            x = F.interpolate(x.flatten(0, 1), size=(size, size), mode="bilinear", antialias=True)
        self.frames = x.reshape(n, t, 3, size, size)

    def __len__(self) -> int:
        return len(self.samples)


def _batch_embeds(adapter: TinyVLMAdapter, frames: torch.Tensor, samples) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """``[prefix][V][Q]`` for a batch, right-padded. Returns embeds ``(B, L, D)``, the index of each sample's last
    prompt token ``(B,)`` and the answer token ids ``(B,)``. Right padding is invisible to a causal model at the
    positions we read."""
    b = frames.shape[0]
    vision = adapter.model.video_features(frames.flatten(0, 1))  # (B*T, h, w, D)
    vision = vision.reshape(b, -1, vision.shape[-1])
    rows, last, answers = [], [], []
    for i, s in enumerate(samples):
        rows.append(adapter.embed_prompt(vision[i], s.question, s.options)[0])
        last.append(len(rows[-1]) - 1)
        answers.append(adapter.tokenizer.convert_tokens_to_ids(s.answer))
    width = max(len(r) for r in rows)
    embeds = torch.stack([F.pad(r, (0, 0, 0, width - len(r))) for r in rows])
    return embeds, torch.tensor(last), torch.tensor(answers)


def _lr(step: int, steps: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


@torch.no_grad()
def evaluate(adapter: TinyVLMAdapter, pool: Pool, batch_size: int = 32) -> float:
    """Full-token accuracy (greedy among the option letters) on ``pool``."""
    adapter.model.eval()
    correct = 0
    for start in range(0, len(pool), batch_size):
        samples = pool.samples[start : start + batch_size]
        embeds, last, answers = _batch_embeds(adapter, pool.frames[start : start + batch_size], samples)
        logits = adapter.model.language_model(inputs_embeds=embeds).logits[torch.arange(len(samples)), last]
        options = adapter.option_token_ids(4)
        predicted = options[logits[:, options].argmax(-1)]
        correct += int((predicted == answers).sum())
    return correct / len(pool)


def _reduced_loss(adapter: TinyVLMAdapter, frames: torch.Tensor, samples, budgets, reduction_cfg: dict,
                  rng: np.random.Generator) -> torch.Tensor:
    """Mean loss of samples run one by one through the layer-wise reduction loop at a random budget."""
    losses = []
    for i, s in enumerate(samples):
        vision = adapter.model.video_features(frames[i])
        vision = vision.reshape(-1, vision.shape[-1])
        row, p, _ = adapter.embed_prompt(vision, s.question, s.options)
        n = len(vision)
        embeds = row[None]
        layout = PromptLayout(torch.arange(p, p + n), torch.arange(p + n, embeds.shape[1]))
        budget = float(rng.choice(budgets))
        schedule, scorer = plan("hybrid_progressive", adapter.stack.layer_types, budget, n, reduction_cfg)
        logits = prefill(adapter.stack, embeds, layout, schedule, scorer, grad=True).logits
        answer = adapter.tokenizer.convert_tokens_to_ids(s.answer)
        losses.append(F.cross_entropy(logits[None], torch.tensor([answer])))
    return torch.stack(losses).mean()


def train(adapter: TinyVLMAdapter, train_pool: Pool, val_pool: Pool, cfg: dict, seed: int,
          reduction_cfg: dict | None = None) -> Iterator[dict]:
    """Train ``adapter.model`` in place; yields one log row per ``log_every`` steps and a final ``val`` row.

    ``cfg``: ``steps``, ``batch_size``, ``lr``, ``weight_decay``, ``warmup``, ``log_every``; with
    ``reduction_budgets`` (and ``reduction_cfg``) each step runs through the reduction loop at a random budget
    (finetuning under reduction).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = adapter.model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.01))
    steps, bs = cfg["steps"], cfg["batch_size"]
    t0, seen, run_loss, run_acc = time.perf_counter(), 0, [], []
    for step in tqdm(range(steps), desc="train", mininterval=5):
        model.train()
        idx = rng.choice(len(train_pool), size=bs, replace=False)
        samples = [train_pool.samples[i] for i in idx]
        frames = train_pool.frames[idx]
        if cfg.get("reduction_budgets"):
            loss, acc = _reduced_loss(adapter, frames, samples, cfg["reduction_budgets"], reduction_cfg, rng), None
        else:
            embeds, last, answers = _batch_embeds(adapter, frames, samples)
            logits = model.language_model(inputs_embeds=embeds).logits[torch.arange(bs), last]
            loss = F.cross_entropy(logits, answers)
            acc = float((logits.argmax(-1) == answers).float().mean())
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, cfg["lr"], cfg.get("warmup", 20))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += bs
        run_loss.append(float(loss.detach()))
        if acc is not None:
            run_acc.append(acc)
        if (step + 1) % cfg.get("log_every", 25) == 0 or step + 1 == steps:
            yield {"step": step + 1, "split": "train", "loss": float(np.mean(run_loss)),
                   "accuracy": float(np.mean(run_acc)) if run_acc else None, "samples_seen": seen,
                   "elapsed_s": time.perf_counter() - t0}
            run_loss, run_acc = [], []
    yield {"step": steps, "split": "val", "loss": None, "accuracy": evaluate(adapter, val_pool),
           "samples_seen": seen, "elapsed_s": time.perf_counter() - t0}


def train_tiny_model(model_cfg: dict, synthetic_cfg: dict, num_frames: int, out_dir: str, seed: int,
                     reduction_cfg: dict | None = None) -> Iterator[dict]:
    """Build the tiny model of ``model_cfg``, train it as ``model_cfg["training"]`` says on the synthetic
    benchmark's ``train`` split (validated on ``val``), and save it with its tokenizer to ``out_dir``.

    Yields the training log rows (see :func:`train`).
    """
    from .build import new_tiny_model

    cfg = model_cfg["training"]
    model, tokenizer = new_tiny_model(model_cfg, seed)
    adapter = TinyVLMAdapter.from_model(model, tokenizer)
    size = model.config.image_size
    spec = {k: v for k, v in synthetic_cfg.items() if k not in ("num_videos", "split")}
    train_pool = Pool(SyntheticSpec.from_config({**spec, "split": "train"}, seed), cfg["train_videos"], num_frames,
                      size)
    val_pool = Pool(SyntheticSpec.from_config({**spec, "split": "val"}, seed), cfg["val_videos"], num_frames, size)
    yield from train(adapter, train_pool, val_pool, cfg, seed, reduction_cfg)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
