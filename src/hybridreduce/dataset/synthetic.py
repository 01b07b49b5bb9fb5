"""The workflow's own long-video benchmark, generated deterministically from a seed.

Each video is a long, static scene (a muted gradient with fixed furniture and faint sensor noise) in which a
few brightly coloured shapes appear for a few seconds each (several sampled frames), with long static stretches
between them. Temporal redundancy is therefore high (EVS has plenty to drop) and the evidence is sparse (a
handful of tokens hold the answer). Question types, about the coloured shapes (the *targets*):

- ``colour`` (needle): one target; "What colour was the <shape> that appeared?"
- ``location``: one target; "Where did the <colour> <shape> appear?"
- ``count``: one to four targets of distinct colours; "How many coloured shapes appeared?"
- ``order``: two or three targets of distinct colours; "Which colour appeared first?"

**Distractors**: in a fraction ``distractor_frac`` of the videos (every other group of four, so exactly half at
0.5, spread over the question types) one or two further events appear: white shapes of other shapes than the
targets', as bright and as brief as the targets, which no question asks about. They move as much as the targets,
so motion saliency (EVS) keeps them, while a selection that knows what the question is about can drop them.
(A first version asked about one shape among shapes of every colour, so that only a query-conditioned selection
could tell them apart; the tiny models did not learn that conditional retrieval within the pretraining budget:
33% validation accuracy after 1050 steps.)

Every event is drawn inside one cell of a ``cells x cells`` grid over the frame (a random cell of its quadrant).
Set ``cells`` to the models' vision-token grid (4 for 64 px frames in 16 px patches) and each event is exactly
one vision token per frame it is visible in: :func:`evidence_mask` gives the ground-truth evidence tokens of a
sample from its stored events alone. Every event's ground truth (role, shape, colour, quadrant, cell, start/end
time) is stored with the sample.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .sample import LETTERS, Sample

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (240, 220, 40)}
DISTRACTOR = ("white", (235, 235, 235))  # the distractors' colour: never an answer option
SHAPES = ("circle", "square", "triangle", "cross")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
QTYPES = ("colour", "location", "count", "order")
MAX_EVENTS = 5  # targets + distractors per video: the timeline keeps long static stretches between them


def generator_settings(synthetic_cfg: dict) -> dict:
    """``dataset.synthetic`` without the test set's size and split: what a rendered sample depends on."""
    return {k: v for k, v in synthetic_cfg.items() if k not in ("num_videos", "split")}


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and timing of the benchmark (config section ``dataset.synthetic``). Events last between
    ``event_duration_s`` and ``event_duration_max_s`` (``None``: exactly ``event_duration_s``)."""

    num_videos: int = 12
    split: str = "test"
    duration_s: float = 16.0
    fps: int = 4
    width: int = 128
    height: int = 128
    event_duration_s: float = 2.5
    event_duration_max_s: float | None = None
    distractor_frac: float = 0.5
    cells: int = 4
    noise: float = 2.0
    container: str = "mp4"
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: dict, seed: int) -> "SyntheticSpec":
        fields = cls.__dataclass_fields__
        return cls(seed=seed, **{k: v for k, v in cfg.items() if k in fields and k != "seed"})

    @classmethod
    def for_split(cls, generator_cfg: dict, split: str, seed: int) -> "SyntheticSpec":
        """The generator settings of ``generator_cfg`` (its test-set size and split ignored) for ``split``:
        training and probing render their own train / val samples with the study's generator."""
        return cls.from_config({**generator_settings(generator_cfg), "split": split}, seed)

    @property
    def num_frames(self) -> int:
        return int(round(self.duration_s * self.fps))

    def sample_id(self, index: int) -> str:
        return f"syn-{self.split}-{index:04d}"

    def index_of(self, sample_id: str) -> int:
        prefix = f"syn-{self.split}-"
        if not sample_id.startswith(prefix):
            raise ValueError(f"'{sample_id}' is not a sample of the '{self.split}' split")
        return int(sample_id[len(prefix):])

    def sample_ids(self) -> list[str]:
        return [self.sample_id(i) for i in range(self.num_videos)]

    def rng(self, index: int) -> np.random.Generator:
        # Splits get disjoint streams: the split name is part of the seed sequence.
        return np.random.default_rng([self.seed, zlib.crc32(self.split.encode()), index])

    def has_distractors(self, index: int) -> bool:
        """Exactly a fraction ``distractor_frac`` of the groups of four videos (one per question type) have
        distractors, spread evenly (a Bresenham step over the group index)."""
        group = index // len(QTYPES)
        return int((group + 1) * self.distractor_frac) > int(group * self.distractor_frac)


