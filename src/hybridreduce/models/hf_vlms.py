"""Adapters for three real transformers video VLMs (transformers 5.23):

- :class:`NemotronHOmniAdapter` — ``nemotron_h_omni`` (``NemotronH_Omni_Reasoning_V3``): RADIO vision tower,
  pixel shuffle + MLP projector, hybrid Mamba-2 / attention NemotronH LLM (no RoPE).
- :class:`Qwen25VLAdapter` — ``Qwen2_5_VLForConditionalGeneration``: windowed ViT with 2x2 patch merger and a
  Qwen2 decoder with 3-D multimodal RoPE (M-RoPE).
- :class:`Qwen35Adapter` — ``Qwen3_5ForConditionalGeneration``: Qwen3-VL-style ViT with 2x2 patch merger and the
  hybrid Qwen3.5 decoder (Gated DeltaNet / gated attention, 3:1; per-frame M-RoPE).

All follow :class:`~.adapter.VLMAdapter`: the vision tokens come from the model's own vision tower + projector
(pre-processed by the model's own video processor), the prompt is ``[prefix][V][Q]`` with ``V`` one contiguous
block in ``(t, i, j)`` order, and the decoder runs layer by layer through a :class:`~.stack.DecoderStack`. With
no reduction, :func:`~hybridreduce.reduction.engine.prefill` reproduces the logits of the model's own forward on
the same prompt (checked in ``tests/test_hf_vlms.py``).

Prompt text. The question goes through the tokenizer's (or processor's) chat template when it has one, as one
user turn ``<video><question and options>``, and the assistant turn is pre-filled with ``answer :`` so that the
next token is the option letter (see :meth:`option_token_ids`)::

    <template up to the user content><vision start>[V]<vision end>question : ... options : A . x B . y
    <end of turn><assistant turn opening>answer :

Without a chat template the text around ``V`` is just ``<bos>?<vision start>`` and
``<vision end> question : ... answer :``.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import torch

from ..dataset.sample import LETTERS
from ..errors import ConfigError
from ..layout import PromptLayout
from ..redundancy.grid import TokenGrid
from ..config import check_checkpoint
from .adapter import Prompt, VLMAdapter, question_text
from .stack import NemotronHStack, Qwen2Stack, Qwen3_5Stack

__all__ = ["NemotronHOmniAdapter", "Qwen25VLAdapter", "Qwen35Adapter"]

_ANSWER = "answer :"
_SENTINEL = "\x00VIDEO\x00"
# Files a processor's save_pretrained writes next to the tokenizer (a bare tokenizer writes none of them).
_PROCESSOR_FILES = ("processor_config.json", "video_preprocessor_config.json", "preprocessor_config.json")


def _load_processor(path: str):
    """The processor saved in ``path`` if there is one, else its tokenizer."""
    from transformers import AutoProcessor, AutoTokenizer

    if any(os.path.exists(os.path.join(path, f)) for f in _PROCESSOR_FILES):
        return AutoProcessor.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


class _HFVideoAdapter(VLMAdapter):
    """Shared part of the two adapters: tokenizer / processor handling, prompt text, assembly of
    ``[prefix][V][Q]`` and the answer letters. Subclasses implement ``_model_class``, ``_setup`` (stack, vision
    token id and wrapper tokens), ``_default_video_processor``, ``encode_video`` and ``_full_positions``."""

    DEFAULT_NAME: str
    # extra arguments of every video-processor call (e.g. no frame sampling: the study samples the frames)
    _video_kwargs: ClassVar[dict] = {}

    def __init__(self, path: str, name: str | None = None, device: str = "cpu", attn_implementation: str = "sdpa",
                 weights: bool = True):
        """``weights=False``: the architecture only, on the meta device (config and processor; no weights read)."""
        from transformers import AutoConfig

        name = name or self.DEFAULT_NAME
        check_checkpoint(path, f"models.{name}.path")
        if weights:
            model = self._model_class().from_pretrained(path, attn_implementation=attn_implementation)
        else:
            config = AutoConfig.from_pretrained(path)
            expected = self._model_class().config_class.model_type
            if config.model_type != expected:
                raise ConfigError(f"models.{name}: the checkpoint at {path} is a '{config.model_type}' model; this "
                                  f"adapter ({type(self).__name__}) reads '{expected}'")
            with torch.device("meta"):
                model = self._model_class()._from_config(config)
            device = "meta"
        self._init(model, _load_processor(path), name, device)

    @classmethod
    def from_components(cls, model, tokenizer_or_processor, name: str | None = None, device: str = "cpu"):
        """Wrap an in-memory model and its tokenizer or processor (a processor also provides the video
        pre-processing; with a bare tokenizer a video processor is built from the model config)."""
        self = cls.__new__(cls)
        self._init(model, tokenizer_or_processor, name or cls.DEFAULT_NAME, device)
        return self

    @classmethod
    def _model_class(cls):
        raise NotImplementedError

    def _init(self, model, tokenizer_or_processor, name: str, device: str) -> None:
        self.name = name
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if hasattr(tokenizer_or_processor, "tokenizer") and hasattr(tokenizer_or_processor, "video_processor"):
            self.processor = tokenizer_or_processor
            self.tokenizer = tokenizer_or_processor.tokenizer
            self.video_processor = tokenizer_or_processor.video_processor
        else:
            self.processor = None
            self.tokenizer = tokenizer_or_processor
            self.video_processor = None
        self._setup()
        if self.video_processor is None:
            self.video_processor = self._default_video_processor()

    def _setup(self) -> None:
        raise NotImplementedError

    def _default_video_processor(self):
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------------------
    # text
    # ------------------------------------------------------------------------------------------------------------
    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long)

    def _chat_template(self) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        if not template and self.processor is not None:
            template = getattr(self.processor, "chat_template", None)
        return template or None

    def prompt_text(self, question: str, options: list[str]) -> tuple[str, str]:
        """``(prefix, query)``: the text before and after the vision tokens."""
        text = question_text(question, options)
        body, answer = (text[: -len(_ANSWER)].rstrip(), _ANSWER) if text.endswith(_ANSWER) else (text, "")
        start, end = self.vision_start_token, self.vision_end_token
        template = self._chat_template()
        if template is None:
            bos = self.tokenizer.bos_token or ""
            return f"{bos}{start}", f"{end} {text}"
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL + body}], chat_template=template, tokenize=False,
            add_generation_prompt=True, enable_thinking=False)
        if rendered.count(_SENTINEL) != 1:
            raise ConfigError(f"models.{self.name}: the chat template does not render the user content verbatim")
        before, after = rendered.split(_SENTINEL)
        return f"{before}{start}", f"{end}{after}{answer}"

    def prompt_ids(self, question: str, options: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``(prefix, query)`` around the vision block."""
        prefix, query = self.prompt_text(question, options)
        return self._ids(prefix), self._ids(query)

    def full_input_ids(self, grid_shape: tuple[int, int, int], question: str, options: list[str]) -> torch.Tensor:
        """``(1, L)`` ids of the full prompt with one placeholder per vision token, as the model's own forward
        takes them."""
        prefix, query = self.prompt_ids(question, options)
        n = int(np.prod(grid_shape))
        vision = torch.full((n,), self.vision_token_id, dtype=torch.long)
        return torch.cat([prefix, vision, query])[None].to(self.device)

    def option_token_ids(self, num_options: int) -> torch.Tensor:
        """Ids of ``A``, ``B``, ... as the tokenizer encodes them right after ``answer :`` (e.g. ``" A"`` for
        byte-level BPE); each must be a single token."""
        base = self._ids(_ANSWER).tolist()
        out = []
        for letter in LETTERS[:num_options]:
            ids = self._ids(f"{_ANSWER} {letter}").tolist()
            if len(ids) != len(base) + 1 or ids[: len(base)] != base:
                raise ConfigError(
                    f"models.{self.name}: option letter '{letter}' is not one token after '{_ANSWER}' ({ids})")
            out.append(ids[-1])
        return torch.tensor(out, device=self.device)

    # ------------------------------------------------------------------------------------------------------------
    # prompt assembly
    # ------------------------------------------------------------------------------------------------------------
    def _full_positions(self, input_ids: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
        """Position ids ``(L,)`` or ``(3, L)`` of the full prompt ``input_ids`` ``(1, L)`` with the whole ``grid``."""
        raise NotImplementedError

    @torch.no_grad()
    def build_prompt(self, grid: TokenGrid, keep: torch.Tensor | None, question: str, options: list[str]) -> Prompt:
        t, h, w = grid.shape
        n = t * h * w
        flat = grid.embeddings.reshape(n, -1).to(self.device)
        kept = torch.arange(n, device=self.device)
        if keep is not None:
            if tuple(keep.shape) != (t, h, w):
                raise ValueError(f"keep must have the grid's shape {(t, h, w)}, got {tuple(keep.shape)}")
            kept = kept[keep.flatten().to(self.device, torch.bool)]
        prefix, query = (x.to(self.device) for x in self.prompt_ids(question, options))
        p, nk, nq = len(prefix), len(kept), len(query)
        full_ids = torch.cat([prefix, torch.full((n,), self.vision_token_id, device=self.device), query])[None]
        full_pos = self._full_positions(full_ids, grid)
        cols = torch.cat([torch.arange(p, device=self.device), p + kept, p + n + torch.arange(nq, device=self.device)])
        embed = self.stack.embed_tokens
        dtype = self.stack.model.get_input_embeddings().weight.dtype
        embeds = torch.cat([embed(prefix[None])[0], flat[kept].to(dtype), embed(query[None])[0]])[None]
        layout = PromptLayout(vision_idx=torch.arange(p, p + nk, device=self.device),
                              query_idx=torch.arange(p + nk, p + nk + nq, device=self.device),
                              position_ids=full_pos[..., cols])
        return Prompt(embeds, layout, n)

    # ------------------------------------------------------------------------------------------------------------
    # vision
    # ------------------------------------------------------------------------------------------------------------
    def _processed(self, num_frames: int, height: int, width: int) -> dict:
        """The video processor's output for blank frames of that size, on the CPU (the grid it gives the tower)."""
        frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
        return self.video_processor(videos=[frames], return_tensors="pt", **self._video_kwargs)

    def _preprocess(self, frames: np.ndarray) -> dict:
        """The model inputs for ``(T, H, W, 3)`` uint8 frames, from its video processor."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
        out = self.video_processor(videos=[np.ascontiguousarray(frames)], return_tensors="pt", **self._video_kwargs)
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in out.items()}


def _cells(frames: torch.Tensor, temporal: int, cell: int) -> torch.Tensor:
    """``(T, 3, H, W)`` float frames in [0, 255] -> ``(ceil(T / temporal), H / cell, W / cell, cell * cell * 3)``:
    each token's pixel cell, averaged over the frames of its tubelet (the last frame repeated to fill the last
    tubelet, as both models do)."""
    t, c, hh, ww = frames.shape
    if pad := -t % temporal:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    x = frames.clamp(0, 255).reshape(-1, temporal, c, hh // cell, cell, ww // cell, cell).mean(1)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (T', h, w, cell, cell, 3): the layout of grid.patchify
    return x.reshape(x.shape[0], hh // cell, ww // cell, cell * cell * c).float().cpu()


class NemotronHOmniAdapter(_HFVideoAdapter):
    """transformers' ``nemotron_h_omni`` (class ``NemotronH_Omni_Reasoning_V3``).

    Vision tokens: frames are resized and normalised by the model's video processor (one aspect-preserving tile
    per frame, ``video_target_num_patches`` patches; ``norm_mean``/``norm_std`` of the RADIO config), packed
    ``video_temporal_patch_size`` frames per tubelet, encoded by RADIO, pixel-shuffled (``downsample_ratio``) and
    projected into the LLM space by the model's own ``get_video_features``. The grid is
    ``(T', h, w, D)`` with ``T' = ceil(T / video_temporal_patch_size)`` (the model merges consecutive frames; an
    odd last frame is repeated) and ``h = H_tile / patch_size * downsample_ratio``.

    Prompt: one ``<img> V </img>`` block (the processor's image start/end tokens; videos use the image-context
    token), in ``(t, i, j)`` order. The processor itself writes one ``Frame k and frame k+1: <img>...</img>``
    chunk per tubelet; the study keeps ``V`` contiguous instead, so those frame labels are left out.

    Positions: NemotronH has no RoPE (its attention layers use no positional encoding, Mamba-2 layers take order
    from the recurrence), so position ids never reach the layers and any values give the same logits. The layout
    still carries each token's index in the full prompt, like the other adapters, so kept vision tokens show
    where they were in the full video.

    The config's ``video_pruning_rate`` (EVS inside the model's forward) is not applied here: pre-LLM reduction
    is the adapter caller's ``keep`` mask.
    """

    DEFAULT_NAME = "nemotron_h_omni"

    @classmethod
    def _model_class(cls):
        from transformers.models.nemotron_h_omni import NemotronH_Omni_Reasoning_V3

        return NemotronH_Omni_Reasoning_V3

    def _setup(self) -> None:
        cfg = self.model.config
        # The LLM is a NemotronHForCausalLM: lm_head and norm_f live inside it, so the stock stack applies.
        self.stack = NemotronHStack(self.model.language_model)
        self.vision_token_id = cfg.image_token_id
        proc = self.processor
        self.vision_start_token = getattr(proc, "image_start_token", None) or "<img>"
        self.vision_end_token = getattr(proc, "image_end_token", None) or "</img>"
        self.temporal_patch = cfg.video_temporal_patch_size
        self.merge = round(1 / cfg.downsample_ratio)
        self.patch_size = cfg.vision_config.patch_size

    def _default_video_processor(self):
        from transformers.models.nemotron_h_omni import NemotronH_Omni_Reasoning_V3VideoProcessor

        cfg = self.model.config
        kwargs = {}
        if cfg.force_image_size:
            kwargs["video_target_num_patches"] = (cfg.force_image_size // self.patch_size) ** 2
        return NemotronH_Omni_Reasoning_V3VideoProcessor(
            norm_mean=list(cfg.vision_config.norm_mean), norm_std=list(cfg.vision_config.norm_std),
            patch_size=self.patch_size, downsample_ratio=cfg.downsample_ratio, **kwargs)

    def video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """``(T, 3, H, W)`` processed frames -> ``(T', h * w, D)`` projected tokens (the model's own
        ``get_video_features``; its forward cannot take ``pixel_values_videos`` in 5.23, see the tests)."""
        return self.model.get_video_features(pixel_values_videos).pooler_output

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, timestamps: np.ndarray | None = None) -> TokenGrid:
        pv = self._preprocess(frames)["pixel_values_videos"]  # (T, 3, H, W), normalised
        feats = self.video_features(pv)
        hh, ww = pv.shape[-2:]
        cell = self.patch_size * self.merge
        emb = feats.reshape(feats.shape[0], hh // cell, ww // cell, feats.shape[-1])
        vp = self.video_processor
        mean = torch.tensor(vp.norm_mean, device=pv.device).view(1, 3, 1, 1)
        std = torch.tensor(vp.norm_std, device=pv.device).view(1, 3, 1, 1)
        pixels = _cells((pv.float() * std + mean) * 255.0, self.temporal_patch, cell)
        return TokenGrid(embeddings=emb.float(), pixels=pixels)

    def _full_positions(self, input_ids: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
        return torch.arange(input_ids.shape[1], device=input_ids.device)

    def grid_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        pv = self._processed(num_frames, height, width)["pixel_values_videos"]  # (T, 3, H', W'), as the tower reads
        cell = self.patch_size * self.merge
        return -(-pv.shape[0] // self.temporal_patch), pv.shape[-2] // cell, pv.shape[-1] // cell


class Qwen25VLAdapter(_HFVideoAdapter):
    """``Qwen2_5_VLForConditionalGeneration``.

    Vision tokens: the model's video processor resizes each frame (``smart_resize`` to multiples of
    ``patch_size * merge_size``), normalises it and cuts ``temporal_patch_size x patch x patch`` tubelets; the
    model's own ``get_video_features`` runs the vision tower and its 2x2 patch merger. The grid is
    ``(T', h', w', D)`` with ``T' = ceil(T / temporal_patch_size)`` and ``h' = H_resized / patch_size /
    spatial_merge_size``, in the ``(t, h', w')`` order the tower outputs.

    Positions: 3-D M-RoPE ids ``(3, L)`` from the model's own ``get_rope_index`` on the FULL video prompt
    (``mm_token_type_ids`` 2 on the video placeholders, ``video_grid_thw`` of the grid); a ``keep`` mask selects
    the columns of the kept tokens, so they and the query keep the positions they have with the whole video.
    The temporal spacing comes from the sampled frames' timestamps (``second_per_grid_ts = temporal_patch_size x``
    the median interval between frames, as the model's processor derives it from the video's sampling rate); only
    without timestamps does it fall back to ``video_fps`` (2, Qwen's default sampling rate).

    Decoder: ``model.model.language_model`` (``Qwen2_5_VLTextModel``: ``layers``, ``rotary_emb``, ``norm``) and
    ``model.lm_head``. Its ``rotary_emb`` takes ``(3, 1, L)`` ids and already interleaves the ``mrope_section``
    chunks into one ``(1, L, head_dim)`` table, which the decoder layers apply as plain RoPE, so the stock
    :class:`~.stack.Qwen2Stack` reproduces the model.
    """

    DEFAULT_NAME = "qwen2_5_vl"
    video_fps: float = 2.0

    @classmethod
    def _model_class(cls):
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def _setup(self) -> None:
        cfg = self.model.config
        self.stack = Qwen2Stack(self.model, decoder=self.model.model.language_model)
        self.vision_token_id = cfg.video_token_id
        self.vision_start_token = self.tokenizer.convert_ids_to_tokens(cfg.vision_start_token_id)
        self.vision_end_token = self.tokenizer.convert_ids_to_tokens(cfg.vision_end_token_id)
        vc = cfg.vision_config
        self.temporal_patch, self.merge, self.patch_size = vc.temporal_patch_size, vc.spatial_merge_size, vc.patch_size

    def _default_video_processor(self):
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        return Qwen2VLVideoProcessor(patch_size=self.patch_size, temporal_patch_size=self.temporal_patch,
                                     merge_size=self.merge, cap_pixels_per_frame=True)

    def second_per_grid_ts(self, grid: TokenGrid) -> float:
        """Seconds a temporal grid step spans: ``temporal_patch_size`` frames at the grid's frame interval."""
        if grid.frame_interval_s:
            return self.temporal_patch * grid.frame_interval_s
        return self.temporal_patch / self.video_fps

    def video_features(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor) -> torch.Tensor:
        """Processed tubelets -> ``(T' * h' * w', D)`` merged tokens of one video."""
        return self.model.get_video_features(pixel_values_videos, video_grid_thw).pooler_output[0]

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, timestamps: np.ndarray | None = None) -> TokenGrid:
        inputs = self._preprocess(frames)
        pv, thw = inputs["pixel_values_videos"], inputs["video_grid_thw"]
        t, gh, gw = thw[0].tolist()
        m, p, tp = self.merge, self.patch_size, self.temporal_patch
        feats = self.video_features(pv, thw)
        emb = feats.reshape(t, gh // m, gw // m, feats.shape[-1])
        # Undo the tubelet flattening ((t, h', w', m, m) rows of (C, tp, p, p)) to get each token's pixels.
        vp = self.video_processor
        x = pv.float().reshape(t, gh // m, gw // m, m, m, 3, tp, p, p)
        mean = torch.tensor(vp.image_mean, device=pv.device).view(3, 1, 1, 1)
        std = torch.tensor(vp.image_std, device=pv.device).view(3, 1, 1, 1)
        x = ((x * std + mean) / vp.rescale_factor).clamp(0, 255).mean(6)  # (t, h', w', m, m, 3, p, p)
        x = x.permute(0, 1, 2, 3, 6, 4, 7, 5)  # (t, h', w', m, p, m, p, 3)
        pixels = x.reshape(t, gh // m, gw // m, (m * p) ** 2 * 3).cpu()
        interval = float(np.median(np.diff(timestamps))) if timestamps is not None and len(timestamps) > 1 else None
        return TokenGrid(embeddings=emb.float(), pixels=pixels, frame_interval_s=interval)

    def grid_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        t, gh, gw = self._processed(num_frames, height, width)["video_grid_thw"][0].tolist()
        return t, gh // self.merge, gw // self.merge

    def video_grid_thw(self, grid_shape: tuple[int, int, int]) -> torch.Tensor:
        t, h, w = grid_shape
        return torch.tensor([[t, h * self.merge, w * self.merge]], device=self.device)

    def _full_positions(self, input_ids: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
        token_type = (input_ids == self.vision_token_id).int() * 2  # 0 text, 2 video
        pos, _ = self.model.model.get_rope_index(
            input_ids, mm_token_type_ids=token_type, video_grid_thw=self.video_grid_thw(grid.shape),
            second_per_grid_ts=torch.tensor([self.second_per_grid_ts(grid)], device=self.device))
        return pos[:, 0]


class Qwen35Adapter(Qwen25VLAdapter):
    """``Qwen3_5ForConditionalGeneration`` (Qwen3.5: processor ``Qwen3VLProcessor``, video processor
    ``Qwen3VLVideoProcessor``).

    Vision tokens: as :class:`Qwen25VLAdapter` (the model's video processor, here with ``do_sample_frames=False``
    since the study samples the frames; the model's own ``get_video_features``: ViT and 2x2 patch merger). The
    grid is ``(T', h', w', D)`` with ``T' = ceil(T / temporal_patch_size)`` (``grid_shape`` from the processor's
    ``video_grid_thw``).

    Positions: Qwen3.5's ``get_rope_index`` splits a video into its ``T'`` temporal steps, one ``(1, h, w)`` grid
    each (its processor writes a timestamp before every step, ``<t> <vision_start> frame <vision_end>``); a grid
    starting at position ``p`` gets ids ``(p, p + i, p + j)`` (``get_vision_position_ids``) and the next one starts
    at ``p + max(h', w')``. The study keeps ``V`` one contiguous block (as for Nemotron-H Omni, the frame labels, here
    the timestamps, are left out), so the ids are built step by step with the model's own
    ``get_vision_position_ids``, exactly as ``get_rope_index`` places consecutive steps; text advances all three
    axes by one per token. Time enters only through the order of the steps (``time_interval`` 1, as the model
    calls it): the frames' timestamps are not used.

    Decoder: ``model.model.language_model`` (``Qwen3_5TextModel``) and ``model.lm_head``, through
    :class:`~.stack.Qwen3_5Stack`.
    """

    DEFAULT_NAME = "qwen3_5"
    _video_kwargs: ClassVar[dict] = {"do_sample_frames": False}

    @classmethod
    def _model_class(cls):
        from transformers import Qwen3_5ForConditionalGeneration

        return Qwen3_5ForConditionalGeneration

    def _setup(self) -> None:
        super()._setup()
        self.stack = Qwen3_5Stack(self.model, decoder=self.model.model.language_model)

    def _default_video_processor(self):
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        return Qwen3VLVideoProcessor(patch_size=self.patch_size, temporal_patch_size=self.temporal_patch,
                                     merge_size=self.merge)

    def _full_positions(self, input_ids: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
        """``(3, L)`` ids of ``[prefix][V][Q]`` (``input_ids`` ``(1, L)``, ``V`` the ``T' x h' x w'`` placeholders)."""
        ids = input_ids[0]
        is_vision = (ids == self.vision_token_id).nonzero().view(-1)
        start, n = int(is_vision[0]), len(is_vision)
        t, h, w = grid.shape
        if n != t * h * w or int(is_vision[-1]) != start + n - 1:
            raise ValueError(f"expected one block of {t * h * w} vision placeholders, got {n}")
        device, parts, pos = ids.device, [], start
        parts.append(torch.arange(start, device=device)[None].expand(3, -1))
        for _ in range(t):  # one (1, h', w') grid per temporal step, as get_rope_index splits the video
            step = torch.tensor([1, h * self.merge, w * self.merge], device=device)
            parts.append(self.model.model.get_vision_position_ids(pos, step, 1, self.merge, device=device))
            pos += max(h, w)
        parts.append(torch.arange(len(ids) - start - n, device=device)[None].expand(3, -1) + pos)
        return torch.cat(parts, dim=1)
