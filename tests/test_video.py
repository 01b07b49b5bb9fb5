"""Frame extraction on real files written and decoded by PyAV."""

import os
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
from conftest import HUGE_LIMIT, ramp_frames, write_bad_media

from hybridreduce.errors import VideoError
from hybridreduce.video import FrameSampling, decode_frames, write_video


@pytest.mark.parametrize("ext", ["mp4", "mkv", "webm"])
def test_uniform_sampling_picks_evenly_spaced_frames(tmp_path, ext):
    path = tmp_path / f"ramp.{ext}"
    write_video(str(path), ramp_frames(20), fps=10)
    video = decode_frames(str(path), FrameSampling(num_frames=5, size=(32, 32)))

    expected = np.linspace(0, 19, 5, dtype=int)  # [0, 4, 9, 14, 19]
    assert video.total_frames == 20
    assert video.source_indices.tolist() == expected.tolist()
    np.testing.assert_allclose(video.timestamps, expected / 10, atol=1e-6)
    assert video.frames.shape == (5, 32, 32, 3) and video.frames.dtype == np.uint8
    # grey level encodes the frame index (8 * i), up to compression error
    np.testing.assert_allclose(video.frames.mean(axis=(1, 2, 3)), 8 * expected, atol=4)


def test_matroska_and_webm_report_no_frame_count_but_are_counted(tmp_path):
    for ext in ("mkv", "webm"):
        path = tmp_path / f"ramp.{ext}"
        write_video(str(path), ramp_frames(12), fps=6)
        with av.open(str(path)) as c:
            assert c.streams.video[0].frames == 0  # the container does not say
        assert decode_frames(str(path), FrameSampling(num_frames=4, size=(16, 16))).total_frames == 12


def test_fps_sampling_with_max_frames_cap(tmp_path):
    path = tmp_path / "ramp.mp4"
    write_video(str(path), ramp_frames(30), fps=10)  # 3 s
    video = decode_frames(str(path), FrameSampling(mode="fps", fps=2.0, size=(16, 16)))
    np.testing.assert_allclose(video.timestamps, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5], atol=1e-6)
    capped = decode_frames(str(path), FrameSampling(mode="fps", fps=10.0, max_frames=4, size=(16, 16)))
    assert len(capped.frames) == 4
    assert capped.source_indices[0] == 0 and capped.source_indices[-1] == 29


def test_resize_crop_keeps_aspect_and_stretch_does_not(tmp_path):
    # left half black, right half white, 2:1 aspect
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:, 32:] = 255
    path = tmp_path / "wide.mp4"
    write_video(str(path), [frame] * 4, fps=4)
    crop = decode_frames(str(path), FrameSampling(num_frames=1, size=(16, 16), resize="crop")).frames[0]
    stretch = decode_frames(str(path), FrameSampling(num_frames=1, size=(16, 16), resize="stretch")).frames[0]
    assert crop.shape == stretch.shape == (16, 16, 3)
    # centre crop of a 32x16-scaled frame: the black/white edge is in the middle, both halves survive
    assert crop[:, :4].mean() < 40 and crop[:, -4:].mean() > 215


@pytest.mark.parametrize("name", ["truncated", "truncated_index_at_end", "corrupt", "flipped_5", "flipped_500",
                                  "zeroed", "empty", "text", "zero", "audio", "short", "missing", "codec", "huge"])
def test_unusable_videos_raise_with_kind_and_reason(tmp_path, name):
    path, kind = write_bad_media(tmp_path)[name]
    with pytest.raises(VideoError) as err:
        decode_frames(str(path), FrameSampling(num_frames=8, size=(16, 16), max_source_pixels=HUGE_LIMIT))
    assert err.value.kind == kind
    assert err.value.path == str(path)
    assert err.value.reason and "Errno" not in err.value.reason


def test_unreadable_file_is_reported(tmp_path):
    path = tmp_path / "locked.mp4"
    write_video(str(path), ramp_frames(10), fps=10)
    path.chmod(0)
    # Root reads any file: decode in a child process with every capability dropped, so permissions apply to it.
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is not installed")
        prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
    code = ("import sys\n"
            "from hybridreduce.errors import VideoError\n"
            "from hybridreduce.video import FrameSampling, decode_frames\n"
            "try:\n"
            "    decode_frames(sys.argv[1], FrameSampling(num_frames=2, size=(16, 16)))\n"
            "except VideoError as e:\n"
            "    print(e.kind, e.path, sep='\\n')\n")
    proc = subprocess.run([*prefix, sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.splitlines() == ["unreadable", str(path)], proc.stderr
