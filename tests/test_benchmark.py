"""The synthetic long-video benchmark: distractors, events spanning several frames, and ground-truth evidence
tokens that match the rendered pixels."""

import numpy as np

from hybridreduce.dataset.synthetic import QTYPES, SyntheticSpec, evidence_mask, render_sample, targets

SPEC = {"duration_s": 32.0, "fps": 2, "width": 128, "height": 128, "event_duration_s": 2.5,
        "event_duration_max_s": 4.5, "distractor_frac": 0.5, "cells": 4}


def test_half_the_videos_have_distractors_that_no_question_asks_about():
    spec = SyntheticSpec.from_config({**SPEC, "split": "test"}, 0)
    with_distractors = {qtype: 0 for qtype in QTYPES}
    for i in range(96):
        _, sample = render_sample(spec, i, [0])
        asked = targets(sample.events)
        distractors = [e for e in sample.events if e["role"] == "distractor"]
        assert asked and all(e["colour"] in sample.options or sample.qtype in ("count", "location") for e in asked)
        assert all(e["colour"] == "white" and e["colour"] not in sample.options for e in distractors)
        assert not {e["shape"] for e in distractors} & {e["shape"] for e in asked}
        with_distractors[sample.qtype] += bool(distractors)
    assert with_distractors == {qtype: 12 for qtype in QTYPES}  # 24 videos per type, half with distractors


def test_events_last_several_sampled_frames_and_leave_long_static_stretches():
    spec = SyntheticSpec.from_config({**SPEC, "split": "val"}, 0)
    times = np.linspace(0, spec.num_frames - 1, 64).astype(int) / spec.fps
    for i in range(40):
        _, sample = render_sample(spec, i, [0])
        for e in sample.events:
            assert 2.5 - 1e-6 <= e["end_s"] - e["start_s"] <= 4.5 + 1e-6
            assert ((times >= e["start_s"]) & (times < e["end_s"])).sum() >= 4  # 2 fps: several frames each
        busy = sum(e["end_s"] - e["start_s"] for e in sample.events)
        assert busy <= 0.75 * spec.duration_s


def test_evidence_tokens_are_exactly_where_an_asked_about_event_is_drawn():
    """A reference from the pixels: a token is evidence when its 32x32 cell differs from the same video's frame
    rendered without the events (the background is static apart from noise)."""
    spec = SyntheticSpec.from_config({**SPEC, "split": "val", "noise": 0.0}, 0)
    frames_idx = np.arange(0, 64, 2)
    for i in range(12):
        frames, sample = render_sample(spec, i, frames_idx)
        quiet = [t for t in range(len(frames_idx))
                 if not any(e["start_s"] <= frames_idx[t] / spec.fps < e["end_s"] for e in sample.events)]
        background = frames[quiet[0]].astype(int)
        cells = np.abs(frames.astype(int) - background).sum(-1).reshape(len(frames_idx), 4, 32, 4, 32).max((2, 4))
        drawn = cells > 0  # (T, 4, 4): any event, asked about or not
        mask = evidence_mask(sample.events, frames_idx / spec.fps, (4, 4))
        assert (mask <= drawn).all() and mask.any()
        distractor_cells = evidence_mask([{**e, "role": "target"} for e in sample.events], frames_idx / spec.fps,
                                         (4, 4))
        assert (distractor_cells == drawn).all()  # every drawn cell is one event's cell, and no other


def test_a_finer_token_grid_scales_the_evidence_cells():
    spec = SyntheticSpec.from_config({**SPEC, "split": "val"}, 0)
    _, sample = render_sample(spec, 1, [0])
    t = np.arange(64) / 2
    coarse, fine = evidence_mask(sample.events, t, (4, 4)), evidence_mask(sample.events, t, (8, 8))
    assert (fine == coarse.repeat(2, axis=1).repeat(2, axis=2)).all()
    assert evidence_mask(sample.events, t, (6, 6)) is None  # not a multiple: no ground truth rather than a wrong one


def test_the_answer_ignores_the_distractors():
    spec = SyntheticSpec.from_config({**SPEC, "split": "test"}, 0)
    for i in range(4, 8):  # the second group of four: every question type with distractors
        _, sample = render_sample(spec, i, [0])
        answer = sample.options["ABCD".index(sample.answer)]
        asked = targets(sample.events)
        expected = {"colour": asked[0]["colour"], "location": asked[0]["quadrant"], "count": str(len(asked)),
                    "order": asked[0]["colour"]}[sample.qtype]
        assert answer == expected and len(sample.events) > len(asked)
