"""The workflow's own long-video benchmark, generated deterministically from a seed.

Each video is a long, static scene (a muted gradient with fixed furniture and faint sensor noise) in which a
few brightly coloured shapes appear briefly. Temporal redundancy is therefore high (EVS has plenty to drop)
and the evidence is sparse (a handful of frames hold the answer). Question types:

- ``colour`` (needle): one event; "What colour was the <shape> that appeared?"
- ``location``: one event; "Where did the <colour> <shape> appear?"
- ``count``: one to four events of distinct colours; "How many shapes appeared?"
- ``order``: two or three events of distinct colours; "Which colour appeared first?"

The question names what to look for, so query-conditioned importance has something to find. Every event's
ground truth (shape, colour, quadrant, start/end time) is stored with the sample for probing.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .sample import LETTERS, Sample

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (240, 220, 40)}
SHAPES = ("circle", "square", "triangle", "cross")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
QTYPES = ("colour", "location", "count", "order")


def generator_settings(synthetic_cfg: dict) -> dict:
    """``dataset.synthetic`` without the test set's size and split: what a rendered sample depends on."""
    return {k: v for k, v in synthetic_cfg.items() if k not in ("num_videos", "split")}


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and timing of the benchmark (config section ``dataset.synthetic``)."""

    num_videos: int = 12
    split: str = "test"
    duration_s: float = 16.0
    fps: int = 4
    width: int = 128
    height: int = 128
    event_duration_s: float = 2.5
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
    qtype = QTYPES[index % len(QTYPES)]
    k = {"colour": 1, "location": 1, "count": int(rng.integers(1, 5)), "order": int(rng.integers(2, 4))}[qtype]
    shapes = rng.choice(SHAPES, size=k)
    # Multi-event videos use distinct colours: count and order then need each event seen, not a colour tally.
    colours = rng.permutation(list(COLOURS))[:k]
    slot = spec.duration_s / k
    events = []
    for j in range(k):
        # One event per equal slot of the timeline, so events never overlap.
        start = j * slot + rng.uniform(0.1, 0.9) * max(slot - spec.event_duration_s, 0.0)
        events.append(
            {
                "shape": str(shapes[j]),
                "colour": str(colours[j]),
                "quadrant": str(rng.choice(QUADRANTS)),
                "start_s": round(float(start), 3),
                "end_s": round(float(start + spec.event_duration_s), 3),
            }
        )
    return qtype, events


def _question(qtype: str, events: list[dict]) -> tuple[str, list[str], int]:
    e = events[0]
    if qtype == "colour":
        return f"What colour was the {e['shape']} that appeared?", list(COLOURS), list(COLOURS).index(e["colour"])
    if qtype == "location":
        q = f"Where did the {e['colour']} {e['shape']} appear?"
        return q, list(QUADRANTS), QUADRANTS.index(e["quadrant"])
    if qtype == "count":
        return "How many shapes appeared?", ["1", "2", "3", "4"], len(events) - 1
    return "Which colour appeared first?", list(COLOURS), list(COLOURS).index(e["colour"])


def training_questions(events: list[dict], rng: np.random.Generator) -> list[tuple[str, str, list[str], int]]:
    """Every question a video can answer, as ``(qtype, question, options, answer index)`` in random order
    (training asks them all, as turns of one conversation after the video): count and order always; location of
    one event (colours are distinct, so "the <colour> <shape>" names one event); colour when the video has a
    single event, as in the benchmark."""
    turns = [("count", *_question("count", events)), ("order", *_question("order", events)),
             ("location", *_question("location", [events[int(rng.integers(len(events)))]]))]
    if len(events) == 1:
        turns.append(("colour", *_question("colour", events)))
    return [turns[i] for i in rng.permutation(len(turns))]


def _frames(spec: SyntheticSpec, events: list[dict], rng: np.random.Generator, which=None):
    """Yield the video's frames as ``(H, W, 3)`` uint8, or only frames ``which`` (indices, ascending)."""
    h, w = spec.height, spec.width
    scene = _background(rng, h, w)
    r = min(h, w) // 8
    masks = []
    for e in events:
        qi = QUADRANTS.index(e["quadrant"])
        cy = (h // 4) * (1 + 2 * (qi // 2)) + int(rng.integers(-h // 16, h // 16 + 1))
        cx = (w // 4) * (1 + 2 * (qi % 2)) + int(rng.integers(-w // 16, w // 16 + 1))
        masks.append((_shape_mask(e["shape"], cy, cx, r, h, w), np.array(COLOURS[e["colour"]], float)))
    for f in range(spec.num_frames) if which is None else which:
        t = f / spec.fps
        img = scene + rng.normal(0.0, spec.noise, size=(h, w, 1))
        for e, (mask, colour) in zip(events, masks):
            if e["start_s"] <= t < e["end_s"]:
                img[mask] = colour
        yield np.clip(img, 0, 255).astype(np.uint8)


def _record(spec: SyntheticSpec, index: int, video_path: str, qtype: str, events: list[dict]) -> Sample:
    question, options, answer = _question(qtype, events)
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
