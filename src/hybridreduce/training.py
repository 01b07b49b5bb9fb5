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

from .dataset.retrieval import RetrievalSpec, make_sequence, sequences
from .dataset.sample import LETTERS
from .dataset.synthetic import SyntheticSpec, render_sample, training_questions
from .errors import ConfigError
from .layout import PromptLayout
from .models.adapter import TinyVLMAdapter
from .reduction.engine import prefill
from .reduction.methods import plan


class Pool:
    """Rendered samples of one split: frames ``(n, T, 3, S, S)`` uint8 (resized as frame extraction resizes the
    test videos, then rounded like decoded frames; :meth:`batch` gives them as float in [0, 1]), samples (one
    benchmark question each), ``turns``: every question each video can answer (see :func:`training_questions`),
    and ``turn_types``: the question type of each turn."""

    def __init__(self, spec: SyntheticSpec, count: int, num_frames: int, size: int):
        idx = np.linspace(0, spec.num_frames - 1, num_frames, dtype=np.int64)
        self.frames = torch.empty((count, num_frames, 3, size, size), dtype=torch.uint8)
        self.samples, self.turns, self.turn_types, self.timestamps = [], [], [], idx / spec.fps
        for i in range(count):
            video, sample = render_sample(spec, i, idx)
            x = torch.from_numpy(video).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
            if x.shape[-2:] != (size, size):  # as frame extraction resizes the test videos
                x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
                x = x.clamp(0, 255).round().to(torch.uint8)
            self.frames[i] = x
            self.samples.append(sample)
            rng = np.random.default_rng([spec.seed, i, 1])
            questions = training_questions(sample.events, rng)
            self.turns.append([(q, o, LETTERS[a]) for _, q, o, a in questions])
            self.turn_types.append([qtype for qtype, *_ in questions])

    def batch(self, indices) -> torch.Tensor:
        """Frames of ``indices`` as ``(B, T, 3, S, S)`` float in [0, 1]."""
        return self.frames[indices].float() / 255.0

    def __len__(self) -> int:
        return len(self.samples)

    def questions(self, indices, conversation: bool) -> list[list[tuple[str, list[str], str]]]:
        """Per sample: all its turns (``conversation``) or only its benchmark question."""
        if conversation:
            return [self.turns[i] for i in indices]
        return [[(s.question, s.options, s.answer)] for s in (self.samples[i] for i in indices)]

    def question_types(self, indices, conversation: bool) -> list[str]:
        """The question type of every question of :meth:`questions`, flattened in the same order."""
        if conversation:
            return [qtype for i in indices for qtype in self.turn_types[i]]
        return [self.samples[i].qtype for i in indices]


