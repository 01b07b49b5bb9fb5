"""A prefill captured once as a CUDA graph, then replayed.

Eager PyTorch launches every kernel of a prefill from Python, at a host cost of microseconds to tens of
microseconds each. After a stage has cut the sequence to a few hundred tokens, a GPU layer costs its launches more
than its arithmetic (``benchmarks/RESULTS.md``, "On a GPU"), and the reduced prefill stays far from its FLOPs limit.
The engine's prefill reads nothing back from the device: the prompt's length, its layout and the schedule fix
every shape. So the whole prefill can be captured once: the layers, the scores, the top-k and the gathers. A replay
is then one launch.
"""

from __future__ import annotations

import torch

from ..models.stack import DecoderStack
from .engine import PrefillResult, PromptLayout, Scorer, prefill
from .schedule import Schedule


class CapturedPrefill:
    """``prefill(stack, embeds, layout, schedule, scorer, fixed_keep)`` for one input shape, as a CUDA graph.

    Construction runs the prefill ``warmup`` times on a side stream, then captures it. The warm-up covers the work
    done once, outside the graph: cuBLAS handles, Triton's compilation and autotuning, the stack's mask memo and
    ``layout.query_start``. Calling the object replays the graph on new ``embeds`` of the same shape, copied into
    the graph's input.

    Args:
        embeds (`torch.Tensor` of shape `(1, L, D)`): on a CUDA device; the graph's first input.
        Others: as :func:`~.engine.prefill`, with the layout's and ``fixed_keep``'s tensors on ``embeds``' device.
        A ``fixed_keep`` replay is checked in the warm-up runs. The object keeps every input alive, since the graph
        reads their memory.

    The returned :class:`~.engine.PrefillResult` is the same object at every call. Its tensors live in the graph's
    memory, and the next replay overwrites them: clone what you keep. ``score_s`` is 0, because a graph cannot be
    timed in parts.
    """

    def __init__(self, stack: DecoderStack, embeds: torch.Tensor, layout: PromptLayout,
                 schedule: Schedule | None = None, scorer: Scorer | None = None,
                 fixed_keep: dict[int, torch.Tensor] | None = None, warmup: int = 2):
        if scorer is not None and scorer.kind == "random":
            raise ValueError("the random scorer draws its scores on the host: it cannot run in a CUDA graph")
        if embeds.device.type != "cuda":
            raise ValueError(f"CapturedPrefill needs CUDA tensors, got embeds on {embeds.device}")
        inputs = {"layout.vision_idx": layout.vision_idx, "layout.query_idx": layout.query_idx,
                  "layout.position_ids": layout.position_ids,
                  **{f"fixed_keep[{i}]": k for i, k in (fixed_keep or {}).items()}}
        for name, tensor in inputs.items():  # a copy from the host cannot be captured
            if tensor is not None and tensor.device != embeds.device:
                raise ValueError(f"CapturedPrefill: {name} is on {tensor.device}, embeds on {embeds.device}; "
                                 "a graph can only read tensors on its own device")
        self.embeds = embeds.detach().clone()  # the graph's input buffer
        # The graph reads these tensors' memory but holds no reference to them: keep them alive with it.
        self._captured_inputs = (stack, layout, schedule, scorer, fixed_keep)

        def run() -> PrefillResult:
            return prefill(stack, self.embeds, layout, schedule, scorer, fixed_keep)

        with torch.cuda.device(embeds.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(max(1, warmup)):
                    run()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self.graph):
                    self.result = run()
            except RuntimeError as error:  # CUDA's message names the failing call, not the operator that made it
                raise RuntimeError(
                    "capturing the prefill in a CUDA graph failed: some operator synchronised with the device or "
                    "cannot be captured. Run the prefill eagerly under torch.cuda.set_sync_debug_mode('warn') to "
                    "find it") from error

    def __call__(self, embeds: torch.Tensor | None = None) -> PrefillResult:
        """Replay on ``embeds`` (default: the last input again); returns :attr:`result`, overwritten in place."""
        if embeds is not None:
            self.embeds.copy_(embeds)
        self.graph.replay()
        return self.result
