"""Keep transformers' Mamba-2 kernels to the tensors they can run on.

transformers' Nemotron-H mixer calls five module-level functions (causal conv, chunked scan, one-step update and
the fused training path). Each is chosen once, when transformers is imported: mamba-ssm's / causal-conv1d's when
those packages import, transformers' own PyTorch code otherwise, whatever device the tensors are on later. So on
a GPU machine with mamba-ssm installed, every Nemotron-H run on the CPU (training the tiny models, the CPU side
of a comparison) would hand CPU tensors to Triton and fail. :func:`route_by_device` wraps the five so CPU tensors
go to the PyTorch code and CUDA tensors to the kernels. Without gradients, the CPU chunked scan also gets a chunk
length that needs no padding (:func:`unpadded_chunk`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from transformers.models.nemotron_h import modeling_nemotron_h

FUNCTIONS = ("causal_conv1d_fn", "causal_conv1d_update", "mamba2_chunk_scan", "mamba2_selective_state_update",
             "mamba2_split_conv1d_scan_combined")


def _on_cpu(args: tuple, kwargs: dict) -> bool:
    first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
    return first is not None and first.device.type == "cpu"


def unpadded_chunk(seq_len: int, chunk_size: int) -> int:
    """The chunk length for the reference chunked scan of ``seq_len`` tokens: as many chunks as ``chunk_size``
    gives, each as short as covers the sequence.

    The reference scan pads the sequence to whole chunks, and its result does not depend on the chunk length
    (the chunks only split one exact sum). So 49 tokens in chunks of 128 would cost as much as 128 tokens. Every
    reduced layer hits this, which kept the CPU speedup of reduction below its analytic limit.
    """
    chunks = max(1, -(-seq_len // chunk_size))
    return max(1, -(-seq_len // chunks))


def route_by_device() -> None:
    """Make transformers' Nemotron-H Mamba-2 functions send CPU tensors to the PyTorch code (idempotent)."""
    for name in FUNCTIONS:
        wrapper = getattr(modeling_nemotron_h, name, None)
        if wrapper is None or hasattr(wrapper, "routed_from"):
            continue
        reference = inspect.unwrap(wrapper)  # functools.wraps in transformers' wrapper keeps the PyTorch function
        if reference is wrapper:  # not transformers' kernel wrapper: nothing to route
            continue
        accepted = inspect.signature(reference).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())

        @functools.wraps(reference)
        def routed(*args, _wrapper=wrapper, _reference=reference, _accepted=accepted, _any=takes_any, **kwargs):
            if not _on_cpu(args, kwargs):
                return _wrapper(*args, **kwargs)
            if not _any:  # as transformers' wrapper does: drop the keywords only the kernels take
                kwargs = {k: v for k, v in kwargs.items() if k in _accepted}
            # Inference only: training keeps transformers' own chunks, so a seeded model trains exactly as it would
            # without this package (a different rounding sent the tiny hybrid down another path: measured).
            if "chunk_size" in kwargs and not torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor):
                kwargs["chunk_size"] = unpadded_chunk(args[0].shape[1], kwargs["chunk_size"])
            return _reference(*args, **kwargs)

        routed.routed_from = wrapper
        setattr(modeling_nemotron_h, name, routed)


def implementation(name: str, device: torch.device | str) -> Callable:
    """The function the Nemotron-H mixer runs as ``name`` (one of :data:`FUNCTIONS`) on tensors of ``device``."""
    current = getattr(modeling_nemotron_h, name)
    wrapper = getattr(current, "routed_from", current)
    if torch.device(device).type == "cpu" and wrapper is not current:
        return inspect.unwrap(wrapper)
    return inspect.getclosurevars(wrapper).nonlocals.get("implementation", wrapper)  # what transformers chose


def describe(device: torch.device | str) -> str:
    """One line naming the Mamba-2 scan and convolution that run on ``device``, e.g. for a benchmark's header."""
    parts = []
    for what, name in (("scan", "mamba2_chunk_scan"), ("conv", "causal_conv1d_fn")):
        fn = implementation(name, device)
        module = fn.__module__.split(".")[0]
        parts.append(f"{what}: {'transformers PyTorch reference' if module == 'transformers' else module}")
    return ", ".join(parts)
