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
        query: ``(|Q|, d)`` float32, the question's tokens as the model embeds them at the LLM input (the query part
            of its prompt), for query-conditioned methods (``cdpruner``, ``dart_embed``); None when unknown.
    """

    embeddings: torch.Tensor
    pixels: torch.Tensor | None = None
    frame_interval_s: float | None = None
    query: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        t, h, w, _ = self.embeddings.shape
        return t, h, w


TRUTH = "truth."  # key prefix of the ground-truth masks stored beside a grid


def patchify(frames: np.ndarray, patch_size: int) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, H // p, W // p, p * p * 3)`` float32 (edges that do not fill a patch are
    dropped, as a ViT's patch embedding does)."""
    t, hh, ww, c = frames.shape
    h, w = hh // patch_size, ww // patch_size
    x = torch.from_numpy(np.ascontiguousarray(frames[:, : h * patch_size, : w * patch_size])).float()
    x = x.reshape(t, h, patch_size, w, patch_size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(t, h, w, patch_size * patch_size * c)


def save_grid(path: str, grid: TokenGrid, time_s: float, truth: dict[str, np.ndarray] | None = None) -> None:
    """Write one video's grid and the seconds its encoding took as a safetensors file (atomically), with the
    sample's ground-truth token masks ``truth`` (name -> ``(T, h, w)`` bool, e.g. the evidence tokens), if any.

    Embeddings keep their values exactly: they are stored in bfloat16 or float16 when that holds them exactly
    (a bf16 model's tokens, cast to float32 by its adapter), else in float32; pixels in uint8 when they are whole
    numbers in [0, 255] (a tiny model's patches of the 8-bit frames), else in float32."""
    from safetensors.torch import save

    from ..files import atomic_write

    emb = grid.embeddings.detach().float().cpu().contiguous()
    for dtype in (torch.bfloat16, torch.float16):
        if torch.equal(emb.to(dtype).float(), emb):
            emb = emb.to(dtype)
            break
    tensors = {"embeddings": emb, "time_s": torch.tensor(float(time_s), dtype=torch.float64)}
    if grid.pixels is not None:
        px = grid.pixels.detach().float().cpu().contiguous()
        whole = bool(torch.equal(px, px.round()) and px.min() >= 0 and px.max() <= 255) if px.numel() else True
        tensors["pixels"] = px.to(torch.uint8) if whole else px
    if grid.frame_interval_s is not None:
        tensors["frame_interval_s"] = torch.tensor(float(grid.frame_interval_s), dtype=torch.float64)
    if grid.query is not None:
        tensors["query"] = grid.query.detach().float().cpu().contiguous()
    for name, mask in (truth or {}).items():
        if tuple(mask.shape) != grid.shape:
            raise ValueError(f"save_grid: truth mask {name!r} of shape {tuple(mask.shape)}, the grid is {grid.shape}")
        tensors[TRUTH + name] = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
    with atomic_write(path, "wb", suffix=".safetensors") as f:
        f.write(save(tensors))


def load_truth(path: str) -> dict[str, np.ndarray]:
    """The ground-truth token masks :func:`save_grid` stored with a grid (name -> ``(T, h, w)`` bool; empty: none)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return {k[len(TRUTH):]: f.get_tensor(k).numpy() for k in f.keys() if k.startswith(TRUTH)}


def load_grid(path: str, device: str | torch.device = "cpu") -> tuple[TokenGrid, float]:
    """The grid :func:`save_grid` wrote (float32 embeddings and pixels on ``device``) and its encoding seconds."""
    from safetensors.torch import load_file

    t = load_file(path)
    pixels = t["pixels"].float().to(device) if "pixels" in t else None
    interval = float(t["frame_interval_s"]) if "frame_interval_s" in t else None
    query = t["query"].to(device) if "query" in t else None
    return (TokenGrid(embeddings=t["embeddings"].float().to(device), pixels=pixels, frame_interval_s=interval,
                      query=query), float(t["time_s"]))
