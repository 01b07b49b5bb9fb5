"""Build the tiny models of the default study from real transformers config classes and save them like real
checkpoints (``save_pretrained``), so every later stage loads them with ``from_pretrained(path)``."""

from __future__ import annotations

import torch
from transformers import NemotronHConfig, Qwen2Config

from ..errors import ConfigError
from .tiny import TinyVideoVLM, TinyVideoVLMConfig
from .tokenizer import build_tokenizer


def text_config(llm: dict, vocab_size: int):
    """The LLM config for ``models.<name>.llm``: ``{family: nemotron_h | qwen2, ...sizes}``."""
    family = llm.get("family")
    hidden = llm.get("hidden_size", 64)
    heads = llm.get("num_attention_heads", 4)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_attention_heads=heads,
                  num_key_value_heads=llm.get("num_key_value_heads", 2),
                  intermediate_size=llm.get("intermediate_size", 4 * hidden), pad_token_id=0, bos_token_id=2,
                  eos_token_id=3, tie_word_embeddings=False)
    if family == "nemotron_h":
        return NemotronHConfig(
            hybrid_override_pattern=llm.get("pattern", "M*M-M*M-"), head_dim=hidden // heads,
            ssm_state_size=llm.get("ssm_state_size", 16), mamba_num_heads=llm.get("mamba_num_heads", 4),
            mamba_head_dim=llm.get("mamba_head_dim", 2 * hidden // llm.get("mamba_num_heads", 4)),
            n_groups=llm.get("n_groups", 2), chunk_size=llm.get("chunk_size", 64), **common)
    if family == "qwen2":
        # A large RoPE base, as real Qwen2 checkpoints use (1e6): with a tiny head_dim the default 1e4 leaves too few
        # slowly rotating dimensions for attention to find a token by content across a long video.
        rope = {"rope_type": "default", "rope_theta": float(llm.get("rope_theta", 1e6))}
        return Qwen2Config(num_hidden_layers=llm.get("num_layers", 8), max_position_embeddings=8192,
                           rope_parameters=rope, **common)
    raise ConfigError(f"models.*.llm.family: unknown '{family}' (known: nemotron_h, qwen2)")


def new_tiny_model(model_cfg: dict, seed: int):
    """A randomly initialised (seeded) tiny VLM described by ``model_cfg``, and its tokenizer."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = TinyVideoVLMConfig(
        text_config=text_config(model_cfg["llm"], len(tokenizer)).to_dict(),
        image_size=model_cfg.get("image_size", 112), patch_size=model_cfg.get("patch_size", 14),
        vision_hidden_size=model_cfg.get("vision_hidden_size", 128))
    return TinyVideoVLM(config), tokenizer


def build_tiny_model(model_cfg: dict, out_dir: str, seed: int) -> None:
    """Randomly initialise the tiny VLM described by ``model_cfg`` and save it with its tokenizer."""
    model, tokenizer = new_tiny_model(model_cfg, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
