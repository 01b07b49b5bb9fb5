"""Frame extraction throughput (frames/s) of hybridreduce.video.decode_frames against the ffmpeg command-line
tool decoding and scaling the same files to the same size.

    python benchmarks/frames.py [--save] [--videos FILE ...] [--repeats 5]

Without ``--videos`` it first writes three 10-second 640x360 test videos (H.264 in mp4 and mkv, VP9 in webm) with
the workflow's own encoder. Two samplings, each producing 224x224 RGB frames (scale to cover, centre crop):

* ``uniform16``: 16 frames spread over the video (the study's default), ffmpeg picking the same frame numbers
  with its ``select`` filter;
* ``every_frame``: every frame of the video.

ffmpeg writes raw RGB to a pipe that this script reads and counts, so both sides do the same work: decode,
scale, crop, deliver RGB to Python. Each side's wall time is the median of interleaved repeats after a warm-up;
throughput = frames delivered / wall time (target: ours >= ffmpeg's). The CPU-time ratio (ffmpeg's CPU seconds,
decoder threads included, over ours) says the same without the noise of other work on a busy machine. ``--save`` writes benchmarks/records/frames.json.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from common import interleaved, load, machine, row, save, verdict

from hybridreduce.video import FrameSampling, decode_frames, write_video
from hybridreduce.video.decode import scaled_size

SIZE = (224, 224)
TARGET = 1.0  # decode_frames' throughput / ffmpeg's


def test_videos(folder: Path, seconds: int = 10, fps: int = 30, width: int = 640, height: int = 360) -> list[Path]:
    """Moving content with texture, so the encoder spends bits and the decoder real work."""
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)

    def frames():
        for t in range(seconds * fps):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (xx + 3 * t) % 256
            img[..., 1] = (yy * 2 + t) % 256
            img[..., 2] = ((xx + yy) // 4 + 5 * t) % 256
            x0, y0 = (7 * t) % (width - 80), (5 * t) % (height - 80)
            img[y0 : y0 + 80, x0 : x0 + 80] = (255, 255, 255)
            yield np.roll(img, t, axis=1) ^ noise

    paths = []
    for name in ("h264.mp4", "h264.mkv", "vp9.webm"):
        path = folder / name
        write_video(str(path), frames(), fps=fps)
        paths.append(path)
    return paths


def ffmpeg_cmd(path: Path, sampling: FrameSampling, indices: np.ndarray | None, scaled: tuple[int, int]) -> list[str]:
    out_h, out_w = sampling.size
    filters = [f"scale={scaled[0]}:{scaled[1]}", f"crop={out_w}:{out_h}"]
    if indices is not None:
        filters.insert(0, "select='" + "+".join(f"eq(n\\,{i})" for i in indices) + "'")
    return ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vf", ",".join(filters), "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]


def run_ffmpeg(cmd: list[str], frame_bytes: int) -> int:
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    return len(out) // frame_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", nargs="+", type=Path, help="video files to use instead of generated ones")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--save", action="store_true", help="write benchmarks/records/frames.json")
    args = parser.parse_args()
    if not shutil.which("ffmpeg"):
        raise SystemExit("the ffmpeg command-line tool is not on PATH (e.g. apt-get install ffmpeg)")
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split(" Copyright")[0]
    line = machine(f"cpu; {version}")
    print(line)
    tmp = tempfile.TemporaryDirectory(prefix="hybridreduce-frames-")
    videos = args.videos or test_videos(Path(tmp.name))
    frame_bytes = SIZE[0] * SIZE[1] * 3

    rows = []
    print(f"\n{'sampling':>12} {'video':>10} {'frames':>6} {'ours f/s':>9} {'ffmpeg f/s':>10} {'ratio':>6} "
          f"{'cpu-time ratio':>14}")
    for label in ("uniform16", "every_frame"):
        ours_total = ffmpeg_total = ours_cpu = ffmpeg_cpu = frames_total = 0.0
        for path in videos:
            probe = decode_frames(str(path), FrameSampling(num_frames=1, size=SIZE))
            fps = probe.total_frames / probe.duration_s
            sampling = (FrameSampling(num_frames=16, size=SIZE) if label == "uniform16"
                        else FrameSampling(mode="fps", fps=fps, size=SIZE))
            ours = decode_frames(str(path), sampling)
            indices = ours.source_indices if label == "uniform16" else None
            assert label == "uniform16" or len(ours.frames) == probe.total_frames
            cmd = ffmpeg_cmd(path, sampling, indices, scaled_size(probe.source_width, probe.source_height, sampling))
            medians, cpu, last = interleaved({
                "ours": lambda: len(decode_frames(str(path), sampling).frames),
                "ffmpeg": lambda: run_ffmpeg(cmd, frame_bytes)}, args.repeats)
            n = last["ours"]
            if last["ffmpeg"] != n:
                raise SystemExit(f"{path}: ffmpeg delivered {last['ffmpeg']} frames, decode_frames {n}")
            print(f"{label:>12} {path.name:>10} {n:>6} {n / medians['ours']:>9.1f} {n / medians['ffmpeg']:>10.1f} "
                  f"{medians['ffmpeg'] / medians['ours']:>6.2f} {cpu['ffmpeg'] / cpu['ours']:>14.2f}")
            ours_total, ffmpeg_total = ours_total + medians["ours"], ffmpeg_total + medians["ffmpeg"]
            ours_cpu, ffmpeg_cpu = ours_cpu + cpu["ours"], ffmpeg_cpu + cpu["ffmpeg"]
            frames_total += n
        ratio, cpu_ratio = ffmpeg_total / ours_total, ffmpeg_cpu / ours_cpu
        print(f"{label:>12} {'all':>10} {frames_total:>6.0f} {frames_total / ours_total:>9.1f} "
              f"{frames_total / ffmpeg_total:>10.1f} {ratio:>6.2f} {cpu_ratio:>14.2f}{verdict(ratio >= TARGET)}")
        rows += [row(label, "frames_per_s", frames_total / ours_total, "frames/s"),
                 row(label, "ffmpeg_frames_per_s", frames_total / ffmpeg_total, "frames/s"),
                 row(label, "throughput_vs_ffmpeg", ratio, "ratio", TARGET),
                 row(label, "cpu_time_throughput_vs_ffmpeg", cpu_ratio, "ratio")]
    print(f"\nload average at end: {load()}")
    if args.save:
        print("saved", save("frames", line, rows))


if __name__ == "__main__":
    main()
