"""The model-agnostic input of every pre-LLM method: a ``T x h x w`` grid of visual tokens, as a model's vision
encoder and projector give them (``VLMAdapter.encode_video``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TokenGrid:
    """Visual tokens of one video.

    Attributes:
        embeddings: ``(T, h, w, d)`` float32, one token per spatial cell per frame (after encoder/projector).
        pixels: ``(T, h, w, p * p * 3)`` float32 raw RGB of each token's patch in [0, 255], or None when the
            tokens do not correspond to pixel patches (methods that need pixels then refuse to run).
        frame_interval_s: seconds between the sampled frames the grid was encoded from (None: unknown), for
            models whose positions encode time (Qwen2.5-VL's M-RoPE).
    """

    embeddings: torch.Tensor
    pixels: torch.Tensor | None = None
    frame_interval_s: float | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        t, h, w, _ = self.embeddings.shape
        return t, h, w


def patchify(frames: np.ndarray, patch_size: int) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, H // p, W // p, p * p * 3)`` float32 (edges that do not fill a patch are
    dropped, as a ViT's patch embedding does)."""
    t, hh, ww, c = frames.shape
    h, w = hh // patch_size, ww // patch_size
    x = torch.from_numpy(np.ascontiguousarray(frames[:, : h * patch_size, : w * patch_size])).float()
    x = x.reshape(t, h, patch_size, w, patch_size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(t, h, w, patch_size * patch_size * c)
