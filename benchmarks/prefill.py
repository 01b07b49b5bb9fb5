"""Prefill speedup of in-LLM reduction against its analytic limit, and the share of prefill spent scoring.

    python benchmarks/prefill.py [--save] [--explain] [--vision 8192] [--repeats 5] [--device auto|cpu|cuda]
                                 [--cuda-graphs] [--profile [ROWS]]

Two random-weight decoders built from transformers' own config classes, shaped like real ones: a hybrid with
Nemotron-H-8B's 52-layer pattern (Mamba-2 / attention / MLP) and a 24-layer Qwen2-class Transformer. The prompt
is ``[16 prefix][N vision][32 query]`` embeddings. For each budget the paper's method (``hybrid_progressive``,
stages from layer 2, 4 stages as in config/paper.yaml) and the baseline (no reduction) are timed in turn in one
process (warm-up, then the median of interleaved repeats), and the script prints:

* speedup = prefill_none / prefill_method;
* limit = analytic FLOPs without reduction / with the realised schedule (scoring/flops.py), i.e. the speedup a
  perfect implementation would reach;
* quotient = speedup / limit (target >= 0.9);
* scoring share = time spent scoring and gathering tokens / prefill of the reduced run (target <= 3%), both the
  medians of the timed rounds.

On CPU the widths are scaled down (hidden 128) so a run takes minutes on a few cores; on a GPU (``--device cuda``,
the default when one is present) the real widths are used in bfloat16, and the Mamba-2 layers run mamba-ssm's
kernels when that package is installed (the output says which). ``--explain`` adds, per layer type, how its
measured cost shrinks with the token count against the analytic FLOPs at the lowest budget's token counts (where a
shortfall comes from).
``--cuda-graphs`` (GPU) captures every timed prefill, the unreduced one included, in a CUDA graph
(reduction/cuda_graph.py) and times its replays. A graph cannot be timed in parts, so there the scoring share is
1 - oracle / reduced, where the oracle is the same reduced prefill captured with the kept tokens given
(``fixed_keep``) instead of scored: the scores and the top-k, without the gathers both runs make (the record's
unit says so). In graph mode the cpu-time columns mostly measure the host waiting for the device.
``--profile`` prints, for one eager prefill at the lowest budget, each layer type's host (and device) time
per call at each token count, and torch.profiler's top operators.
``--save`` writes benchmarks/records/prefill_<device>[_graphs].json.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch
from common import interleaved, load, machine, retain_freed_memory, row, save, verdict
from transformers import AutoModelForCausalLM

from hybridreduce.models.build import text_config
from hybridreduce.models.mamba_kernels import describe
from hybridreduce.models.stack import layer_pattern, stack_for
from hybridreduce.reduction.engine import PromptLayout, prefill
from hybridreduce.reduction.methods import plan
from hybridreduce.scoring.flops import prefill_flops
from hybridreduce.scoring.latency import synchronize

NEMOTRON_H_8B_PATTERN = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"  # nvidia/Nemotron-H-8B-Base-8K
# (name, real widths for a GPU, scaled widths for a CPU); every other field comes from text_config's defaults.
# The CPU widths keep the real model's proportions to its hidden size where the head size allows: MLP 5.25x,
# attention and Mamba-2 inner width 1x and 2x, Mamba-2 heads of 64 (hidden / 32 of them), B and C channels
# (n_groups x ssm_state_size) hidden / 4, so the in_proj is 4.53x hidden wide as in Nemotron-H-8B. Only the scan's
# state stays relatively larger (32 per group at hidden 128 against 128 at 4096). An earlier CPU shape (2 groups of
# 64: B/C channels = hidden) gave the Mamba-2 scan and the importance score's B projection 4x the real share of a
# layer; it stays runnable as `--models nemotron_h_8b_pattern_wide_ssm` (RESULTS.md has runs of both).
NEMOTRON_H_8B = dict(family="nemotron_h", pattern=NEMOTRON_H_8B_PATTERN, hidden_size=4096, num_attention_heads=32,
                     num_key_value_heads=8, intermediate_size=21504, ssm_state_size=128, mamba_num_heads=128,
                     mamba_head_dim=64, n_groups=8, chunk_size=128)
SHAPES = {
    "nemotron_h_8b_pattern": (
        NEMOTRON_H_8B,
        dict(family="nemotron_h", pattern=NEMOTRON_H_8B_PATTERN, hidden_size=128, num_attention_heads=2,
             num_key_value_heads=1, intermediate_size=672, ssm_state_size=32, mamba_num_heads=4,
             mamba_head_dim=64, n_groups=1, chunk_size=128)),
    "nemotron_h_8b_pattern_wide_ssm": (  # the CPU shape before: B/C channels = hidden (not run by default)
        NEMOTRON_H_8B,
        dict(family="nemotron_h", pattern=NEMOTRON_H_8B_PATTERN, hidden_size=128, num_attention_heads=2,
             num_key_value_heads=1, intermediate_size=672, ssm_state_size=64, mamba_num_heads=4,
             mamba_head_dim=64, n_groups=2, chunk_size=128)),
    "qwen2_7b_class": (  # Qwen2.5-7B's text decoder
        dict(family="qwen2", num_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
             intermediate_size=18944),
        dict(family="qwen2", num_layers=24, hidden_size=128, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=704)),
}
DEFAULT_MODELS = ["nemotron_h_8b_pattern", "qwen2_7b_class"]
BUDGETS = (0.5, 0.25, 0.1)
REDUCTION = {"first_layer": 2, "num_stages": 4}  # config/paper.yaml
PREFIX, QUERY = 16, 32
SPEEDUP_TARGET, SCORING_TARGET = 0.9, 0.03
WARMUP = 1  # untimed rounds before the timed ones


def build(llm: dict, device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    config = text_config(llm, vocab_size=1024)  # the vocabulary only sizes the LM head, applied to one position
    config.max_position_embeddings = max(config.max_position_embeddings, 1 << 16)
    with device:  # initialised where it runs: an 8B model's random init on the host alone takes minutes
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def timed_runs(stack, embeds, layout, plans: dict, graphs: bool, score_s: dict) -> dict:
    """What :func:`bench_model` times: ``none`` and each budget's reduced prefill, eager or as CUDA graph replays
    (with each budget's oracle, ``(budget, "oracle")``: see the module's docstring). Eager runs append their
    scoring time to ``score_s[budget]``."""
    if not graphs:
        def reduced(b, schedule):
            result = prefill(stack, embeds, layout, schedule)
            score_s.setdefault(b, []).append(result.score_s)
            return result

        runs = {"none": lambda: prefill(stack, embeds, layout)}
        runs.update({b: partial(reduced, b, s) for b, s in plans.items()})
        return runs
    from hybridreduce.reduction.cuda_graph import CapturedPrefill

    runs = {"none": CapturedPrefill(stack, embeds, layout)}
    for b, s in plans.items():
        runs[b] = CapturedPrefill(stack, embeds, layout, s)
        kept = {i: k.clone() for i, k in runs[b]().stage_keep.items()}
        runs[b, "oracle"] = CapturedPrefill(stack, embeds, layout, s, fixed_keep=kept)
    return runs


def bench_model(name: str, llm: dict, device: torch.device, dtype: torch.dtype, args: argparse.Namespace
                ) -> list[dict]:
    n_vision, graphs = args.vision, args.cuda_graphs
    model = build(llm, device, dtype)
    stack = stack_for(model)
    length = PREFIX + n_vision + QUERY
    embeds = (torch.randn(1, length, model.config.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.02
              ).to(device, dtype)
    layout = PromptLayout(vision_idx=torch.arange(PREFIX, PREFIX + n_vision, device=device),
                          query_idx=torch.arange(PREFIX + n_vision, length, device=device))
    plans = {b: plan("hybrid_progressive", stack.layer_types, b, n_vision, REDUCTION)[0] for b in BUDGETS}
    sync = partial(synchronize, device)
    score_s: dict = {}  # per budget, every round's (the warm-up's first)
    medians, cpu, last = interleaved(timed_runs(stack, embeds, layout, plans, graphs, score_s), args.repeats,
                                     warmup=WARMUP, sync=sync)

    text = PREFIX + QUERY
    flops_none = prefill_flops(stack, [text + n_vision] * len(stack.layers))
    pattern = layer_pattern(stack.layer_types)
    print(f"\n{name}: {len(stack.layers)} layers {pattern}, hidden {model.config.hidden_size}, {n_vision} vision "
          f"+ {text} text tokens, {dtype}; prefill without reduction {medians['none'] * 1000:.0f} ms"
          + (" (CUDA graphs)" if graphs else ""))
    print(f"  {'budget':>6} {'realised':>8} {'prefill ms':>10} {'speedup':>8} {'limit':>6} {'quotient':>8} "
          f"{'scoring':>8} {'cpu-time speedup':>16} {'quotient':>8}")
    rows = []
    for b in BUDGETS:
        result = last[b]
        assert result.vision_per_layer == plans[b].tokens_per_layer()
        limit = flops_none / prefill_flops(stack, [text + n for n in result.vision_per_layer])
        speedup = medians["none"] / medians[b]
        quotient = speedup / limit
        share = (1 - medians[b, "oracle"] / medians[b] if graphs
                 else statistics.median(score_s[b][WARMUP:]) / medians[b])  # the timed rounds' median, as for the times
        cpu_speedup = cpu["none"] / cpu[b]
        print(f"  {b:>6g} {plans[b].realised_budget:>8.3f} {medians[b] * 1000:>10.0f} {speedup:>8.2f} "
              f"{limit:>6.2f} {quotient:>8.3f} {share:>8.2%} {cpu_speedup:>16.2f} {cpu_speedup / limit:>8.3f}"
              f"{verdict(quotient >= SPEEDUP_TARGET)}{verdict(share <= SCORING_TARGET)}"
              + ("  (oracle slower than the scored run: within the noise)" if share < 0 else ""))
        setting = f"{name} b={b:g}"
        rows += [row(setting, "speedup", speedup, "x"), row(setting, "flops_limit", limit, "x"),
                 row(setting, "speedup_over_limit", quotient, "ratio", SPEEDUP_TARGET),
                 row(setting, "cpu_time_speedup_over_limit", cpu_speedup / limit, "ratio"),
                 row(setting, "scoring_share", share,
                     "fraction of prefill (graphs: scores and top-k, gathers excluded)" if graphs else
                     "fraction of prefill", SCORING_TARGET, higher_is_better=False)]
    rows.append(row(f"{name} b=1", "prefill_none_s", medians["none"], "s"))
    if args.explain:
        lowest = [text + n for n in plans[min(BUDGETS)].tokens_per_layer()]  # furthest from the full sequence
        explain_scaling(stack, lowest, device, model.config.hidden_size, dtype, sync)
    if args.profile:
        profile_prefill(stack, embeds, layout, plans[min(BUDGETS)], device, args.profile)
    return rows


@torch.no_grad()
def profile_prefill(stack, embeds, layout, schedule, device, rows: int) -> None:
    """Where one eager reduced prefill spends its time, from torch.profiler: per layer type and token count, the
    host's time per call beside the device's (a layer whose host time exceeds its device time is bound by its
    launches), then the ``rows`` operators with the most self time on the device (GPU) or the host (CPU)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    gpu = device.type == "cuda"
    run_layer = stack.run_layer

    def labelled(i, hidden, ctx):
        with record_function(f"layer {stack.layer_types[i]} at {hidden.shape[1]} tokens"):
            return run_layer(i, hidden, ctx)

    stack.run_layer = labelled  # this instance only, for this profile
    try:
        prefill(stack, embeds, layout, schedule)  # warm
        synchronize(device)
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
            prefill(stack, embeds, layout, schedule)
            synchronize(device)
    finally:
        del stack.run_layer
    averages = prof.key_averages()
    print(f"  profile of one eager prefill at b={min(BUDGETS):g} (torch.profiler), per layer call: host"
          + (" / device" if gpu else "") + " ms")
    for event in sorted((e for e in averages if e.key.startswith("layer ")), key=lambda e: -e.cpu_time_total):
        device_ms = f" / {event.device_time_total / event.count / 1000:.3f}" if gpu else ""
        print(f"    {event.key:<32} {event.count:>3} calls  {event.cpu_time_total / event.count / 1000:.3f}{device_ms}")
    print(averages.table(sort_by="self_device_time_total" if gpu else "self_cpu_time_total", row_limit=rows))


