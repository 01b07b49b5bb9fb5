"""Writing real compressed video files with PyAV (used by the synthetic benchmark and the tests)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

# Codec per container: H.264 where the container takes it, VP9 for WebM (which only takes VP8/VP9/AV1).
CODEC_FOR_CONTAINER = {"mp4": "libx264", "mkv": "libx264", "webm": "libvpx-vp9"}


def write_video(
    path: str, frames: Iterable[np.ndarray], fps: int, codec: str | None = None, crf: int = 23,
    faststart: bool = True,
) -> None:
    """Encode ``frames`` (each ``(H, W, 3)`` uint8 RGB, even H and W) to ``path``.

    The container comes from the file extension; ``codec`` defaults to :data:`CODEC_FOR_CONTAINER`. The file
    is written to a temporary name and renamed, so a killed job never leaves a half-written video behind.
    ``faststart=False`` leaves an mp4's index at the end, as many cameras and tools write it.
    """
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    codec = codec or CODEC_FOR_CONTAINER.get(ext)
    if codec is None:
        raise ValueError(f"{path}: no default codec for container '.{ext}' (known: {sorted(CODEC_FOR_CONTAINER)})")
    tmp = f"{path}.tmp.{os.getpid()}.{ext}"
    options = {"crf": str(crf)}
    # faststart puts the index first, so a cut-off mp4 still opens and is caught as truncated
    container_options = {"movflags": "+faststart"} if ext == "mp4" and faststart else {}
    container_options["fflags"] = "+bitexact"  # no random ids or dates in the container: same frames, same bytes
    if codec == "libx264":
        options.update(preset="veryfast")
    elif codec == "libvpx-vp9":
        options.update({"b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"})
    try:
        with av.open(tmp, mode="w", format={"mkv": "matroska"}.get(ext, ext), options=container_options) as container:
            stream = container.add_stream(codec, rate=Fraction(fps))
            stream.pix_fmt = "yuv420p"
            stream.options = options
            # One encoder thread: threaded x264 output depends on how fast frames arrive (measured: the same
            # frames gave three different files in five runs).
            stream.codec_context.thread_count = 1
            stream.codec_context.thread_type = "NONE"
            first = True
            for rgb in frames:
                if first:
                    stream.height, stream.width = rgb.shape[:2]
                    first = False
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
