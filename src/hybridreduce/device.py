"""Device helpers shared by the reduction engine and the timing code (a ground-floor module)."""

from __future__ import annotations

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def capturing(device: torch.device) -> bool:
    """Whether work on ``device`` is being captured into a CUDA graph: then nothing may wait for the device or read
    a value back from it."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()
