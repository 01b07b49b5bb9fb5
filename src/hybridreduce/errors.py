"""Exceptions that carry a user-facing reason; never a bare library traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config or manifest value is invalid. The message names the file/field and what was expected."""


class InfeasibleBudget(ConfigError):
    """A budget an input-dependent reduction cannot reach on this input (e.g. FrameFusion's merges of similar frames
    already overspend it): the study records it per sample (``failures``, kind ``infeasible_schedule``)."""


class VideoError(RuntimeError):
    """A video could not be used. ``kind`` is a short machine-readable category stored in ``failures``.

    Kinds: ``missing``, ``unreadable``, ``empty``, ``not_a_video``, ``corrupt``, ``truncated``, ``damaged`` (the
    decoder reported errors: concealed or undecodable data), ``no_video_stream``, ``unsupported_codec``,
    ``too_large``, ``zero_frames``, ``too_short``.
    """

    def __init__(self, kind: str, path: str, reason: str):
        super().__init__(f"{path}: {kind}: {reason}")
        self.kind = kind
        self.path = path
        self.reason = reason


# How allocation failures read: torch's CPU allocator, CUDA, and the loader mapping a library under a memory limit.
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to map segment")


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is an out-of-memory error (CPU or GPU)."""
    while exc is not None:
        if isinstance(exc, MemoryError) or any(m in str(exc).lower() for m in OUT_OF_MEMORY):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
