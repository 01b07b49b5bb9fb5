"""Model adapters (one interface for every VLM) and the layer-wise view of their decoders."""

from ..lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    ".adapter": ["ADAPTERS", "Prompt", "VLMAdapter", "load_adapter"],
    ".stack": ["ATTENTION", "MAMBA", "MLP", "DecoderStack", "SeqState", "layer_pattern", "stack_for"],
})