def _shape_mask(shape: str, cy: int, cx: int, r: int, h: int, w: int) -> np.ndarray:
    """Boolean ``(h, w)`` mask of a shape of half-size ``r`` centred at (cy, cx)."""
    y, x = np.mgrid[0:h, 0:w]
    dy, dx = y - cy, x - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)
    if shape == "triangle":  # apex up, base at cy + r
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    bar = max(1, r // 3)  # cross
    return ((np.abs(dy) <= bar) & (np.abs(dx) <= r)) | ((np.abs(dx) <= bar) & (np.abs(dy) <= r))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A muted static scene: a two-colour vertical gradient with three fixed rectangles. ``(h, w, 3)`` float."""
    top, bottom = rng.uniform(60, 170, size=(2, 3))
    saturation = rng.uniform(0.0, 0.25)  # muted, so no part of the scene looks like an event colour
    top = top * saturation + top.mean() * (1 - saturation)
    bottom = bottom * saturation + bottom.mean() * (1 - saturation)
    t = np.linspace(0, 1, h)[:, None, None]
    scene = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).copy()
    for _ in range(3):
        y0, x0 = rng.integers(0, h - h // 6), rng.integers(0, w - w // 6)
        dh, dw = rng.integers(h // 10, h // 4), rng.integers(w // 10, w // 4)
        scene[y0 : y0 + dh, x0 : x0 + dw] = rng.uniform(70, 150) + rng.uniform(-8, 8, size=3)
    return scene


def _plan(spec: SyntheticSpec, index: int, rng: np.random.Generator) -> tuple[str, list[dict]]:
    """The question type and the events of video ``index``: the targets first (coloured, distinct colours, in time
    order), then the distractors (white, of shapes no target has)."""
    qtype = QTYPES[index % len(QTYPES)]
    k = {"colour": 1, "location": 1, "count": int(rng.integers(1, 5)), "order": int(rng.integers(2, 4))}[qtype]
    shapes = [str(x) for x in rng.choice(SHAPES, size=k)]
    colours = rng.permutation(list(COLOURS))[:k]
    specs = [("target", shapes[j], str(colours[j])) for j in range(k)]
    others = [x for x in SHAPES if x not in shapes]
    n_distract = min(int(rng.integers(1, 3)), MAX_EVENTS - k, len(others)) if spec.has_distractors(index) else 0
    for j in rng.choice(len(others), size=n_distract, replace=False):
        specs.append(("distractor", others[j], DISTRACTOR[0]))
    # One event per equal slot of the timeline (so events never overlap), slots shuffled between the events.
    slot = spec.duration_s / len(specs)
    longest = spec.event_duration_max_s or spec.event_duration_s
    order = rng.permutation(len(specs))
    half = spec.cells // 2
    events = []
    for j, (role, shape, colour) in enumerate(specs):
        duration = min(float(rng.uniform(spec.event_duration_s, longest)), slot)
        start = order[j] * slot + rng.uniform(0.1, 0.9) * max(slot - duration, 0.0)
        quadrant = int(rng.integers(len(QUADRANTS)))
        cell = [(quadrant // 2) * half + int(rng.integers(half)), (quadrant % 2) * half + int(rng.integers(half))]
        events.append({"role": role, "shape": shape, "colour": colour, "quadrant": QUADRANTS[quadrant],
                       "cell": cell, "cells": spec.cells, "start_s": round(float(start), 3),
                       "end_s": round(float(start + duration), 3)})
    targets = sorted(events[:k], key=lambda e: e["start_s"])
    return qtype, targets + events[k:]


def targets(events: list[dict]) -> list[dict]:
    """The events the questions ask about, in time order (events without a role, from older samples, are all
    targets)."""
    return sorted((e for e in events if e.get("role", "target") == "target"), key=lambda e: e["start_s"])


def _question(qtype: str, events: list[dict]) -> tuple[str, list[str], int]:
    """The question of type ``qtype`` about the target ``events`` (in time order)."""
    e = events[0]
    if qtype == "colour":
        return f"What colour was the {e['shape']} that appeared?", list(COLOURS), list(COLOURS).index(e["colour"])
    if qtype == "location":
        q = f"Where did the {e['colour']} {e['shape']} appear?"
        return q, list(QUADRANTS), QUADRANTS.index(e["quadrant"])
    if qtype == "count":
        return "How many coloured shapes appeared?", ["1", "2", "3", "4"], len(events) - 1
    return "Which colour appeared first?", list(COLOURS), list(COLOURS).index(e["colour"])


def training_questions(events: list[dict], rng: np.random.Generator) -> list[tuple[str, str, list[str], int]]:
    """Every question a video can answer, as ``(qtype, question, options, answer index)`` in random order
    (training asks them all, as turns of one conversation after the video): count and order always; the location
    of one target (colours are distinct, so "the <colour> <shape>" names one event); its colour when the video has
    a single target, as in the benchmark."""
    asked = targets(events)
    turns = [("count", *_question("count", asked)), ("order", *_question("order", asked)),
             ("location", *_question("location", [asked[int(rng.integers(len(asked)))]]))]
    if len(asked) == 1:
        turns.append(("colour", *_question("colour", asked)))
    return [turns[i] for i in rng.permutation(len(turns))]


def _cell_box(cell: list[int], cells: int, h: int, w: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` pixel box of grid cell ``cell`` (row, column)."""
    r, c = cell
    return r * h // cells, (r + 1) * h // cells, c * w // cells, (c + 1) * w // cells


def _frames(spec: SyntheticSpec, events: list[dict], rng: np.random.Generator, which=None):
    """Yield the video's frames as ``(H, W, 3)`` uint8, or only frames ``which`` (indices, ascending)."""
    h, w = spec.height, spec.width
    scene = _background(rng, h, w)
    masks = []
    for e in events:
        y0, y1, x0, x1 = _cell_box(e["cell"], spec.cells, h, w)
        # The shape stays inside its cell (a margin for the resize filter): one vision token per frame.
        r = max(2, min(y1 - y0, x1 - x0) // 2 - max(1, min(y1 - y0, x1 - x0) // 8))
        colour = DISTRACTOR[1] if e["colour"] == DISTRACTOR[0] else COLOURS[e["colour"]]
        masks.append((_shape_mask(e["shape"], (y0 + y1) // 2, (x0 + x1) // 2, r, h, w), np.array(colour, float)))
    for f in range(spec.num_frames) if which is None else which:
        t = f / spec.fps
        img = scene + rng.normal(0.0, spec.noise, size=(h, w, 1))
        for e, (mask, colour) in zip(events, masks):
            if e["start_s"] <= t < e["end_s"]:
                img[mask] = colour
        yield np.clip(img, 0, 255).astype(np.uint8)


def evidence_mask(events: list[dict], timestamps, grid: tuple[int, int], role: str = "target") -> np.ndarray | None:
    """``(T, gh, gw)`` bool: the vision tokens that show an asked-about (target) event, for frames sampled at
    ``timestamps`` (seconds) on a token grid ``grid``; with ``role="distractor"``, those that show a distractor. An
    event is visible in a frame at time t when ``start_s <= t < end_s``, as the generator draws it. None when the
    events carry no grid cell (manifest samples, older synthetic ones) or the token grid is not a multiple of the
    events' ``cells``: then nothing can say which tokens are evidence."""
    gh, gw = grid
    t = np.asarray(timestamps, dtype=float)
    mask = np.zeros((len(t), gh, gw), dtype=bool)
    chosen = targets(events) if role == "target" else [e for e in events if e.get("role") == role]
    for e in chosen:
        cells = e.get("cells")
        if not cells or "cell" not in e or gh % cells or gw % cells:
            return None
        sy, sx = gh // cells, gw // cells
        r, c = e["cell"]
        visible = (e["start_s"] <= t) & (t < e["end_s"])
        mask[visible, r * sy : (r + 1) * sy, c * sx : (c + 1) * sx] = True
    return mask


def truth_masks(events: list[dict], timestamps, grid: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """The ground-truth token masks of a sample on a ``(T, h, w)`` token grid of frames sampled at ``timestamps``:
    ``evidence`` (target events) and ``distractor`` (distractor events), each ``(T, h, w)`` bool; empty when the
    sample has no such ground truth or the grid's frames are not the sampled frames (a model that merges frames)."""
    t, h, w = grid
    evidence = evidence_mask(events, timestamps, (h, w)) if events else None
    if evidence is None or len(evidence) != t:
        return {}
    return {"evidence": evidence, "distractor": evidence_mask(events, timestamps, (h, w), role="distractor")}


def _record(spec: SyntheticSpec, index: int, video_path: str, qtype: str, events: list[dict]) -> Sample:
    question, options, answer = _question(qtype, targets(events))
    return Sample(sample_id=spec.sample_id(index), video_path=video_path, question=question, options=options,
                  answer=LETTERS[answer], source="synthetic", split=spec.split, qtype=qtype, events=events)


def render_sample(spec: SyntheticSpec, index: int, frame_indices) -> tuple[np.ndarray, Sample]:
    """Sample ``index`` without writing a video: only frames ``frame_indices`` are rendered, ``(n, H, W, 3)``
    uint8 (used for training, where encoding and decoding thousands of videos would dominate)."""
    rng = spec.rng(index)
    qtype, events = _plan(spec, index, rng)
    frames = np.stack(list(_frames(spec, events, rng, which=list(frame_indices))))
    return frames, _record(spec, index, "", qtype, events)


def generate_sample(spec: SyntheticSpec, index: int, video_path: str) -> Sample:
    """Write video ``index`` of the benchmark to ``video_path`` and return its sample record."""
    rng = spec.rng(index)
    qtype, events = _plan(spec, index, rng)
    # Lossless (crf 0): x264 is not bit-reproducible from run to run (measured on 64x64 videos), but a lossless
    # stream decodes to exactly the frames it was given, so the same seed always gives the same test frames.
    from ..video import write_video  # PyAV only where a video is written: the vocabulary above is imported alone

    write_video(video_path, _frames(spec, events, rng), fps=spec.fps, crf=0)
    return _record(spec, index, video_path, qtype, events)
