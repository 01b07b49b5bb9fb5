"""Model adapters (one interface for every VLM) and the layer-wise view of their decoders."""

from .adapter import ADAPTERS, Prompt, VLMAdapter, load_adapter
from .stack import ATTENTION, MAMBA, MLP, DecoderStack, SeqState, stack_for

__all__ = ["ADAPTERS", "ATTENTION", "MAMBA", "MLP", "DecoderStack", "Prompt", "SeqState", "VLMAdapter",
           "load_adapter", "stack_for"]
