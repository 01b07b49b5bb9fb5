"""Time of every pre-LLM method per video, at the default study's and the paper config's frame counts.

    python benchmarks/pre_llm.py [--save] [--repeats 3] [--dim 64] [--tokens-per-frame 16]

Each method runs through the redundancy stage's own entry point (``mask_arrays``, which also times it) on one
video's token grid: 64 frames (the default study) and 256 frames (config/paper.yaml's max_frames), 16 tokens per
frame and the tiny models' hidden size (64) unless told otherwise, random tokens with a static background and
moving cells, and a 24-token question for the query-conditioned methods; pruning rate 0.5. The figure is the median
wall time of ``repeats`` runs after one warm-up, on one torch thread as in the study's jobs. Beside it, each
method's time as a share of the prefill it precedes: the shipped tiny hybrid's (checkpoints/tiny_hybrid) unreduced
prefill of a prompt with that many vision tokens, timed the same way (the share a pre-LLM method adds on top of a
prefill it does not shorten). ``--save`` writes benchmarks/records/pre_llm.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import REPO, load, machine, row, save

from hybridreduce.models import load_adapter
from hybridreduce.reduction.engine import prefill
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


def median_s(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up."""
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        fn()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def prefill_s(adapter, grid: TokenGrid, repeats: int) -> float:
    """The unreduced prefill of a prompt with ``grid``'s vision tokens (the shipped hybrid's question layout)."""
    prompt = adapter.build_prompt(grid, None, "What colour was the circle that appeared?",
                                  ["red", "green", "blue", "yellow"])
    with torch.no_grad():
        return median_s(lambda: prefill(adapter.stack, prompt.embeds, prompt.layout), repeats)


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
    adapter = load_adapter("tiny_hybrid", {"kind": "tiny", "path": str(REPO / "checkpoints" / "tiny_hybrid")})
    for scale, frames in FRAME_COUNTS.items():
        grid = video_grid(frames, args.tokens_per_frame, args.dim)
        prefill_ms = 1e3 * prefill_s(adapter, grid, args.repeats)
        print(f"\n{scale}: {frames} frames x {args.tokens_per_frame} tokens x {args.dim}, q = 0.5; the tiny "
              f"hybrid's unreduced prefill {prefill_ms:.1f} ms")
        rows.append(row(f"tiny_hybrid prefill {frames} frames", "ms_per_video", prefill_ms, "ms",
                        higher_is_better=False))
        for method in sorted(registry()):
            info = {}
            ms = 1e3 * median_s(lambda: info.update(mask_arrays(method, grid, 0.5)[1]), args.repeats)
            print(f"  {method:<12} {ms:9.2f} ms per video  ({100 * ms / prefill_ms:5.1f}% of the prefill; "
                  f"{info['tokens_kept']} of {info['tokens_total']} kept)")
            rows.append(row(f"{method} {frames} frames", "ms_per_video", ms, "ms", higher_is_better=False))
            rows.append(row(f"{method} {frames} frames", "share_of_prefill", ms / prefill_ms, "x",
                            higher_is_better=False))
    print(f"\nload {load()} at end")
    if args.save:
        print("saved", save("pre_llm", line, rows))


if __name__ == "__main__":
    main()
