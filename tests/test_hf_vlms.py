"""The adapters of the real transformers VLMs (:mod:`hybridreduce.models.hf_vlms`) against the models' own forward.

Nothing can be downloaded, so each model is a tiny random one built from the real config classes
(``NemotronH_Omni_Reasoning_V3_Config`` with a RADIO tower and a NemotronH LLM; ``Qwen2_5_VLConfig``), with a
word-level tokenizer that carries the special tokens the configs point at, and the real processors around it.
The end-to-end proof: the adapter's embedded prompt run layer by layer by ``prefill`` gives the logits of the
full HF model called the way it is meant to be called on the same video and prompt.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from transformers import (
    NemotronHConfig,
    ParakeetFeatureExtractor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.nemotron_h_omni import (
    NemotronH_Omni_Reasoning_V3,
    NemotronH_Omni_Reasoning_V3_Config,
    NemotronH_Omni_Reasoning_V3ImageProcessor,
    NemotronH_Omni_Reasoning_V3Processor,
    NemotronH_Omni_Reasoning_V3VideoProcessor,
)
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
from transformers.models.radio import RadioConfig
from transformers.video_utils import VideoMetadata

from hybridreduce.errors import ConfigError
from hybridreduce.models.hf_vlms import NemotronHOmniAdapter, Qwen25VLAdapter
from hybridreduce.models.stack import ATTENTION, MAMBA, MLP
from hybridreduce.models.tokenizer import build_tokenizer
from hybridreduce.reduction.engine import prefill
from hybridreduce.reduction.methods import plan

QUESTION, OPTIONS = "what shape is red ?", ["circle", "square", "triangle", "star"]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>",
           "<img>", "</img>", "<image>"]
ATOL = 1e-4


def tokenizer():
    tok = build_tokenizer(extra_words=["user", "assistant", "system"])
    tok.add_tokens(SPECIAL, special_tokens=True)
    tok.chat_template = CHAT
    return tok


def frames(n: int = 4, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------------------
# tiny models
# --------------------------------------------------------------------------------------------------------------
def nemotron_case():
    tok = tokenizer()
    text = NemotronHConfig(
        vocab_size=len(tok), hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        intermediate_size=64, hybrid_override_pattern="M*M-M*", ssm_state_size=8, mamba_num_heads=4,
        mamba_head_dim=16, n_groups=2, chunk_size=16, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        tie_word_embeddings=False)
    vision = RadioConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=56,
                         max_img_size=112, num_cls_tokens=2, num_registers=1, video_temporal_patch_size=2)
    config = NemotronH_Omni_Reasoning_V3_Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), vision_hidden_size=32, projector_hidden_size=48,
        downsample_ratio=0.5, video_temporal_patch_size=2, image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    model = NemotronH_Omni_Reasoning_V3(config).eval()
    video = NemotronH_Omni_Reasoning_V3VideoProcessor(
        norm_mean=list(vision.norm_mean), norm_std=list(vision.norm_std), patch_size=14, downsample_ratio=0.5,
        video_target_num_patches=64)
    image = NemotronH_Omni_Reasoning_V3ImageProcessor(patch_size=14, downsample_ratio=0.5, min_num_patches=16,
                                                      max_num_patches=64)
    processor = NemotronH_Omni_Reasoning_V3Processor(
        image_processor=image, video_processor=video, tokenizer=tok, feature_extractor=ParakeetFeatureExtractor(),
        chat_template=CHAT, video_temporal_patch_dim=2)
    adapter = NemotronHOmniAdapter.from_components(model, processor)
    # 96x128 frames -> one 84x112 tile (6x8 patches of 14, near 64) -> 3x4 tokens after the 2x2 pixel shuffle;
    # 4 frames -> 2 tubelets.
    return types.SimpleNamespace(cls=NemotronHOmniAdapter, adapter=adapter, model=model, processor=processor,
                                 grid=(2, 3, 4), cell=28, hidden=32, odd_frames_t=3)


def qwen_case():
    tok = tokenizer()
    ids = tok.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "fullatt_block_indexes": [1], "tokens_per_second": 2},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    size = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    video = Qwen2VLVideoProcessor(patch_size=14, temporal_patch_size=2, merge_size=2, size=size,
                                  cap_pixels_per_frame=True)
    image = Qwen2VLImageProcessor(patch_size=14, temporal_patch_size=2, merge_size=2, size=size)
    processor = Qwen2_5_VLProcessor(image_processor=image, tokenizer=tok, video_processor=video, chat_template=CHAT)
    adapter = Qwen25VLAdapter.from_components(model, processor)
    # 96x128 frames -> smart_resize to 84x140 (nearest multiples of 28) -> 6x10 patches -> 3x5 merged tokens;
    # 4 frames -> 2 tubelets.
    return types.SimpleNamespace(cls=Qwen25VLAdapter, adapter=adapter, model=model, processor=processor,
                                 grid=(2, 3, 5), cell=28, hidden=64, odd_frames_t=3)


@pytest.fixture(scope="module", params=["nemotron_h_omni", "qwen2_5_vl"])
def case(request):
    return nemotron_case() if request.param == "nemotron_h_omni" else qwen_case()


def own_forward_logits(case, video: np.ndarray) -> torch.Tensor:
    """Last-position logits of the HF model's own forward on the adapter's prompt with the whole video."""
    adapter, model, processor = case.adapter, case.model, case.processor
    prefix, query = adapter.prompt_text(QUESTION, OPTIONS)
    if case.cls is Qwen25VLAdapter:
        # The processor expands the video placeholder, computes pixel_values_videos, video_grid_thw and
        # mm_token_type_ids; the model computes its own vision features and M-RoPE positions.
        inputs = processor(text=prefix + "<|video_pad|>" + query, videos=[video], return_tensors="pt",
                           video_metadata=[VideoMetadata(total_num_frames=len(video), fps=adapter.video_fps)])
        return model(**inputs).logits[0, -1]
    # nemotron_h_omni 5.23: forward(pixel_values_videos=...) torch.cat()s the tensor that get_video_features
    # returns and raises a TypeError, so the features go in as mm_encoder_outputs with a tuple, as the model's
    # image path does. The processor's own video prompt adds per-tubelet frame labels, which the study's
    # contiguous [prefix][V][Q] layout leaves out, so the ids come from the adapter.
    pixel_values_videos = processor.video_processor(videos=[video], return_tensors="pt")["pixel_values_videos"]
    feats = model.get_video_features(pixel_values_videos).pooler_output
    input_ids = adapter.full_input_ids(case.grid, QUESTION, OPTIONS)
    encoded = {"video": BaseModelOutputWithPooling(pooler_output=tuple(feats))}
    return model(input_ids=input_ids, mm_encoder_outputs=encoded).logits[0, -1]


def embeds_forward_logits(case, prompt) -> torch.Tensor:
    """The HF model's own forward on ``inputs_embeds`` with the prompt's position ids."""
    if case.cls is Qwen25VLAdapter:
        return case.model(inputs_embeds=prompt.embeds, position_ids=prompt.layout.position_ids[:, None]).logits[0, -1]
    return case.model(inputs_embeds=prompt.embeds, position_ids=prompt.layout.position_ids[None]).logits[0, -1]


def drop_mask(shape, seed=1) -> torch.Tensor:
    keep = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5
    keep.view(-1)[0] = True
    keep.view(-1)[-1] = False
    return keep


# --------------------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_encode_video_grid(case):
    grid = case.adapter.encode_video(frames())
    assert grid.shape == case.grid
    assert grid.embeddings.shape == (*case.grid, case.hidden)
    assert torch.isfinite(grid.embeddings).all()
    assert grid.pixels.shape == (*case.grid, case.cell * case.cell * 3)
    # An odd frame count fills the last tubelet with the last frame.
    assert case.adapter.encode_video(frames(5)).shape[0] == case.odd_frames_t
    # Pixels are the un-normalised RGB of each token's cell: a flat grey video gives its grey level back.
    grey = case.adapter.encode_video(np.full((4, 96, 128, 3), 100, np.uint8)).pixels
    assert torch.allclose(grey, torch.full_like(grey, 100.0), atol=1.0)
    # ... in (t, i, j) order: only the top rows of the first two frames (the first tubelet) are bright.
    video = np.zeros((4, 96, 128, 3), np.uint8)
    video[:2, :24] = 240
    pixels = case.adapter.encode_video(video).pixels.mean(-1)  # (T', h, w)
    assert pixels[0, 0].min() > 150 and pixels[0, -1].max() < 30 and pixels[1].max() < 1


@torch.no_grad()
def test_prefill_reproduces_model_forward(case):
    adapter, video = case.adapter, frames()
    grid = adapter.encode_video(video)
    prompt = adapter.build_prompt(grid, None, QUESTION, OPTIONS)
    n = int(np.prod(case.grid))
    assert prompt.num_vision_full == n and len(prompt.layout.vision_idx) == n
    assert int(prompt.layout.vision_idx[-1]) + 1 == int(prompt.layout.query_idx[0])
    assert int(prompt.layout.query_idx[-1]) == prompt.embeds.shape[1] - 1
    ids = adapter.full_input_ids(grid.shape, QUESTION, OPTIONS)[0]
    assert (ids[prompt.layout.vision_idx] == adapter.vision_token_id).all()
    # The vision block holds the grid's tokens in (t, i, j) order.
    assert torch.equal(prompt.embeds[0, prompt.layout.vision_idx], grid.embeddings.reshape(n, -1))

    result = prefill(adapter.stack, prompt.embeds, prompt.layout)
    own = own_forward_logits(case, video)
    torch.testing.assert_close(result.logits, own, atol=ATOL, rtol=0)
    assert result.vision_per_layer == [n] * len(adapter.stack.layers)


@torch.no_grad()
@pytest.mark.parametrize("fps", [1.0, 0.5])
def test_qwen_time_positions_follow_the_sampled_timestamps(fps):
    """Frames sampled at ``fps``: the prefill equals the model's own forward when its processor is told that
    sampling rate (second_per_grid_ts = temporal_patch_size / fps), not Qwen's default of 2 fps."""
    case, video = qwen_case(), frames()
    timestamps = np.arange(len(video)) / fps
    grid = case.adapter.encode_video(video, timestamps)
    prompt = case.adapter.build_prompt(grid, None, QUESTION, OPTIONS)
    prefix, query = case.adapter.prompt_text(QUESTION, OPTIONS)
    inputs = case.processor(text=prefix + "<|video_pad|>" + query, videos=[video], return_tensors="pt",
                            video_metadata=[VideoMetadata(total_num_frames=len(video), fps=fps)])
    own = case.model(**inputs).logits[0, -1]
    torch.testing.assert_close(prefill(case.adapter.stack, prompt.embeds, prompt.layout).logits, own, atol=ATOL, rtol=0)
    # the time ids of the second tubelet: temporal_patch_size / fps seconds x tokens_per_second (2) later
    t_ids = prompt.layout.position_ids[0, prompt.layout.vision_idx]
    assert int(t_ids.max() - t_ids.min()) == int(2 / fps * 2)
    default = case.adapter.build_prompt(case.adapter.encode_video(video), None, QUESTION, OPTIONS)
    assert not torch.equal(default.layout.position_ids, prompt.layout.position_ids)


