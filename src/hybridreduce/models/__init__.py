"""Model adapters (one interface for every VLM) and the layer-wise view of their decoders."""

from ..lazy import lazy_exports
from .mamba_kernels import route_by_device

# Every model of the study is built or wrapped through this package. On a GPU machine with mamba-ssm, CPU runs of
# Nemotron-H must not reach its GPU kernels, and CPU inference takes the faster scan (see mamba_kernels).
route_by_device()

__getattr__, __all__ = lazy_exports(__name__, {
    ".adapter": ["ADAPTERS", "Prompt", "VLMAdapter", "load_adapter"],
    ".stack": ["ATTENTION", "DELTANET", "MAMBA", "MLP", "DecoderStack", "SeqState", "layer_pattern", "stack_for"],
})