def _batch_embeds(adapter: TinyVLMAdapter, frames: torch.Tensor, conversations
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[prefix][V][Q1][a1]..[Qk]`` for a batch, right-padded. Returns embeds ``(B, L, D)`` and, per question
    ``(M,)``: its row, the index of its last query token and its answer's option index. Right padding is
    invisible to a causal model at the positions we read."""
    b = frames.shape[0]
    vision = adapter.model.video_features(frames.flatten(0, 1))  # (B*T, h, w, D)
    vision = vision.reshape(b, -1, vision.shape[-1])
    rows, which, ends, answers = [], [], [], []
    for i, turns in enumerate(conversations):
        row, row_ends = adapter.embed_conversation(vision[i], turns)
        rows.append(row)
        which += [i] * len(turns)
        ends += row_ends
        answers += [LETTERS.index(answer) for _, _, answer in turns]
    width = max(len(r) for r in rows)
    embeds = torch.stack([F.pad(r, (0, 0, 0, width - len(r))) for r in rows])
    return embeds, torch.tensor(which), torch.tensor(ends), torch.tensor(answers)


def _option_logits(adapter: TinyVLMAdapter, embeds, which, ends) -> torch.Tensor:
    """``(M, 4)`` logits of the option letters at each question's answer position."""
    logits = adapter.model.language_model(inputs_embeds=embeds).logits
    return logits[which, ends][:, adapter.option_token_ids(4)]


def _lr(step: int, steps: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _step(model, opt, loss: torch.Tensor, lr: float) -> None:
    """One optimiser step at learning rate ``lr``, gradients clipped to norm 1."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


@torch.no_grad()
def evaluate(adapter: TinyVLMAdapter, pool: Pool, batch_size: int = 32) -> dict[str, float]:
    """Full-token accuracy on ``pool``'s benchmark questions (greedy among the option letters), overall
    (key ``all``) and per question type."""
    adapter.model.eval()
    correct: dict[str, list[bool]] = {}
    for start in range(0, len(pool), batch_size):
        indices = range(start, min(start + batch_size, len(pool)))
        embeds, which, ends, answers = _batch_embeds(adapter, pool.batch(slice(start, indices.stop)),
                                                     pool.questions(indices, conversation=False))
        hits = (_option_logits(adapter, embeds, which, ends).argmax(-1) == answers).tolist()
        for i, hit in zip(indices, hits):
            correct.setdefault(pool.samples[i].qtype, []).append(hit)
    accuracy = {qtype: float(np.mean(hits)) for qtype, hits in sorted(correct.items())}
    return {"all": float(np.mean([h for hits in correct.values() for h in hits])), **accuracy}


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
        options = logits[adapter.option_token_ids(4)]
        losses.append(F.cross_entropy(options[None], torch.tensor([LETTERS.index(s.answer)])))
    return torch.stack(losses).mean()


def train(adapter: TinyVLMAdapter, train_pool: Pool, val_pool: Pool, cfg: dict, seed: int,
          reduction_cfg: dict | None = None) -> Iterator[dict]:
    """Train ``adapter.model`` in place; yields one log row per ``log_every`` steps and a final ``val`` row.

    ``cfg``: ``steps``, ``batch_size``, ``lr``, ``weight_decay``, ``warmup``, ``log_every``, ``qtype_weights``
    (question type -> loss weight, default 1); with
    ``reduction_budgets`` (and ``reduction_cfg``) each step runs through the reduction loop at a random budget
    (finetuning under reduction).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = adapter.model
    num_vision = train_pool.frames.shape[1] * model.config.grid_size ** 2
    for budget in cfg.get("reduction_budgets") or []:  # fail before training, not at the first unlucky draw
        try:
            plan("hybrid_progressive", adapter.stack.layer_types, budget, num_vision, reduction_cfg)
        except ConfigError as e:
            raise ConfigError(f"training.reduction_budgets: {budget} cannot be reached by this model ({e})") from None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.01))
    steps, bs = cfg["steps"], cfg["batch_size"]
    qtype_weights = cfg.get("qtype_weights") or {}
    t0, seen, run_loss, run_acc = time.perf_counter(), 0, [], []
    for step in tqdm(range(steps), desc="train", mininterval=5):
        model.train()
        idx = rng.choice(len(train_pool), size=bs, replace=False)
        frames = train_pool.batch(torch.from_numpy(idx))
        if cfg.get("reduction_budgets"):
            samples = [train_pool.samples[i] for i in idx]
            loss, acc = _reduced_loss(adapter, frames, samples, cfg["reduction_budgets"], reduction_cfg, rng), None
        else:
            conversation = cfg.get("conversation", True)
            embeds, which, ends, answers = _batch_embeds(adapter, frames, train_pool.questions(idx, conversation))
            logits = _option_logits(adapter, embeds, which, ends)
            # Per question type loss weights (qtype_weights): a type that is learnt late, once the others have
            # taught the model where the events are, gets a larger share of the gradient.
            weights = torch.tensor([qtype_weights.get(t, 1.0) for t in train_pool.question_types(idx, conversation)])
            loss = (F.cross_entropy(logits, answers, reduction="none") * weights).sum() / weights.sum()
            acc = float((logits.argmax(-1) == answers).float().mean())
        _step(model, opt, loss, _lr(step, steps, cfg["lr"], cfg.get("warmup", 20)))
        seen += bs
        run_loss.append(float(loss.detach()))
        if acc is not None:
            run_acc.append(acc)
        if (step + 1) % cfg.get("log_every", 25) == 0 or step + 1 == steps:
            yield {"step": step + 1, "split": "train", "qtype": "all", "loss": float(np.mean(run_loss)),
                   "accuracy": float(np.mean(run_acc)) if run_acc else None, "samples_seen": seen,
                   "elapsed_s": time.perf_counter() - t0}
            run_loss, run_acc = [], []
    for qtype, accuracy in evaluate(adapter, val_pool).items():
        yield {"step": steps, "split": "val", "qtype": qtype, "loss": None, "accuracy": accuracy,
               "samples_seen": seen, "elapsed_s": time.perf_counter() - t0}


