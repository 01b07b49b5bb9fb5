"""Shared helpers: real video files written with PyAV and real Snakemake runs in temporary directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from hybridreduce.video import write_video

REPO = Path(__file__).resolve().parents[1]


def ramp_frames(n: int, h: int = 64, w: int = 64, step: int = 8) -> list[np.ndarray]:
    """Frames whose grey level encodes their index (``step * i``), to check which frames were decoded."""
    return [np.full((h, w, 3), min(255, step * i), np.uint8) for i in range(n)]


def textured_frames(n: int, size: int = 128) -> list[np.ndarray]:
    """``n`` frames of the synthetic benchmark's scenes (textured background, moving shapes): content whose
    compressed frames are big enough to be damaged in place, unlike flat test frames."""
    from hybridreduce.dataset.synthetic import SyntheticSpec, render_sample

    video, _ = render_sample(SyntheticSpec(width=size, height=size, duration_s=n / 4, fps=4), 0, np.arange(n))
    return list(video)


def write_audio_file(path: str, with_empty_video_track: bool) -> None:
    """One second of silence in Matroska; optionally beside a video track that holds no frames."""
    with av.open(path, "w", format="matroska") as c:
        if with_empty_video_track:
            v = c.add_stream("libx264", rate=10)
            v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*a.encode(frame), *a.encode(None)]:
            c.mux(packet)


HUGE_LIMIT = 100_000  # frames.max_source_pixels in tests: 512x384 is "huge", the 64x64 test videos are not


def write_bad_media(folder: Path) -> dict[str, tuple[Path, str]]:
    """One file per failure kind: name -> (path, expected kind)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good_source.mp4"
    write_video(str(good), ramp_frames(20), fps=10)
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    write_audio_file(str(folder / "zero.mkv"), with_empty_video_track=True)
    write_audio_file(str(folder / "audio.mka"), with_empty_video_track=False)
    write_video(str(folder / "short.mp4"), ramp_frames(3), fps=10)
    # an H.264 stream labelled with a codec id FFmpeg has no decoder for (same length, so the file stays valid)
    write_video(str(folder / "codec_source.mkv"), ramp_frames(20), fps=10)
    data = (folder / "codec_source.mkv").read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    (folder / "unknown_codec.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_HYBRIDRED/XYZ"))
    # larger than the tests' frames.max_source_pixels (HUGE_LIMIT), which stands in for 8K-and-beyond videos
    write_video(str(folder / "huge.mp4"), ramp_frames(20, h=384, w=512), fps=10)
    # Damage inside the coded frames of real footage-like content (8 frames: the tests sample all of them, so no
    # damaged frame is one the decoder may skip): bytes flipped or zeroed after the index (faststart: at the front)
    textured = folder / "textured_source.mp4"
    write_video(str(textured), textured_frames(8), fps=4)
    data = textured.read_bytes()
    for n in (5, 500):
        flipped = bytearray(data)
        for p in np.random.default_rng(n).choice(np.arange(len(data) // 4, len(data)), size=n, replace=False):
            flipped[p] ^= 0xFF
        (folder / f"flipped_{n}.mp4").write_bytes(bytes(flipped))
    middle = len(data) // 2
    (folder / "zeroed.mp4").write_bytes(data[:middle] + bytes(1000) + data[middle + 1000:])
    # an mp4 whose index (moov) is at its end, as cameras write them, cut off: the index is lost
    write_video(str(folder / "index_at_end_source.mp4"), textured_frames(8), fps=4, faststart=False)
    (folder / "truncated_index_at_end.mp4").write_bytes((folder / "index_at_end_source.mp4").read_bytes()[:middle])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("<html><body>404 Not Found</body></html>\n")
    return {
        "flipped_5": (folder / "flipped_5.mp4", "damaged"),
        "flipped_500": (folder / "flipped_500.mp4", "damaged"),
        "zeroed": (folder / "zeroed.mp4", "damaged"),
        "truncated_index_at_end": (folder / "truncated_index_at_end.mp4", "truncated"),
        "empty": (folder / "empty.mp4", "empty"),
        "text": (folder / "text.mp4", "not_a_video"),
        "truncated": (folder / "truncated.mp4", "truncated"),
        "corrupt": (folder / "corrupt.mp4", "corrupt"),
        "zero": (folder / "zero.mkv", "zero_frames"),
        "audio": (folder / "audio.mka", "no_video_stream"),
        "short": (folder / "short.mp4", "too_short"),
        "codec": (folder / "unknown_codec.mkv", "unsupported_codec"),
        "huge": (folder / "huge.mp4", "too_large"),
        "missing": (folder / "does_not_exist.mp4", "missing"),
    }


def tiny_config(study: str = "tiny", **overrides) -> dict:
    """A small study: 4 synthetic videos, 8 frames of 56x56, two pre-LLM methods at two pruning rates, two tiny
    models (the hybrid trained for 4 steps) with no reduction and the paper's method at budget 0.5."""
    cfg = {
        "study": study,
        "seed": 0,
        "dataset": {
            "source": "synthetic",
            "synthetic": {"num_videos": 4, "duration_s": 6.0, "fps": 4, "width": 64, "height": 64,
                          "event_duration_s": 1.5},
        },
        "frames": {"sampling": "uniform", "num_frames": 8, "size": [56, 56]},
        "redundancy": {"methods": ["evs", "random"], "q": [0.5, 0.75]},
        "models": {
            "tiny_hybrid": {"kind": "tiny", "path": None, "image_size": 56, "patch_size": 14,
                            "llm": {"family": "nemotron_h", "pattern": "M*M-M*", "hidden_size": 32},
                            "training": {"steps": 4, "batch_size": 4, "lr": 1e-3, "log_every": 2,
                                         "train_videos": 16, "val_videos": 8}},
            "tiny_transformer": {"kind": "tiny", "path": None, "image_size": 56, "patch_size": 14,
                                 "llm": {"family": "qwen2", "num_layers": 4, "hidden_size": 32},
                                 "training": None},  # the default config trains it: switch that off
        },
        "reduction": {"first_layer": 1, "num_stages": 2},
        "probing": {"num_videos": 12, "n_boot": 10, "pca_components": 2},
        "inference": {"models": ["tiny_hybrid", "tiny_transformer"], "pre_llm": ["none"],
                      "methods": ["none", "hybrid_progressive"], "budgets": [1.0, 0.5], "warmup": 0, "repeats": 1},
    }
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def run_snakemake(workdir: Path, config: dict | None = None, *args: str, check: bool = True):
    """Run the real workflow in ``workdir`` (config written to ``workdir/config.yaml``)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2"]
    if config is not None:
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        cmd += ["--configfile", "config.yaml"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run([*cmd, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def fake_task_overlay(tmp_path: Path, n: int = 3) -> tuple[Path, list[dict]]:
    """A config overlay for ``config/paper.yaml`` whose only real task is ``videomme``, read offline from a fake
    copy of its dataset layout (tests/fake_videomme.py) with ``n`` documents; the overlay's path and the docs."""
    from fake_videomme import make_fake_videomme

    hf_home = tmp_path / "hf"
    docs = make_fake_videomme(str(hf_home), n=n)
    overlay = tmp_path / "real-task.yaml"
    overlay.write_text(yaml.safe_dump({"scoring": {"tasks": ["hybridreduce_local", "videomme"],
                                                   "hf_home": str(hf_home)}}))
    return overlay, docs


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into rule -> job count."""
    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table and len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
        elif in_table and parts and parts[0] == "total":
            break
    return counts


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """The tiny study run once for the session; tests that change it work on a copy."""
    workdir = tmp_path_factory.mktemp("tiny_study")
    run_snakemake(workdir, tiny_config())
    return workdir
