"""Processor swapping: originals always restored; other layers untouched; clear errors."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from helpers import generators

from harness.attention import (
    AttentionTracer,
    attention_modules,
    cross_attention_layers,
    select_layers,
    swap_processors,
)
from harness.errors import ConfigError


def _snapshot(pipeline):
    return {name: processor for name, processor in pipeline.unet.attn_processors.items()}


def test_swap_restores_the_very_same_processors(tiny):
    before = _snapshot(tiny)
    layer = cross_attention_layers(tiny)[0]
    replacement = AttnProcessor()
    with swap_processors(tiny, {layer: replacement}) as installed:
        during = _snapshot(tiny)
        assert during[f"{layer}.processor"] is replacement
        assert installed == {layer: replacement}
        # Every other layer keeps its own processor object.
        assert all(during[k] is v for k, v in before.items() if k != f"{layer}.processor")
    after = _snapshot(tiny)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_swap_restores_after_an_exception(tiny):
    before = _snapshot(tiny)
    with pytest.raises(RuntimeError, match="boom"):
        with swap_processors(tiny, lambda name, current: AttnProcessor()):
            assert all(isinstance(p, AttnProcessor) for p in tiny.unet.attn_processors.values())
            raise RuntimeError("boom")
    after = _snapshot(tiny)
    assert all(after[k] is before[k] for k in before)


def test_tracer_restores_after_an_exception_inside_the_pipeline(tiny):
    before = _snapshot(tiny)
    hooks_before = (len(tiny.unet._forward_pre_hooks), len(tiny.unet._forward_hooks))
    with pytest.raises(ValueError):
        with AttentionTracer(tiny):
            tiny("a red cat", num_inference_steps=1, height=30, width=32, generator=generators(0))  # 30: not divisible
    after = _snapshot(tiny)
    assert all(after[k] is before[k] for k in before)
    assert (len(tiny.unet._forward_pre_hooks), len(tiny.unet._forward_hooks)) == hooks_before


def test_tracer_wraps_only_the_selected_cross_attention_layers(tiny):
    before = _snapshot(tiny)
    with AttentionTracer(tiny) as tracer:
        during = tiny.unet.attn_processors
        wrapped = {k[: -len(".processor")] for k, p in during.items() if p is not before[k]}
        assert wrapped == set(tracer.layer_names)
        assert all(".attn2" in name and not name.startswith("mid_block") for name in wrapped)
        # Self-attention and the mid block keep their fast SDPA processors.
        assert all(isinstance(p, AttnProcessor2_0) for k, p in during.items() if k[: -len(".processor")] not in wrapped)
    assert len(tracer.layer_names) == 6  # tiny_random: 2 down + 4 up cross-attention layers


def test_pattern_matching_nothing_lists_the_candidates(tiny):
    with pytest.raises(ConfigError, match="matches no cross-attention layer.*down_blocks.0.attentions.0"):
        select_layers(tiny, ["down_blocks.7.*"])
    with pytest.raises(ConfigError, match="No attention layer named"):
        with swap_processors(tiny, {"nowhere.attn2": AttnProcessor()}):
            pass


def test_selection_by_pattern_and_exclusion(tiny):
    assert select_layers(tiny, ["up_blocks.1.*"]) == [
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2", "up_blocks.1.attentions.1.transformer_blocks.0.attn2"]
    assert select_layers(tiny, ["*"], exclude=["up_blocks.*", "mid_block.*"]) == [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2", "down_blocks.1.attentions.0.transformer_blocks.0.attn2"]


def test_unet_without_cross_attention_is_refused():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=8, attention_head_dim=8)
    assert attention_modules(unet)  # it has attention, but only self-attention
    with pytest.raises(ConfigError, match="no cross-attention layers"):
        select_layers(unet)
