"""Frame extraction with PyAV.

Two passes over the file: a demux pass reads every video packet's timestamp (cheap, no decoding) so the frame
count and times are exact even for containers that report no frame count (mkv/webm); the decode pass then
converts only the selected frames, does not decode unselected frames that no other frame depends on, and stops
after the last selected one. Every problem is raised as :class:`~hybridreduce.errors.VideoError` with a
``kind`` and a reason, so the workflow can record it and go on with the other samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import av
import av.logging
import numpy as np

from ..errors import VideoError

# A video whose last packet ends this far before the duration its header declares is reported as truncated.
TRUNCATION_TOLERANCE = 0.9


@dataclass(frozen=True)
class FrameSampling:
    """Which frames to take.

    ``uniform``: ``num_frames`` indices spread over the whole video, ``linspace(0, n - 1, num_frames)`` floored
    (the lmms-eval / decord convention; first and last frame included). ``fps``: one frame per ``1 / fps``
    seconds (nearest frame), capped at ``max_frames`` by uniform subsampling.
    """

    mode: Literal["uniform", "fps"] = "uniform"
    num_frames: int = 16
    fps: float | None = None
    max_frames: int | None = None
    size: tuple[int, int] = (224, 224)  # (height, width) of returned frames
    resize: Literal["crop", "stretch"] = "crop"
    max_source_pixels: int = 8192 * 8192  # larger frames are refused (one decoded frame alone would take GBs)
    max_decode_errors: int = 0  # frames flagged corrupt (concealed damage) tolerated before a video is "damaged"

    @classmethod
    def from_config(cls, cfg: dict) -> "FrameSampling":
        return cls(
            mode=cfg.get("sampling", "uniform"),
            num_frames=int(cfg.get("num_frames", 16)),
            fps=cfg.get("fps"),
            max_frames=cfg.get("max_frames"),
            size=(int(cfg["size"][0]), int(cfg["size"][1])),
            resize=cfg.get("resize", "crop"),
            max_source_pixels=int(cfg.get("max_source_pixels", cls.max_source_pixels)),
            max_decode_errors=int(cfg.get("max_decode_errors", cls.max_decode_errors)),
        )


@dataclass
class DecodedVideo:
    """Sampled frames of one video.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        timestamps: ``(T,)`` float64 seconds from the start of the stream.
        source_indices: ``(T,)`` int64 index of each frame among all frames in presentation order.
        total_frames: number of frames in the video (counted, not read from the header).
        duration_s: span of the video stream in seconds.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    source_indices: np.ndarray
    total_frames: int
    duration_s: float
    container: str
    codec: str
    source_width: int
    source_height: int


def _why(e: av.FFmpegError) -> str:
    return e.strerror or str(e)


class _FFmpegLog(av.logging.Capture):
    """FFmpeg's own log messages at warning level or worse while in the block (from any thread), for opening a
    file: a cut-off mp4 says "moov atom not found" only there. Not around frame-threaded decoding, where PyAV's log
    callback deadlocked (measured on a zeroed file); damage in decoded frames comes from their corrupt flags. The
    previous log level is restored on exit (PyAV leaves FFmpeg's logging off by default)."""

    def __init__(self):
        super().__init__(local=False)

    def __enter__(self):
        self._level = av.logging.get_level()
        av.logging.set_level(av.logging.WARNING)
        super().__enter__()
        return self

    def __exit__(self, *exc):
        super().__exit__(*exc)
        av.logging.set_level(self._level)

    def errors(self) -> list[str]:
        """Messages at error level or worse, stripped."""
        return [message.strip() for level, _, message in self.logs if level <= av.logging.ERROR]


def _looks_like_text(path: str) -> bool:
    """Whether the file starts with printable UTF-8 text (a subtitle, a note, an HTML error page saved as .mp4)."""
    with open(path, "rb") as f:
        head = f.read(512)
    try:
        return all(c.isprintable() or c.isspace() for c in head.decode("utf-8"))
    except UnicodeDecodeError:  # also a multi-byte character cut at byte 512: rare, and then "corrupt" is fine
        return False


