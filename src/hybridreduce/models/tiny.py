"""A small video VLM whose language model is a real transformers LLM class (NemotronH or Qwen2).

Used by the default study and the tests: a per-patch vision encoder (patchify conv + learned position embedding +
residual MLP), a linear projector, and ``language_model`` built with
``AutoModelForCausalLM.from_config(text_config)``. Saved and loaded with ``save_pretrained`` /
``from_pretrained`` like any checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec


class TinyVideoVLMConfig(PreTrainedConfig):
    model_type = "hybridreduce_tiny_vlm"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2")}

    text_config: dict | PreTrainedConfig | None = None
    image_size: int = 112
    patch_size: int = 14
    vision_hidden_size: int = 128
    tie_word_embeddings: bool = False

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


class TinyVideoVLM(PreTrainedModel):
    config_class = TinyVideoVLMConfig
    base_model_prefix = "vlm"
    _supports_sdpa = True

    def __init__(self, config: TinyVideoVLMConfig):
        super().__init__(config)
        hidden = config.text_config.hidden_size
        self.patch_embed = nn.Conv2d(3, config.vision_hidden_size, config.patch_size, stride=config.patch_size)
        self.vision_mlp = nn.Sequential(
            nn.LayerNorm(config.vision_hidden_size), nn.Linear(config.vision_hidden_size, config.vision_hidden_size),
            nn.GELU(), nn.Linear(config.vision_hidden_size, config.vision_hidden_size))
        # The position enters before the MLP (as in a ViT), so a token can encode "red AND top left" on its own:
        # the LLM then reads an event's location from the event's tokens instead of combining two signals.
        self.patch_pos = nn.Parameter(torch.zeros(config.grid_size * config.grid_size, config.vision_hidden_size))
        self.projector = nn.Linear(config.vision_hidden_size, hidden)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def video_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``(T, 3, H, W)`` float in [0, 1] -> ``(T, h, w, D)`` LLM-space vision tokens."""
        x = self.patch_embed(frames * 2 - 1)  # (T, C, h, w)
        h, w = x.shape[-2:]
        x = x.permute(0, 2, 3, 1) + self.patch_pos.view(h, w, -1)
        x = x + self.vision_mlp(x)
        return self.projector(x)

    def _init_weights(self, module: nn.Module) -> None:
        # The vision side keeps PyTorch's fan-in init: transformers' N(0, 0.02) on a freshly trained patch encoder
        # shrinks its features to a few hundredths and stalls early training. The LLM keeps its own init.
        if module is self:
            nn.init.normal_(self.patch_pos, std=0.5)
        elif any(module is m for m in (self.patch_embed, self.projector, *self.vision_mlp)):
            module.reset_parameters()
        else:
            super()._init_weights(module)

    def forward(self, inputs_embeds: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        return self.language_model(inputs_embeds=inputs_embeds, labels=labels, **kwargs)


# So Auto* loaders (e.g. AutoTokenizer reading config.json) recognise saved tiny models.
AutoConfig.register(TinyVideoVLMConfig.model_type, TinyVideoVLMConfig, exist_ok=True)
AutoModel.register(TinyVideoVLMConfig, TinyVideoVLM, exist_ok=True)
