"""The CPU Mamba-2 inference path (``models/mamba_cpu.py``) against transformers' PyTorch reference, and the malloc
effect behind ``common.retain_freed_memory``: the figures quoted in that module, in ``common`` and in RESULTS.md.

    python benchmarks/mamba_cpu.py [--repeats 10]

1. The causal conv of one mixer (320 channels: 1 group of state 32 and 256 inner channels, the benchmark's CPU
   hybrid) at 8240 tokens, on the mixer's transposed view: transformers' ``conv1d`` against ``causal_conv1d_fn``.
2. The chunked scan at 8240 tokens (4 heads of 64; 1 group of state 32, and 2 groups of 64) for each longest chunk
   length, against transformers' reference; and at 49 tokens, with and without the final state (the state carry).
3. A ReLU² over an (8240, 672) float32 tensor in fresh processes, with glibc's adaptive malloc thresholds and with
   the fixed ones: how much a freshly mapped temporary costs.
4. The hybrid's whole Mamba-2 block (``prefill.py``'s CPU shape) at the token counts of its b = 0.1 schedule:
   transformers' mixer forward with transformers' functions, the same forward with our conv and scan, and
   ``mamba_cpu.mixer_forward``; interleaved, so load changes hit the three alike. Before it, the mixer's input
   projection at 8240 tokens as one product 580 wide and as the two that ``mixer_forward`` computes (576 + 4).

Medians of ``--repeats`` calls after a warm-up, one torch thread, without gradients.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import subprocess
import sys
import time

import torch
from common import load, machine, retain_freed_memory
from transformers.models.nemotron_h import modeling_nemotron_h

from hybridreduce.models import mamba_cpu
from hybridreduce.models.build import text_config

RELU2 = """
import sys, time, torch
sys.path.insert(0, {here!r})
if {fixed}:
    import common; common.retain_freed_memory()
torch.set_num_threads(1)
big = torch.randn(8240, 672)
torch.relu(big).square()
times = []
for _ in range(20):
    t = time.perf_counter(); torch.relu(big).square(); times.append(time.perf_counter() - t)
print(sorted(times)[10] * 1000)
"""


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def scan_inputs(length: int, groups: int, state: int, g: torch.Generator) -> tuple:
    heads, head_dim = 4, 64
    return (torch.randn(1, length, heads, head_dim, generator=g), torch.randn(1, length, heads, generator=g),
            -4 * torch.rand(heads, generator=g), torch.randn(1, length, groups, state, generator=g),
            torch.randn(1, length, groups, state, generator=g))


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine("cpu", 1, retain_freed_memory()))
    g = torch.Generator().manual_seed(0)
    r = args.repeats

    projection = torch.randn(1, 8240, 580, generator=g)  # [gate 256 | xBC 320 | dt 4], as the mixer's in_proj
    view = projection[..., 256:576].transpose(1, 2)
    weight, bias = torch.randn(320, 4, generator=g), torch.randn(320, generator=g)
    reference_conv = inspect.unwrap(modeling_nemotron_h.causal_conv1d_fn)
    ref = median_ms(lambda: reference_conv(view, weight, bias), r)
    ours = median_ms(lambda: mamba_cpu.causal_conv1d_fn(view, weight, bias), r)
    print(f"\nconv, 320 channels x 8240 tokens: transformers {ref:.1f} ms, ours {ours:.1f} ms ({ref / ours:.1f}x)")

    reference_scan = inspect.unwrap(modeling_nemotron_h.mamba2_chunk_scan)
    kw = dict(D=torch.randn(4, generator=g), dt_bias=torch.randn(4, generator=g), dt_softplus=True)
    default_chunk = mamba_cpu.LONGEST_CHUNK
    for groups, state in ((1, 32), (2, 64)):
        inputs = scan_inputs(8240, groups, state, g)
        ref = median_ms(lambda: reference_scan(*inputs, chunk_size=128, **kw), max(3, r // 3))
        cells = []
        for chunk in (32, 48, 64, 96, 128):
            mamba_cpu.LONGEST_CHUNK = chunk
            cells.append(f"{chunk}: {median_ms(lambda: mamba_cpu.chunk_scan(*inputs, 128, **kw), r):.1f}")
        mamba_cpu.LONGEST_CHUNK = default_chunk
        print(f"scan, 8240 tokens, {groups} group(s) of state {state}: transformers {ref:.1f} ms; ours by longest "
              f"chunk (ms) {' / '.join(cells)}")
    inputs = scan_inputs(49, 1, 32, g)
    plain = median_ms(lambda: mamba_cpu.chunk_scan(*inputs, 128, **kw), r * 50)
    final = median_ms(lambda: mamba_cpu.chunk_scan(*inputs, 128, return_final_states=True, **kw), r * 50)
    print(f"scan, 49 tokens: {plain:.2f} ms; with the final state (the carry runs) {final:.2f} ms")

    print("\nReLU^2 over (8240, 672) float32, median of 20 in a fresh process (ms):")
    here = str(__import__("pathlib").Path(__file__).parent)
    for label, fixed in (("glibc adaptive thresholds", False), ("fixed thresholds", True)):
        runs = [float(subprocess.run([sys.executable, "-c", RELU2.format(here=here, fixed=fixed)], check=True,
                                     capture_output=True, text=True).stdout) for _ in range(4)]
        print(f"  {label:>26}: " + " / ".join(f"{t:.1f}" for t in runs))

    mixer_section(r, g)
    print(f"\nload average at end: {load()}")


def mixer_variants() -> dict[str, dict]:
    """What the Nemotron-H mixer runs in each variant: transformers' forward and functions (``transformers``),
    transformers' forward with our conv and scan (``our conv + scan``: the routing without the mixer forward) and
    ours; as ``{attribute: function}``, ``forward`` being the mixer class's."""
    forward = modeling_nemotron_h.NemotronHMamba2Mixer.forward
    routed = {n: getattr(modeling_nemotron_h, n) for n in ("causal_conv1d_fn", "mamba2_chunk_scan")}
    return {"transformers": {**{n: inspect.unwrap(f) for n, f in routed.items()}, "forward": forward.routed_from},
            "our conv + scan": {**routed, "forward": forward.routed_from},
            "ours": {**routed, "forward": forward}}