@torch.no_grad()  # as the engine's prefill runs (on a CPU the Mamba-2 layers then run models/mamba_cpu)
def explain_scaling(stack, tokens_per_layer: list[int], device, hidden: int, dtype, sync) -> None:
    """Why a measured speedup differs from the FLOPs ratio, for the schedule with ``tokens_per_layer``.

    1. Mix: the FLOPs limit weighs layers by FLOPs, but a layer type's time per FLOP differs (the Mamba-2 scan
       far from matmul speed, attention on long sequences close to it). Printed: each type's time per GFLOP on
       the full sequence, and the *cost-weighted limit*: the speedup if every layer's time shrank exactly with
       its FLOPs from its measured full-sequence time.
    2. Scaling: for one layer of each type, its time on the full sequence over its time at each shorter length,
       beside the same ratio in FLOPs; a time ratio below the FLOPs ratio is cost that does not shrink with the
       tokens (fixed per-call overhead, the Mamba-2 scan's padding to whole chunks, small matrices running slower).
    """
    from hybridreduce.models.stack import SeqState
    from hybridreduce.scoring.flops import layer_flops

    lengths = sorted(set(tokens_per_layer), reverse=True)
    first = {t: stack.layer_types.index(t) for t in dict.fromkeys(stack.layer_types)}
    runs = {}
    for n in lengths:
        h = torch.randn(1, n, hidden, device=device, dtype=dtype) * 0.02
        index = torch.arange(n, device=device)
        ctx = stack.begin(h, SeqState(index, index))
        runs.update({(n, t): (lambda i=i, h=h, ctx=ctx: stack.run_layer(i, h, ctx)) for t, i in first.items()})
    medians, _, _ = interleaved(runs, repeats=5, sync=sync)  # every length in one interleaved run, like the prefills
    full = lengths[0]
    per_gflop = {t: medians[full, t] / layer_flops(stack, i, full) * 1e9 for t, i in first.items()}
    print(f"  time per GFLOP on the full sequence ({full} tokens): "
          + ", ".join(f"{t} {ms * 1000:.3g} ms" for t, ms in per_gflop.items()))
    predicted = [per_gflop[stack.layer_types[i]] * layer_flops(stack, i, n) / 1e9
                 for i, n in enumerate(tokens_per_layer)]
    print(f"  cost-weighted limit at b={min(BUDGETS):g}: "
          f"{sum(medians[full, t] for t in stack.layer_types) / sum(predicted):.2f}")
    print("  per-layer cost: full sequence / shorter one, measured vs analytic")
    for n in lengths[1:]:
        cells = [f"{t} {medians[full, t] / medians[n, t]:7.1f} vs "
                 f"{layer_flops(stack, i, full) / layer_flops(stack, i, n):7.1f}" for t, i in first.items()]
        print(f"  {n:>6} tokens: " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vision", type=int, default=8192, help="vision tokens N (default 8192)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds after one warm-up round (5: medians that hold on a shared machine)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared machines)")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(SHAPES))
    parser.add_argument("--widths", choices=("auto", "real", "small"), default="auto",
                        help="auto: the real widths on a GPU, the scaled-down ones on CPU")
    parser.add_argument("--explain", action="store_true",
                        help="also time one layer of each type at every token count the schedules reach")
    parser.add_argument("--profile", type=int, nargs="?", const=25, default=0, metavar="ROWS",
                        help="also profile one eager prefill at the lowest budget: time per layer call by type and "
                             "token count, then torch.profiler's top ROWS operators (default 25)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="time CUDA graph replays of every prefill (GPU only; see above)")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/records/prefill_<device>[_graphs].json")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's adaptive malloc thresholds as they are (see common.retain_freed_memory)")
    args = parser.parse_args()
    allocator = "system malloc (adaptive thresholds)" if args.system_malloc else retain_freed_memory()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    if args.cuda_graphs and not gpu:
        parser.error(f"--cuda-graphs needs a CUDA device; this run's device is {device}")
    device_name = torch.cuda.get_device_name(device) if gpu else "cpu"
    line = machine(f"{device_name} ({describe(device)})", args.threads, allocator)
    print(line)
    rows = []
    for name in args.models:
        real, small = SHAPES[name]
        real_widths = args.widths == "real" or (args.widths == "auto" and gpu)
        rows += bench_model(name, real if real_widths else small, device, torch.bfloat16 if gpu else torch.float32,
                            args)
    print(f"\nload average at end: {load()}")
    if args.save:
        print("saved", save(f"prefill_{'gpu' if gpu else 'cpu'}{'_graphs' if args.cuda_graphs else ''}", line, rows))


if __name__ == "__main__":
    main()