def _starts_with(path: str, magic: bytes, at: int = 0) -> bool:
    with open(path, "rb") as f:
        return f.read(at + len(magic))[at:] == magic


def _open(path: str):
    if not os.path.exists(path):
        raise VideoError("missing", path, "file does not exist")
    if not os.access(path, os.R_OK):
        raise VideoError("unreadable", path, "file is not readable (permissions)")
    if os.path.getsize(path) == 0:
        raise VideoError("empty", path, "file is empty (0 bytes)")
    with _FFmpegLog() as log:
        try:
            return av.open(path)
        except av.EOFError:
            raise VideoError("truncated", path, "file ends before its container header/index is complete") from None
        except av.FFmpegError as e:
            if _looks_like_text(path):
                raise VideoError("not_a_video", path, "the file is text, not a video container") from None
            if any("moov atom not found" in m for m in log.errors()) and _starts_with(path, b"ftyp", at=4):
                # a real mp4 (it opens with an ftyp box) written without faststart keeps its index (moov) at the
                # end: a cut-off file loses it
                raise VideoError("truncated", path, "the mp4 index (moov atom) is missing: the file was cut off "
                                 "before its end, where this file keeps its index") from None
            raise VideoError("corrupt", path, f"cannot open container: {_why(e)}") from None


def _frame_times(path: str, max_pixels: int) -> tuple[np.ndarray, float, float | None]:
    """Demux pass. Returns sorted presentation timestamps (stream time-base units as float seconds), the stream
    start time in seconds and the duration the header declares (or None)."""
    with _open(path) as container:
        if not container.streams.video:
            raise VideoError("no_video_stream", path, "container has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context  # None when FFmpeg knows no decoder for the stream's codec
        if ctx is None or ctx.codec is None:
            raise VideoError("unsupported_codec", path, "the video stream's codec has no decoder in this FFmpeg build")
        width, height = ctx.width, ctx.height
        if width * height > max_pixels:
            raise VideoError("too_large", path, f"frames are {width}x{height}, more than frames.max_source_pixels="
                             f"{max_pixels} pixels")
        tb = float(stream.time_base)
        declared = None
        if stream.duration:
            declared = stream.duration * tb
        elif container.duration:
            declared = container.duration / av.time_base
        pts = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size > 0:
                    pts.append(packet.pts)
        except av.FFmpegError as e:
            raise VideoError("corrupt", path, f"demuxing failed after {len(pts)} packets: {_why(e)}") from None
        start = stream.start_time * tb if stream.start_time is not None else 0.0
    times = np.sort(np.asarray(pts, dtype=np.float64)) * tb
    return times, start, declared


def _select(times: np.ndarray, sampling: FrameSampling, path: str) -> np.ndarray:
    n = len(times)
    if sampling.mode == "uniform":
        if n < sampling.num_frames:
            raise VideoError(
                "too_short", path, f"video has {n} frames, fewer than num_frames={sampling.num_frames}"
            )
        return np.linspace(0, n - 1, sampling.num_frames, dtype=np.int64)
    # fps: nearest frame to each tick of a 1/fps clock starting at the first frame
    ticks = np.arange(times[0], times[-1] + 1e-9, 1.0 / sampling.fps)
    right = np.clip(np.searchsorted(times, ticks), 1, n - 1) if n > 1 else np.zeros(len(ticks), np.int64)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(times[right] - ticks) < np.abs(ticks - times[left]), right, left)
    idx = np.unique(nearest)
    if sampling.max_frames and len(idx) > sampling.max_frames:
        idx = idx[np.linspace(0, len(idx) - 1, sampling.max_frames, dtype=np.int64)]
    return idx


def scaled_size(src_w: int, src_h: int, sampling: FrameSampling) -> tuple[int, int]:
    """``(width, height)`` a frame is scaled to before the centre crop (``crop``) or as the output (``stretch``)."""
    out_h, out_w = sampling.size
    if sampling.resize == "stretch":
        return out_w, out_h
    scale = max(out_w / src_w, out_h / src_h)  # cover the target, then centre-crop
    return max(out_w, round(src_w * scale)), max(out_h, round(src_h * scale))