def use(variant: dict) -> None:
    for name, function in variant.items():
        setattr(modeling_nemotron_h.NemotronHMamba2Mixer if name == "forward" else modeling_nemotron_h, name, function)


def mixer_section(repeats: int, g: torch.Generator) -> None:
    from prefill import SHAPES  # the benchmark's CPU hybrid

    config = text_config(SHAPES["nemotron_h_8b_pattern"][1], vocab_size=16)
    block = modeling_nemotron_h.NemotronHBlock(config, layer_idx=0).eval()
    weight = block.mixer.in_proj.weight
    split = block.mixer.intermediate_size + block.mixer.conv_dim  # [gate | xBC], then dt (mixer_forward's products)
    x = torch.randn(8240, config.hidden_size, generator=g)
    one = median_ms(lambda: torch.nn.functional.linear(x, weight), repeats)
    two = [median_ms(lambda w=w: torch.nn.functional.linear(x, w), repeats) for w in (weight[:split], weight[split:])]
    print(f"\nMamba-2 in_proj at 8240 tokens: one product {weight.shape[0]} wide {one:.1f} ms; "
          f"{two[0]:.1f} + {two[1]:.1f} ms as {split} + {weight.shape[0] - split}")
    variants = mixer_variants()
    print("Mamba-2 block (norm, mixer, residual), median ms: " + " / ".join(variants))
    for length in (8240, 1958, 152, 49):
        hidden = torch.randn(1, length, config.hidden_size, generator=g) * 0.02
        times = {v: [] for v in variants}
        for rep in range(1 + max(repeats, 20000 // length)):
            for v in variants:
                use(variants[v])
                t = time.perf_counter()
                block(hidden)
                if rep:
                    times[v].append(time.perf_counter() - t)
        use(variants["ours"])
        cells = [statistics.median(times[v]) * 1000 for v in variants]
        print(f"  {length:>5} tokens: " + " / ".join(f"{c:.3f}" for c in cells)
              + f"  ({cells[0] / cells[2]:.2f}x, {cells[1] / cells[2]:.2f}x)")


if __name__ == "__main__":
    main()
