"""The decoder of a causal LM as a list of typed layers that can be run one at a time.

One interface for every LLM family the study uses, so the reduction loop never special-cases a model:

- :class:`NemotronHStack` — transformers' ``NemotronHForCausalLM`` (Mamba-2 / attention / MLP blocks; no RoPE).
- :class:`Qwen2Stack` — Qwen2 / Qwen2.5-VL text models and other Llama-class decoders (attention + MLP in each
  layer, rotary positions).
- :class:`Qwen3_5Stack` — Qwen3.5's text decoder (``Qwen3_5TextModel``): each layer a token mixer, Gated DeltaNet
  linear attention or gated full attention (3:1), followed by an MLP; M-RoPE with partial rotary dims.

A :class:`SeqState` carries what changes when tokens are dropped: which input tokens are still present and their
position ids. Masks and rotary tables are rebuilt from it, so a reduced sequence keeps the positions it had in
the full one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import create_causal_mask

from .mamba_cpu import inverse_rms

# DELTANET: a Gated DeltaNet linear-attention layer (Qwen3.5). Like a Qwen2 layer, a Qwen3.5 layer is one entry
# whatever it holds after its mixer (its MLP): the type names the token mixer, the one thing a score reads.
ATTENTION, MAMBA, MLP, DELTANET = "attention", "mamba", "mlp", "deltanet"
NEMOTRON_H_TYPES = {"full_attention": ATTENTION, "linear_attention": MAMBA, "mlp": MLP, "moe": MLP}
QWEN3_5_TYPES = {"full_attention": ATTENTION, "linear_attention": DELTANET}
PATTERN_SYMBOLS = {ATTENTION: "*", MAMBA: "M", MLP: "-", DELTANET: "D"}


def layer_pattern(layer_types: list[str]) -> str:
    """Nemotron-H's notation for a layer stack: ``M`` Mamba-2, ``*`` attention, ``-`` MLP; and ``D`` for a Gated
    DeltaNet layer (Qwen3.5: ``DDD*DDD*...``)."""
    return "".join(PATTERN_SYMBOLS[t] for t in layer_types)


@dataclass
class SeqState:
    """Tokens present in the current sequence.

    Attributes:
        index: ``(L',)`` int64, index of each present token in the input sequence (sorted).
        position_ids: ``(L',)`` int64 position ids of the present tokens, or ``(3, L')`` for M-RoPE models;
            they stay those of the full input (EVS-reduced inputs arrive with gaps already).
    """

    index: torch.Tensor
    position_ids: torch.Tensor

    def select(self, keep: torch.Tensor) -> "SeqState":
        return SeqState(self.index.index_select(0, keep), self.position_ids.index_select(-1, keep))


@dataclass(frozen=True)
class PreNormed:
    """A layer's input with its RMS pre-norm not yet applied: ``norm(hidden)_t = weight * hidden_t *
    rsqrt(mean(hidden_t^2) + eps)`` (transformers' ``*RMSNorm``: ``weight``, ``variance_epsilon``).

    Scoring projects a few dozen features of the normed tokens. Folding the norm into those products (``weight``
    into the projection's rows, the per-token scale onto its few output columns, see :meth:`linear`) spares
    writing the normed copy of every token: one read of ``hidden`` instead of several passes.

    Attributes:
        hidden: ``(..., L, D)`` the layer's input.
        norm: the layer's RMSNorm module; :meth:`apply` runs it (the normed tensor, exactly as the layer has it).
    """

    hidden: torch.Tensor
    norm: nn.Module

    def __post_init__(self):
        if not (hasattr(self.norm, "weight") and hasattr(self.norm, "variance_epsilon")):
            raise TypeError(f"{type(self.norm).__name__} is not an RMSNorm (weight, variance_epsilon): the score "
                            "folds the layer's pre-norm into its projections")

    @property
    def shape(self) -> torch.Size:
        return self.hidden.shape

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    @functools.cached_property
    def inverse_rms(self) -> torch.Tensor:
        """``(..., L, 1)`` float32 ``rsqrt(mean(hidden^2) + eps)`` of every token (once per input: every projection
        of it reuses it)."""
        return inverse_rms(self.hidden, self.norm.variance_epsilon)

    def apply(self) -> torch.Tensor:
        return self.norm(self.hidden.to(self.norm.weight.dtype))

    def linear(self, weight: torch.Tensor, bias: torch.Tensor | None, tokens: torch.Tensor | None = None
               ) -> torch.Tensor:
        """``F.linear(norm(hidden)[..., tokens, :], weight, bias)`` in float32 (the product in ``weight``'s dtype).

        Args:
            weight: ``(out, D)``; bias: ``(out,)`` or None; tokens: ``(T,)`` indices along ``L`` (None: every token).
        Returns:
            ``(..., T, out)``.
        """
        h, scale = self.hidden, self.inverse_rms
        if tokens is not None:
            h, scale = h.index_select(-2, tokens), scale.index_select(-2, tokens)
        out = F.linear(h.to(weight.dtype), weight * self.norm.weight.to(weight.dtype)).float().mul_(scale)
        return out if bias is None else out.add_(bias)


class DecoderStack:
    """Base class. Subclasses set ``model`` (the CausalLM), ``layers`` and ``layer_types``."""

    model: nn.Module
    layers: list[nn.Module]
    layer_types: list[str]

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def begin(self, hidden: torch.Tensor, state: SeqState) -> dict:
        """Per-sequence context (masks, rotary tables) for ``hidden`` ``(1, L', D)``; rebuilt after every drop."""
        raise NotImplementedError

    def run_layer(self, i: int, hidden: torch.Tensor, ctx: dict) -> torch.Tensor:
        raise NotImplementedError

    def mixer_input(self, i: int, hidden: torch.Tensor) -> tuple[nn.Module, PreNormed]:
        """Layer ``i``'s token mixer and its input: ``hidden`` with the layer's pre-norm, not yet applied."""
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head: ``(1, L', D)`` -> ``(1, L', vocab)``."""
        raise NotImplementedError

    def _causal_mask(self, hidden: torch.Tensor) -> torch.Tensor | None:
        # Contiguous position ids for the mask: gapped ones would be read as packed sequences.
        n = hidden.shape[1]
        # For SDPA and flash attention transformers returns no mask at all (plain causal attention): remember
        # that per length, since a reduced prefill asks again at every stage (about 0.2 ms of Python each time in a
        # scratch timing of the stages).
        key = (n, hidden.device, hidden.dtype, self.model.config._attn_implementation)
        maskless = self.__dict__.setdefault("_maskless", set())
        if key in maskless:
            return None
        mask = create_causal_mask(
            config=self.model.config,
            inputs_embeds=hidden,
            attention_mask=torch.ones(1, n, dtype=torch.long, device=hidden.device),
            past_key_values=None,
            position_ids=torch.arange(n, device=hidden.device)[None],
        )
        if mask is None:
            maskless.add(key)
        return mask


class NemotronHStack(DecoderStack):
    """Layer-wise view of ``NemotronHForCausalLM``."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = list(model.model.layers)
        self.layer_types = [NEMOTRON_H_TYPES[b.block_type] for b in self.layers]

    def begin(self, hidden: torch.Tensor, state: SeqState) -> dict:
        return {"mask": self._causal_mask(hidden) if ATTENTION in self.layer_types else None}

    def run_layer(self, i: int, hidden: torch.Tensor, ctx: dict) -> torch.Tensor:
        # Mamba blocks take a 2-D padding mask or None (no padding here); attention blocks the 4-D causal mask.
        mask = ctx["mask"] if self.layer_types[i] == ATTENTION else None
        return self.layers[i](hidden, attention_mask=mask)

    def mixer_input(self, i: int, hidden: torch.Tensor) -> tuple[nn.Module, PreNormed]:
        block = self.layers[i]
        return block.mixer, PreNormed(hidden, block.norm)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.model.norm_f(hidden))


class Qwen2Stack(DecoderStack):
    """Layer-wise view of a Llama-class decoder with rotary positions (Qwen2, Qwen2.5-VL's text model, Llama)."""

    def __init__(self, model: nn.Module, decoder: nn.Module | None = None):
        self.model = model
        self.decoder = decoder if decoder is not None else model.model
        self.layers = list(self.decoder.layers)
        self.layer_types = [ATTENTION] * len(self.layers)

    def rotary(self, hidden: torch.Tensor, state: SeqState) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` each ``(1, L', head_dim)`` at the tokens' own position ids."""
        pos = state.position_ids
        return self.decoder.rotary_emb(hidden, pos[None] if pos.ndim == 1 else pos[:, None])

    def begin(self, hidden: torch.Tensor, state: SeqState) -> dict:
        return {"mask": self._causal_mask(hidden), "rotary": self.rotary(hidden, state)}

    def run_layer(self, i: int, hidden: torch.Tensor, ctx: dict) -> torch.Tensor:
        return self.layers[i](hidden, attention_mask=ctx["mask"], position_embeddings=ctx["rotary"])

    def mixer_input(self, i: int, hidden: torch.Tensor) -> tuple[nn.Module, PreNormed]:
        layer = self.layers[i]
        return layer.self_attn, PreNormed(hidden, layer.input_layernorm)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.decoder.norm(hidden))


class ZeroCentredNorm(nn.Module):
    """A zero-centred RMSNorm (``Qwen3_5RMSNorm``: ``norm(x) = x * rsqrt(mean(x^2) + eps) * (1 + weight)``, in
    float32, cast back to ``x``'s dtype) seen as the plain RMSNorm :class:`PreNormed` folds into projections: its
    ``weight`` is ``1 + weight`` and its ``variance_epsilon`` the norm's ``eps``; calling it runs the norm itself."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.inner = norm
        self.variance_epsilon = norm.eps

    @property
    def weight(self) -> torch.Tensor:
        w = self.inner.weight
        return (1.0 + w.float()).to(w.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Qwen3_5Stack(Qwen2Stack):
    """Layer-wise view of Qwen3.5's text decoder (``Qwen3_5TextModel``, in ``Qwen3_5ForCausalLM`` or the VLM's
    ``model.language_model``).

    Each decoder layer is ``x + mixer(norm(x))`` then ``x + mlp(norm(x))``, the mixer a Gated DeltaNet
    (``linear_attn``, :data:`DELTANET`) or a gated full attention (``self_attn``, :data:`ATTENTION`: output gate,
    q/k norms, partial rotary). Like :class:`Qwen2Stack`, one layer of the stack is one decoder layer, typed by its
    mixer.

    Masks and positions, as ``Qwen3_5TextModel.forward`` builds them: attention layers get the 4-D causal mask
    and the ``(cos, sin)`` of the tokens' own (M-RoPE) position ids; DeltaNet layers no mask (their 2-D padding mask
    is None without padding) and no cache, so after a drop they run their conv and recurrence over the kept tokens,
    in order, like Mamba-2 layers in :class:`NemotronHStack`. The layers' pre-norms are zero-centred
    (:class:`ZeroCentredNorm`).
    """

    def __init__(self, model: nn.Module, decoder: nn.Module | None = None):
        super().__init__(model, decoder)
        self.layer_types = [QWEN3_5_TYPES[t] for t in self.decoder.config.layer_types[: len(self.layers)]]

    def begin(self, hidden: torch.Tensor, state: SeqState) -> dict:
        mask = self._causal_mask(hidden) if ATTENTION in self.layer_types else None
        return {"mask": mask, "rotary": self.rotary(hidden, state)}

    def run_layer(self, i: int, hidden: torch.Tensor, ctx: dict) -> torch.Tensor:
        mask = ctx["mask"] if self.layer_types[i] == ATTENTION else None
        return self.layers[i](hidden, position_embeddings=ctx["rotary"], attention_mask=mask)

    def mixer_input(self, i: int, hidden: torch.Tensor) -> tuple[nn.Module, PreNormed]:
        layer = self.layers[i]
        mixer = layer.self_attn if self.layer_types[i] == ATTENTION else layer.linear_attn
        return mixer, PreNormed(hidden, ZeroCentredNorm(layer.input_layernorm))


def stack_for(model: nn.Module) -> DecoderStack:
    """The stack for a causal LM, by its config's ``model_type``."""
    model_type = model.config.model_type
    if model_type == "nemotron_h":
        return NemotronHStack(model)
    if model_type in ("qwen2", "llama", "qwen3", "mistral"):
        return Qwen2Stack(model)
    if model_type == "qwen3_5_text":
        return Qwen3_5Stack(model)
    raise ValueError(f"no layer-wise stack for model_type '{model_type}' (known: nemotron_h, qwen2, llama, qwen3, "
                     "mistral, qwen3_5_text)")