def decode_frames(path: str, sampling: FrameSampling) -> DecodedVideo:
    """Decode the frames of ``path`` selected by ``sampling``, resized to ``sampling.size``.

    Raises:
        VideoError: missing/unreadable file, corrupt data, no video stream, zero frames, fewer frames than
            asked, or a stream that ends well before its declared duration (truncated).
    """
    times, start, declared = _frame_times(path, sampling.max_source_pixels)
    if len(times) == 0:
        raise VideoError("zero_frames", path, "video stream has no frames")
    frame_step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    span = times[-1] - times[0] + frame_step
    if declared and span < TRUNCATION_TOLERANCE * declared:
        raise VideoError("truncated", path, f"frames cover {span:.2f} s of the declared {declared:.2f} s")
    selected = _select(times, sampling, path)
    # Map presentation time -> output slots (a frame can fill several slots only if indices repeat).
    wanted: dict[int, list[int]] = {}
    for slot, i in enumerate(selected):
        wanted.setdefault(int(i), []).append(slot)
    out_h, out_w = sampling.size
    frames = np.empty((len(selected), out_h, out_w, 3), dtype=np.uint8)
    filled = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base)
        codec = stream.codec_context.name
        src_w, src_h = stream.codec_context.width, stream.codec_context.height
        scaled_w, scaled_h = scaled_size(src_w, src_h, sampling)
        top, left = (scaled_h - out_h) // 2, (scaled_w - out_w) // 2
        ctx = stream.codec_context
        order, skipped = 0, False

        def index_of(pts: int) -> int:
            return int(np.searchsorted(times, pts * tb - 1e-9))

        corrupt = 0  # decoded frames the decoder flags as corrupt (it concealed damaged data in them)
        try:
            for packet in container.demux(stream):
                # A frame no other frame is predicted from, and not selected, need not be decoded at all (the
                # decoder reads skip_frame per packet). Packets without a timestamp are always decoded.
                skip = packet.pts is not None and packet.size > 0 and index_of(packet.pts) not in wanted
                ctx.skip_frame = "NONREF" if skip else "DEFAULT"
                skipped |= skip
                for frame in packet.decode():
                    corrupt += frame.is_corrupt
                    # Frames come out in presentation order; map by pts where present, else by position (which
                    # only holds while nothing was skipped).
                    if frame.pts is None and skipped:
                        raise VideoError("corrupt", path, "decoded frames carry no timestamps to match them by")
                    i = index_of(frame.pts) if frame.pts is not None else order
                    order += 1
                    if i in wanted:
                        rgb = frame.reformat(width=scaled_w, height=scaled_h, format="rgb24").to_ndarray()
                        crop = rgb[top : top + out_h, left : left + out_w]
                        for slot in wanted.pop(i):
                            frames[slot] = crop
                            filled += 1
                if not wanted:
                    break
        except av.FFmpegError as e:
            raise VideoError("damaged", path, f"decoding failed after {filled} of {len(selected)} "
                             f"frames: {_why(e)}") from None
        container_name = container.format.name
    if wanted:
        raise VideoError(
            "corrupt", path, f"only {filled} of {len(selected)} selected frames could be decoded"
        )
    if corrupt > sampling.max_decode_errors:
        # FFmpeg conceals damaged macroblocks (copies from neighbours): the frames decode, but are guesses
        raise VideoError("damaged", path, f"the decoder flagged {corrupt} decoded frames as corrupt (damaged data it "
                         f"concealed; frames.max_decode_errors={sampling.max_decode_errors})")
    return DecodedVideo(
        frames=frames,
        timestamps=times[selected] - start,
        source_indices=selected.astype(np.int64),
        total_frames=len(times),
        duration_s=float(span),
        container=container_name,
        codec=codec,
        source_width=src_w,
        source_height=src_h,
    )


def read_extracted(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(T, H, W, 3)`` uint8 and their timestamps ``(T,)`` seconds as frame extraction saved them
    (``results/<study>/frames/<sample>.npz``; 0 frames when the video could not be used)."""
    try:
        with np.load(path) as data:
            return data["frames"], data["timestamps"]
    except FileNotFoundError:
        raise VideoError("missing", path, "no extracted frames here: frame extraction has not run for this sample") from None
