"""Video decoding (PyAV) and encoding, shared by frame extraction and the synthetic benchmark."""

from .decode import DecodedVideo, FrameSampling, decode_frames
from .encode import write_video

__all__ = ["DecodedVideo", "FrameSampling", "decode_frames", "write_video"]
