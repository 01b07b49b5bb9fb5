"""Time of every pre-LLM method per video, at the default study's and the paper config's frame counts.

    python benchmarks/pre_llm.py [--save] [--repeats 3] [--dim 64] [--tokens-per-frame 16]

Each method runs through the redundancy stage's own entry point (``mask_arrays``, which also times it) on one
video's token grid: 64 frames (the default study) and 256 frames (config/paper.yaml's max_frames), 16 tokens per
frame and the tiny models' hidden size (64) unless told otherwise, random tokens with a static background and
moving cells, and a 24-token question for the query-conditioned methods; pruning rate 0.5. The figure is the median
wall time of ``repeats`` runs after one warm-up, on one torch thread as in the study's jobs. ``--save`` writes
benchmarks/records/pre_llm.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import load, machine, row, save

from hybridreduce.redundancy import TokenGrid, mask_arrays, registry

FRAME_COUNTS = {"default study": 64, "paper config": 256}


def video_grid(frames: int, tokens_per_frame: int, dim: int, seed: int = 0) -> TokenGrid:
    """A static background (the same tokens in every frame, plus noise) with a few cells that change over time."""
    gen = torch.Generator().manual_seed(seed)
    side = int(tokens_per_frame ** 0.5)
    background = torch.randn(1, side, side, dim, generator=gen)
    emb = background + 0.05 * torch.randn(frames, side, side, dim, generator=gen)
    moving = torch.rand(frames, side, side, generator=gen) < 0.1
    emb[moving] = torch.randn(int(moving.sum()), dim, generator=gen)
    pixels = (emb[..., :3].repeat(1, 1, 1, 256) * 40 + 128).clamp(0, 255).round()
    return TokenGrid(embeddings=emb, pixels=pixels, query=torch.randn(24, dim, generator=gen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--tokens-per-frame", type=int, default=16)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    line = machine(threads=1)
    print(line)
    rows = []
    for scale, frames in FRAME_COUNTS.items():
        grid = video_grid(frames, args.tokens_per_frame, args.dim)
        print(f"\n{scale}: {frames} frames x {args.tokens_per_frame} tokens x {args.dim}, q = 0.5")
        for method in sorted(registry()):
            times = []
            for i in range(args.repeats + 1):
                t0 = time.perf_counter()
                _, info = mask_arrays(method, grid, 0.5)
                if i:  # the first run is the warm-up
                    times.append(time.perf_counter() - t0)
            ms = 1e3 * statistics.median(times)
            print(f"  {method:<12} {ms:9.2f} ms per video  ({info['tokens_kept']} of {info['tokens_total']} kept)")
            rows.append(row(f"{method} {frames} frames", "ms_per_video", ms, "ms", higher_is_better=False))
    print(f"\nload {load()} at end")
    if args.save:
        print("saved", save("pre_llm", line, rows))


if __name__ == "__main__":
    main()
