"""One interface for every VLM of the study: vision tokens per frame grid, the embedded prompt ``[prefix][V][Q]``
with the positions of ``V`` and ``Q``, typed decoder layers (via :class:`~.stack.DecoderStack`) and answer
tokens. The inference stage, probing and lmms-eval all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import check_checkpoint
from ..dataset.sample import LETTERS
from ..errors import ConfigError
from ..redundancy.grid import TokenGrid, patchify
from ..layout import PromptLayout
from .stack import DecoderStack, stack_for


@dataclass
class Prompt:
    """An embedded prompt. ``embeds``: ``(1, L, D)``; ``layout`` locates V and Q; ``num_vision_full``: tokens
    of the whole video before any pre-LLM reduction."""

    embeds: torch.Tensor
    layout: PromptLayout
    num_vision_full: int


class VLMAdapter:
    """Base class; subclasses load a model family."""

    name: str
    stack: DecoderStack
    device: torch.device

    def encode_video(self, frames: np.ndarray, timestamps: np.ndarray | None = None) -> TokenGrid:
        """``(T, H, W, 3)`` uint8 frames sampled at ``timestamps`` ``(T,)`` seconds (None: unknown) -> vision
        tokens ``(T, h, w, D)`` in the LLM's embedding space (plus the raw patches for pixel-space methods)."""
        raise NotImplementedError

    def grid_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The ``(T', h, w)`` vision token grid of ``num_frames`` frames of ``height x width`` pixels, from the
        model's config and pre-processing alone (no weights: what ``check-model`` reports)."""
        raise NotImplementedError

    def build_prompt(self, grid: TokenGrid, keep: torch.Tensor | None, question: str, options: list[str]) -> Prompt:
        """Embed ``[prefix][V][Q]`` with the vision tokens that ``keep`` ``(T, h, w)`` retains (all if None). Kept
        tokens keep the position ids they have in the full video."""
        raise NotImplementedError

    def option_token_ids(self, num_options: int) -> torch.Tensor:
        """``(num_options,)`` token ids of the option letters A, B, ..."""
        raise NotImplementedError

    def unknown_share(self, question: str, options: list[str]) -> float:
        """Share of the query's tokens that the tokenizer cannot represent (its unknown token): where most of
        a question is unknown, the model answers without reading it. Byte-level tokenizers read any text."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is None:
            return 0.0
        ids = self.tokenizer(question_text(question, options), add_special_tokens=False).input_ids
        return sum(i == unk for i in ids) / max(len(ids), 1)


def question_text(question: str, options: list[str]) -> str:
    opts = " ".join(f"{LETTERS[i]} . {o}" for i, o in enumerate(options))
    return f"question : {question} options : {opts} answer :"


class TinyVLMAdapter(VLMAdapter):
    """The workflow's own tiny video VLM (:mod:`.tiny`) with its word-level tokenizer."""

    PREFIX = "<bos> video :"

    def __init__(self, path: str, name: str = "tiny", device: str = "cpu", attn_implementation: str = "sdpa",
                 weights: bool = True):
        """``weights=False``: the architecture only, on the meta device (its config; no weights read)."""
        from transformers import AutoTokenizer

        from .tiny import TinyVideoVLM, TinyVideoVLMConfig

        check_checkpoint(path, f"models.{name}.path")
        if weights:
            model = TinyVideoVLM.from_pretrained(path, attn_implementation=attn_implementation).to(device).eval()
        else:
            with torch.device("meta"):
                model = TinyVideoVLM(TinyVideoVLMConfig.from_pretrained(path)).eval()
            device = "meta"
        self._wrap(model, AutoTokenizer.from_pretrained(path), name, device)

    @classmethod
    def from_model(cls, model, tokenizer, name: str = "tiny", device: str = "cpu") -> "TinyVLMAdapter":
        """Wrap an in-memory model (training, tests)."""
        adapter = cls.__new__(cls)
        adapter._wrap(model.to(device), tokenizer, name, device)
        return adapter

    def _wrap(self, model, tokenizer, name: str, device: str) -> None:
        self.name, self.device = name, torch.device(device)
        self.model, self.tokenizer = model, tokenizer
        self.stack = stack_for(model.language_model)
        self.patch_size = model.config.patch_size

    def grid_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        cells = self.model.config.image_size // self.patch_size  # every frame is resized to image_size
        return num_frames, cells, cells

    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids, device=self.device)

    def prompt_ids(self, question: str, options: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of the text before the video and of the query after it."""
        return self._ids(self.PREFIX), self._ids(question_text(question, options))

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, timestamps: np.ndarray | None = None) -> TokenGrid:
        size = self.model.config.image_size  # positions are per frame and cell: the timestamps do not enter
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (size, size):  # frames extracted at another size: resize like a processor would
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            frames = (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return TokenGrid(embeddings=self.model.video_features(x), pixels=patchify(frames, self.patch_size))

    def embed_prompt(self, vision: torch.Tensor, question: str, options: list[str]) -> tuple[torch.Tensor, int, int]:
        """``[prefix][V][Q]`` embeddings ``(L, D)`` for vision tokens ``(N, D)``, with the prefix and query lengths.
        Keeps the autograd graph (training); :meth:`build_prompt` is the inference entry point."""
        row, _ = self.embed_conversation(vision, [(question, options, None)])
        num_prefix = len(self._ids(self.PREFIX))
        return row, num_prefix, len(row) - num_prefix - len(vision)

    def embed_conversation(self, vision: torch.Tensor, turns: list[tuple[str, list[str], str | None]]
                           ) -> tuple[torch.Tensor, list[int]]:
        """``[prefix][V][Q1][a1][Q2][a2]..[Qk]`` embeddings ``(L, D)`` for vision tokens ``(N, D)`` and turns
        ``(question, options, answer letter)``; returns the index of each turn's last query token (where its
        answer is predicted). The last turn's answer is not embedded. One turn is :meth:`embed_prompt`."""
        ids, ends = [], []
        for k, (question, options, answer) in enumerate(turns):
            prefix, query = self.prompt_ids(question, options)
            ids.append(query)
            ends.append(len(prefix) + len(vision) + sum(len(i) for i in ids) - 1)
            if k + 1 < len(turns):
                ids.append(self._ids(answer))
        embed = self.stack.embed_tokens
        row = torch.cat([embed(prefix[None])[0], vision.to(self.model.dtype), embed(torch.cat(ids)[None])[0]])
        return row, ends

    @torch.no_grad()
    def build_prompt(self, grid: TokenGrid, keep: torch.Tensor | None, question: str, options: list[str]) -> Prompt:
        t, h, w = grid.shape
        flat = grid.embeddings.reshape(t * h * w, -1)
        kept = torch.arange(t * h * w, device=flat.device)
        if keep is not None:
            kept = kept[keep.flatten().to(flat.device)]
        row, p, nq = self.embed_prompt(flat[kept], question, options)
        embeds, n = row[None], len(kept)
        position_ids = torch.cat([torch.arange(p), p + kept.cpu(), p + t * h * w + torch.arange(nq)]).to(self.device)
        layout = PromptLayout(vision_idx=torch.arange(p, p + n, device=self.device),
                              query_idx=torch.arange(p + n, p + n + nq, device=self.device),
                              position_ids=position_ids)
        return Prompt(embeds, layout, t * h * w)

    def option_token_ids(self, num_options: int) -> torch.Tensor:
        return torch.tensor(self.tokenizer.convert_tokens_to_ids(list(LETTERS[:num_options])), device=self.device)


def _hf(cls_name: str):
    def load(*args, **kwargs):
        from . import hf_vlms  # imports adapter.py itself, hence late

        return getattr(hf_vlms, cls_name)(*args, **kwargs)

    return load


# kind -> adapter class (config models.<name>.kind)
ADAPTERS = {
    "tiny": TinyVLMAdapter,
    "nemotron_h_omni": _hf("NemotronHOmniAdapter"),
    "qwen2_5_vl": _hf("Qwen25VLAdapter"),
    "qwen3_5": _hf("Qwen35Adapter"),
}


def load_adapter(name: str, model_cfg: dict, device: str = "cpu", weights: bool = True) -> VLMAdapter:
    """The adapter for ``models.<name>`` of the study config (``kind`` picks the family); ``weights=False``: its
    architecture on the meta device, from the checkpoint's config and processor alone."""
    kind = model_cfg.get("kind", "tiny")
    if kind not in ADAPTERS:
        raise ConfigError(f"models.{name}.kind: unknown '{kind}' (known: {', '.join(ADAPTERS)})")
    return ADAPTERS[kind](model_cfg["path"], name=name, device=device, weights=weights)
