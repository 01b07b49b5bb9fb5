"""Video decoding (PyAV) and encoding, shared by frame extraction and the synthetic benchmark."""

from .decode import DecodedVideo, FrameSampling, decode_frames, read_extracted
from .encode import write_video

__all__ = ["DecodedVideo", "FrameSampling", "decode_frames", "read_extracted", "write_video"]
