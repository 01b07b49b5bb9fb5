"""Keep transformers' Mamba-2 kernels to the tensors they can run on.

transformers' Nemotron-H mixer calls five module-level functions (causal conv, chunked scan, one-step update and
the fused training path). Each is chosen once, when transformers is imported: mamba-ssm's / causal-conv1d's when
those packages import, transformers' own PyTorch code otherwise, whatever device the tensors are on later. So on
a GPU machine with mamba-ssm installed, every Nemotron-H run on the CPU (training the tiny models, the CPU side
of a comparison) would hand CPU tensors to Triton and fail. :func:`route_by_device` wraps the five so CPU tensors
go to the PyTorch code and CUDA tensors to the kernels. Without gradients (inference), CPU tensors go to
:mod:`.mamba_cpu`: a whole sequence without a cache runs its mixer forward, other calls its conv and chunked scan;
the same sums as transformers' reference, several times faster on a CPU. With gradients (training) transformers'
own code runs, so a seeded model trains exactly as it would without this package.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from transformers.models.nemotron_h import modeling_nemotron_h

from . import mamba_cpu

FUNCTIONS = ("causal_conv1d_fn", "causal_conv1d_update", "mamba2_chunk_scan", "mamba2_selective_state_update",
             "mamba2_split_conv1d_scan_combined")
CPU_INFERENCE = {"causal_conv1d_fn": mamba_cpu.causal_conv1d_fn, "mamba2_chunk_scan": mamba_cpu.chunk_scan}


def _on_cpu(args: tuple, kwargs: dict) -> bool:
    first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
    return first is not None and first.device.type == "cpu"


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
        def routed(*args, _name=name, _wrapper=wrapper, _reference=reference, _accepted=accepted, _any=takes_any,
                   **kwargs):
            if not _on_cpu(args, kwargs):
                return _wrapper(*args, **kwargs)
            # Training keeps transformers' own code: a different rounding sent the tiny hybrid's training down
            # another path (measured), so a seeded model must train exactly as it would without this package.
            if not torch.is_grad_enabled() and _name in CPU_INFERENCE:
                return CPU_INFERENCE[_name](*args, **kwargs)
            if not _any:  # as transformers' wrapper does: drop the keywords only the kernels take
                kwargs = {k: v for k, v in kwargs.items() if k in _accepted}
            return _reference(*args, **kwargs)

        routed.routed_from = wrapper
        setattr(modeling_nemotron_h, name, routed)
    _route_mixer_forward()


def _route_mixer_forward() -> None:
    """Run :func:`.mamba_cpu.mixer_forward` for a whole CPU sequence without gradients or a cache (idempotent)."""
    mixer = modeling_nemotron_h.NemotronHMamba2Mixer
    if hasattr(mixer.forward, "routed_from"):
        return
    reference = mixer.forward

    @functools.wraps(reference)
    def forward(self, hidden_states, cache_params=None, attention_mask=None, **kwargs):
        if (cache_params is None and not kwargs and hidden_states.device.type == "cpu"
                and not torch.is_grad_enabled()):
            return mamba_cpu.mixer_forward(self, hidden_states, attention_mask)
        return reference(self, hidden_states, cache_params=cache_params, attention_mask=attention_mask, **kwargs)

    forward.routed_from = reference
    mixer.forward = forward


def implementation(name: str, device: torch.device | str, training: bool = False) -> Callable:
    """The function the Nemotron-H mixer runs as ``name`` (one of :data:`FUNCTIONS`) on tensors of ``device``,
    without gradients or (``training``) with them."""
    current = getattr(modeling_nemotron_h, name)
    wrapper = getattr(current, "routed_from", current)
    if torch.device(device).type == "cpu" and wrapper is not current:
        return inspect.unwrap(wrapper) if training else CPU_INFERENCE.get(name, inspect.unwrap(wrapper))
    return inspect.getclosurevars(wrapper).nonlocals.get("implementation", wrapper)  # what transformers chose


def describe(device: torch.device | str) -> str:
    """One line naming the Mamba-2 mixer forward (where routed), scan and convolution that run on ``device``
    without gradients, e.g. for a benchmark's header."""
    routed = hasattr(modeling_nemotron_h.NemotronHMamba2Mixer.forward, "routed_from")
    parts = [f"mixer: {mamba_cpu.__name__}"] if routed and torch.device(device).type == "cpu" else []
    for what, name in (("scan", "mamba2_chunk_scan"), ("conv", "causal_conv1d_fn")):
        module = implementation(name, device).__module__
        package = module.split(".")[0]
        # our own modules by their full name; transformers' fallback as such; a kernel package by its name
        label = module if package == "hybridreduce" else (
            "transformers PyTorch reference" if package == "transformers" else package)
        parts.append(f"{what}: {label}")
    return ", ".join(parts)
