"""Exceptions that carry a user-facing reason; never a bare library traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config or manifest value is invalid. The message names the file/field and what was expected."""


class VideoError(RuntimeError):
    """A video could not be used. ``kind`` is a short machine-readable category stored in ``failures``.

    Kinds: ``missing``, ``unreadable``, ``corrupt``, ``no_video_stream``, ``zero_frames``, ``too_short``,
    ``truncated``.
    """

    def __init__(self, kind: str, path: str, reason: str):
        super().__init__(f"{path}: {kind}: {reason}")
        self.kind = kind
        self.path = path
        self.reason = reason