@torch.no_grad()
def test_keep_mask_keeps_full_video_positions(case):
    adapter = case.adapter
    grid = adapter.encode_video(frames())
    full = adapter.build_prompt(grid, None, QUESTION, OPTIONS)
    keep = drop_mask(grid.shape)
    kept = torch.nonzero(keep.flatten()).flatten()
    reduced = adapter.build_prompt(grid, keep, QUESTION, OPTIONS)
    assert reduced.num_vision_full == full.num_vision_full
    assert len(reduced.layout.vision_idx) == len(kept) < full.num_vision_full
    assert reduced.embeds.shape[1] == full.embeds.shape[1] - (full.num_vision_full - len(kept))
    pos, full_pos = reduced.layout.position_ids, full.layout.position_ids
    if case.cls is Qwen25VLAdapter:
        assert pos.shape == (3, reduced.embeds.shape[1])
    # Kept vision tokens and the query keep the positions they have with the whole video.
    torch.testing.assert_close(pos[..., reduced.layout.vision_idx], full_pos[..., full.layout.vision_idx[kept]])
    torch.testing.assert_close(pos[..., reduced.layout.query_idx], full_pos[..., full.layout.query_idx])
    torch.testing.assert_close(reduced.embeds[0, reduced.layout.vision_idx],
                               full.embeds[0, full.layout.vision_idx[kept]])

    result = prefill(adapter.stack, reduced.embeds, reduced.layout)
    assert result.vision_per_layer == [len(kept)] * len(adapter.stack.layers)
    # The gapped positions go into the layers as the model's own forward applies them.
    torch.testing.assert_close(result.logits, embeds_forward_logits(case, reduced), atol=ATOL, rtol=0)