RETRIEVAL_OPTIMISER = ("steps", "batch_size", "lr", "weight_decay", "warmup", "log_every", "val_sequences")


def _retrieval_batch(adapter: TinyVLMAdapter, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids ``(B, L)`` of retrieval sequences, and per answer ``(M,)``: its row and position."""
    vocab = adapter.tokenizer.get_vocab()
    missing = sorted({w for seq in batch for w in seq.words} - vocab.keys())
    if missing:
        raise ConfigError(f"training.retrieval: the tokenizer has no token for {missing}")
    ids = torch.tensor([[vocab[w] for w in seq.words] for seq in batch])
    rows = torch.tensor([i for i, seq in enumerate(batch) for _ in seq.positions])
    positions = torch.tensor([p for seq in batch for p in seq.positions])
    return ids, rows, positions


@torch.no_grad()
def evaluate_retrieval(adapter: TinyVLMAdapter, batch, batch_size: int = 16) -> dict[str, float]:
    """Answer accuracy (argmax over the whole vocabulary at each answer position) on retrieval sequences,
    overall (key ``all``) and per task."""
    adapter.model.eval()
    hits: dict[str, list[bool]] = {}
    for start in range(0, len(batch), batch_size):
        chunk = batch[start:start + batch_size]
        ids, rows, positions = _retrieval_batch(adapter, chunk)
        predicted = adapter.model.language_model(input_ids=ids).logits[rows, positions].argmax(-1)
        right = (predicted == ids[rows, positions + 1]).tolist()
        for task, hit in zip([seq.task for seq in chunk for _ in seq.positions], right):
            hits.setdefault(task, []).append(hit)
    per_task = {task: float(np.mean(h)) for task, h in sorted(hits.items())}
    return {"all": float(np.mean([x for h in hits.values() for x in h])), **per_task}


def train_retrieval(adapter: TinyVLMAdapter, cfg: dict, seed: int) -> Iterator[dict]:
    """A text-only retrieval stage (an item of ``training.retrieval``; tasks of :mod:`..dataset.retrieval`): next-word
    cross-entropy at the answer positions of freshly drawn sequences, tasks in turn within each batch; yields
    ``retrieval_train`` rows every ``log_every`` steps and ``retrieval_val`` rows (per task, on held-out
    sequences of another seed stream) at the end."""
    try:
        spec = RetrievalSpec(**{k: (tuple(v) if k == "tasks" else v) for k, v in cfg.items()
                                if k not in RETRIEVAL_OPTIMISER})
    except ValueError as e:
        raise ConfigError(f"training.{e}") from None
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 28, 0])
    val = sequences(spec, cfg.get("val_sequences", 96), seed)
    model = adapter.model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.01))
    steps, bs = cfg["steps"], cfg["batch_size"]
    t0, seen, run_loss, run_acc = time.perf_counter(), 0, [], []
    for step in tqdm(range(steps), desc="retrieval", mininterval=5):
        model.train()
        ids, rows, positions = _retrieval_batch(
            adapter, [make_sequence(spec, spec.tasks[i % len(spec.tasks)], rng) for i in range(bs)])
        logits = model.language_model(input_ids=ids).logits[rows, positions]  # (M, vocab)
        targets = ids[rows, positions + 1]
        loss = F.cross_entropy(logits, targets)
        _step(model, opt, loss, _lr(step, steps, cfg["lr"], cfg.get("warmup", 20)))
        seen += bs
        run_loss.append(float(loss.detach()))
        run_acc.append(float((logits.argmax(-1) == targets).float().mean()))
        if (step + 1) % cfg.get("log_every", 25) == 0 or step + 1 == steps:
            yield {"step": step + 1, "split": "retrieval_train", "qtype": "all", "loss": float(np.mean(run_loss)),
                   "accuracy": float(np.mean(run_acc)), "samples_seen": seen, "elapsed_s": time.perf_counter() - t0}
            run_loss, run_acc = [], []
    for task, accuracy in evaluate_retrieval(adapter, val).items():
        yield {"step": steps, "split": "retrieval_val", "qtype": task, "loss": None, "accuracy": accuracy,
               "samples_seen": seen, "elapsed_s": time.perf_counter() - t0}


def train_tiny_model(model_cfg: dict, synthetic_cfg: dict, num_frames: int, out_dir: str, seed: int,
                     reduction_cfg: dict | None = None, init_from: str | None = None) -> Iterator[dict]:
    """Build the tiny model of ``model_cfg`` (or load the checkpoint ``init_from``, to finetune it), train it as
    ``model_cfg["training"]`` says on the synthetic benchmark's ``train`` split (validated on ``val``), and save it
    with its tokenizer to ``out_dir``.

    ``training.stages`` (optional) continue training after the main run, each a new run of :func:`train` (fresh
    optimiser, warm-up and cosine decay) with the main settings updated by the stage's own (``steps``, ``lr``,
    ``qtype_weights``, ...): a curriculum, e.g. weighting a question type up once the model has learnt to find the
    events; a stage's ``num_frames`` (default: the study's ``num_frames``) trains it on clips of that many frames,
    e.g. short clips first, then long ones. ``training.retrieval`` (optional) lists text-only stages that come
    before all of them (:func:`train_retrieval`; e.g. short sequences first, then long ones). Yields the training log rows of every stage (see :func:`train`), steps
    and time counted on from the previous stage, with the stage's ``num_frames`` (None for the text stage).
    """
    from .models.build import new_tiny_model

    cfg = model_cfg["training"]
    if init_from:
        adapter = TinyVLMAdapter(init_from)
        model, tokenizer = adapter.model, adapter.tokenizer
    else:
        model, tokenizer = new_tiny_model(model_cfg, seed)
        adapter = TinyVLMAdapter.from_model(model, tokenizer)
    size = model.config.image_size
    pools: dict[int, tuple[Pool, Pool]] = {}  # frames per video -> (train, val), rendered once

    def stages():
        """Each stage's log rows (its own counts), its steps and its frames per video (None: text only), in order."""
        for j, text_stage in enumerate(cfg.get("retrieval") or []):
            # seeded apart from the video stages (seed + k), so adding text stages leaves their data order unchanged
            yield train_retrieval(adapter, text_stage, seed + 1000 + j), text_stage["steps"], None
        for k, stage in enumerate([cfg, *(cfg.get("stages") or [])]):
            stage_cfg = cfg if k == 0 else {**cfg, **stage}
            frames = stage_cfg.get("num_frames") or num_frames  # a curriculum may start on shorter clips
            if frames not in pools:
                pools[frames] = tuple(
                    Pool(SyntheticSpec.for_split(synthetic_cfg, split, seed), count, frames, size)
                    for split, count in (("train", cfg["train_videos"]), ("val", cfg["val_videos"])))
            yield train(adapter, *pools[frames], stage_cfg, seed + k, reduction_cfg), stage_cfg["steps"], frames

    steps, elapsed, seen = 0, 0.0, 0  # counted on from stage to stage
    for rows, stage_steps, frames in stages():
        for row in rows:
            yield {**row, "step": steps + row["step"], "elapsed_s": elapsed + row["elapsed_s"],
                   "samples_seen": seen + row["samples_seen"], "num_frames": frames}
        steps, elapsed, seen = steps + stage_steps, elapsed + row["elapsed_s"], seen + row["samples_seen"]
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
