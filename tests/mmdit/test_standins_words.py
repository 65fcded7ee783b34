"""MMDiT stand-ins match the published layouts; word-to-token mapping for T5 SentencePiece and CLIP BPE."""

from __future__ import annotations

import pytest
import torch

from harness.attention import word_token_positions
from harness.attention.joint import text_axis
from harness.errors import ConfigError
from harness.models.clip_tokenizer import build_clip_tokenizer
from harness.models.mmdit_standins import build_mmdit_standin, save_mmdit_standin, transformer_config
from harness.models.t5_tokenizer import build_t5_tokenizer

WORDS = ["a", "red", "cat", "on", "the", "chair", "dog"]


@pytest.mark.parametrize("name,joint,single,dual,guidance", [
    ("sd3_medium", 24, 0, 0, None), ("sd35_medium", 24, 0, 13, None),
    ("flux_schnell", 19, 38, 0, False), ("flux_dev", 19, 38, 0, True)])
def test_transformer_layout_is_the_published_one(name, joint, single, dual, guidance):
    import diffusers

    config = transformer_config(name)
    model_class = diffusers.FluxTransformer2DModel if name.startswith("flux") else diffusers.SD3Transformer2DModel
    with torch.device("meta"):  # the layout only: no weights are allocated
        transformer = model_class(**config)
    assert len(transformer.transformer_blocks) == joint
    assert len(getattr(transformer, "single_transformer_blocks", [])) == single
    assert {block.attn.heads for block in transformer.transformer_blocks} == {24}
    if name.startswith("sd3"):
        assert sum(block.attn2 is not None for block in transformer.transformer_blocks) == dual
        assert [block.context_pre_only for block in transformer.transformer_blocks][-2:] == [False, True]
        assert transformer.config.patch_size == 2
        rms = type(transformer.transformer_blocks[0].attn.norm_q).__name__ if transformer.transformer_blocks[0].attn.norm_q else None
        assert rms == ("RMSNorm" if name == "sd35_medium" else None)
        assert transformer.config.pos_embed_max_size == (384 if name == "sd35_medium" else 192)
    else:
        assert {b.attn.heads for b in transformer.single_transformer_blocks} == {24}
        assert hasattr(transformer.time_text_embed, "guidance_embedder") == guidance
        assert transformer.config.patch_size == 1 and len(transformer.config.axes_dims_rope) == 3
        assert sum(transformer.config.axes_dims_rope) == transformer.config.attention_head_dim


@pytest.mark.parametrize("name", ["sd3_medium", "flux_schnell"])
def test_standin_saves_and_loads_through_the_real_loader(name, tmp_path):
    from omegaconf import OmegaConf

    from harness.config import ModelConfig
    from harness.models.loader import load_model

    save_mmdit_standin(name, tmp_path / name, narrow=True)
    cfg = OmegaConf.structured(ModelConfig)
    cfg.name, cfg.path, cfg.device, cfg.dtype = name, str(tmp_path / name), "cpu", "float32"
    pipeline = load_model(cfg).pipeline
    expected = {"sd3_medium": ("StableDiffusion3Pipeline", ["CLIPTextModelWithProjection", "CLIPTextModelWithProjection", "T5EncoderModel"]),
                "flux_schnell": ("FluxPipeline", ["CLIPTextModel", "T5EncoderModel"])}[name]
    assert type(pipeline).__name__ == expected[0]
    encoders = [pipeline.text_encoder, pipeline.text_encoder_2] + ([pipeline.text_encoder_3] if name.startswith("sd3") else [])
    assert [type(e).__name__ for e in encoders] == expected[1]
    assert type(pipeline.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    t5 = pipeline.tokenizer_3 if name.startswith("sd3") else pipeline.tokenizer_2
    assert t5.convert_ids_to_tokens(t5("a red cat")["input_ids"]) == ["▁a", "▁red", "▁cat", "</s>"]


def test_t5_word_positions_hand_made():
    tokenizer = build_t5_tokenizer(WORDS)
    prompt = "a red cat, on the xyzzy chair. Red"
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(prompt)["input_ids"])
    assert pieces[:3] == ["▁a", "▁red", "▁cat"]  # no start token: the first word is position 0
    assert word_token_positions(tokenizer, prompt, "a") == [0]
    assert word_token_positions(tokenizer, prompt, "cat") == [2]  # "," is its own piece after it
    assert [pieces[p] for p in word_token_positions(tokenizer, prompt, "xyzzy")] == ["▁x", "y", "z", "z", "y"]
    assert word_token_positions(tokenizer, prompt, "chair") == [11]
    # T5 keeps case: "Red" is not the piece "▁red" but "▁R" "e" "d"; it is still the word "red"
    assert word_token_positions(tokenizer, prompt, "red") == [1, 13, 14, 15]
    assert [pieces[p] for p in word_token_positions(tokenizer, prompt, "red", "last")] == ["▁R", "e", "d"]
    with pytest.raises(ConfigError, match="not in the prompt"):
        word_token_positions(tokenizer, prompt, "dog")


def test_t5_length_limit_cuts_words():
    tokenizer = build_t5_tokenizer(WORDS, model_max_length=4)  # 3 text positions + </s>
    assert word_token_positions(tokenizer, "a red cat on", "cat") == [2]
    with pytest.raises(ConfigError, match="beyond"):
        word_token_positions(tokenizer, "a red cat on", "on")
    assert word_token_positions(tokenizer, "a red cat on", "on", allow_cut=True) == []


def test_clip_word_positions_count_the_start_token():
    tokenizer = build_clip_tokenizer(WORDS)
    assert word_token_positions(tokenizer, "a red cat, on the chair", "cat") == [3]
    assert word_token_positions(tokenizer, "a red cat, on the chair", "chair") == [7]


def test_sd3_text_axis_maps_a_word_to_its_clip_and_t5_positions():
    pipeline = build_mmdit_standin("sd3_medium", narrow=True)
    axis = text_axis(pipeline, ["a red cat", "a cat on the red chair"])
    # CLIP: start + 6 words + end = 8 positions; T5: 6 words + </s> (+1 kept beside) from 77 on
    assert axis.columns[:8] == list(range(8)) and axis.columns[8] == 77
    assert [axis.columns[c] for c in axis.word_positions("a cat on the red chair", "cat")] == [2, 77 + 1]
    assert [axis.columns[c] for c in axis.word_positions("a cat on the red chair", "chair")] == [6, 77 + 5]
    assert [axis.columns[c] for c in axis.prompt_positions("a red cat")] == [1, 2, 3, 77, 78, 79]
    flux = text_axis(build_mmdit_standin("flux_schnell", narrow=True), ["a red cat"])
    assert [flux.columns[c] for c in flux.word_positions("a red cat", "cat")] == [2]  # T5 only