@torch.no_grad()
def test_reduced_run_follows_schedule(case):
    adapter = case.adapter
    prompt = adapter.build_prompt(adapter.encode_video(frames()), None, QUESTION, OPTIONS)
    n = len(prompt.layout.vision_idx)
    schedule, scorer = plan("hybrid_progressive", adapter.stack.layer_types, 0.5, n,
                            {"first_layer": 1, "num_stages": 2, "fastv_layer": 2})
    assert schedule.stage_layers and schedule.keep_counts[-1] < n
    result = prefill(adapter.stack, prompt.embeds, prompt.layout, schedule, scorer)
    assert result.vision_per_layer == schedule.tokens_per_layer()
    assert torch.isfinite(result.logits).all()
    assert set(result.stage_keep) == set(schedule.stage_layers)


def test_layer_types(case):
    types_ = case.adapter.stack.layer_types
    if case.cls is NemotronHOmniAdapter:
        assert types_ == [MAMBA, ATTENTION, MAMBA, MLP, MAMBA, ATTENTION]
    else:
        assert types_ == [ATTENTION] * 4


def test_option_token_ids(case):
    ids = case.adapter.option_token_ids(4)
    assert ids.tolist() == case.adapter.tokenizer.convert_tokens_to_ids(list("ABCD"))
    # The prompt ends with "answer :", so the next token is the letter.
    _, query = case.adapter.prompt_text(QUESTION, OPTIONS)
    assert query.endswith("answer :")


def test_missing_path_is_a_config_error(case, tmp_path):
    missing = str(tmp_path / "no_such_checkpoint")
    with pytest.raises(ConfigError, match="no_such_checkpoint") as err:
        case.cls(missing, name="vlm")
    assert "models.vlm.path" in str(err.value)


@torch.no_grad()
def test_save_and_load_round_trip(case, tmp_path):
    case.model.save_pretrained(tmp_path)
    case.processor.save_pretrained(tmp_path)
    loaded = case.cls(str(tmp_path), name="vlm")
    assert loaded.processor is not None and loaded.name == "vlm"
    video = frames()
    logits = []
    for adapter in (case.adapter, loaded):
        prompt = adapter.build_prompt(adapter.encode_video(video), None, QUESTION, OPTIONS)
        logits.append(prefill(adapter.stack, prompt.embeds, prompt.layout).logits)
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=0)


@torch.no_grad()
def test_tokenizer_only_checkpoint_builds_video_processor(tmp_path):
    """A checkpoint saved with a bare tokenizer loads with AutoTokenizer; the video pre-processing then comes
    from the model config (Qwen2.5-VL's default video processor with its patch / merge sizes)."""
    qwen = qwen_case()
    qwen.model.save_pretrained(tmp_path)
    qwen.processor.tokenizer.save_pretrained(tmp_path)
    adapter = Qwen25VLAdapter(str(tmp_path))
    assert adapter.processor is None and isinstance(adapter.video_processor, Qwen2VLVideoProcessor)
    grid = adapter.encode_video(frames(2, 56, 56))
    merge = qwen.model.config.vision_config.spatial_merge_size * 14
    t, h, w = grid.shape
    assert t == 1 and h * merge * w * merge >= adapter.video_processor.size.shortest_edge
    prompt = adapter.build_prompt(grid, None, QUESTION, OPTIONS)
    assert torch.isfinite(prefill(adapter.stack, prompt.embeds, prompt.layout).logits).all()


def test_the_architecture_without_weights_gives_the_encoded_grid(case, tmp_path):
    """check-model's view of a checkpoint (meta device: config and processor, no weights) has the model's layer
    types, and its grid for a frame count and size is the one the loaded model encodes."""
    case.model.save_pretrained(tmp_path)
    case.processor.save_pretrained(tmp_path)
    bare = case.cls(str(tmp_path), weights=False)
    assert all(p.device.type == "meta" for p in bare.model.parameters())
    assert bare.stack.layer_types == case.adapter.stack.layer_types
    for n, h, w in ((4, 96, 128), (5, 96, 128), (3, 224, 160)):
        assert bare.grid_shape(n, h, w) == case.adapter.encode_video(frames(n, h, w)).shape, (n, h, w)
