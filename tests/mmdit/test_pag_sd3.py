"""pag / cfg_pag on the SD3 stand-in through diffusers' StableDiffusion3PAGPipeline, same cost accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.methods.base import GenerationSettings, to_uint8
from harness.methods.guidance import CFG, CFGPAG, PAG
from harness.models.loader import LoadedModel
from harness.models.mmdit_standins import build_mmdit_standin
from harness.schemas.guidance import CFGConfig, CFGPAGConfig, PAGConfig

STEPS = 2
LAYERS = ["blocks.1"]  # diffusers' default for SD3 PAG: transformer_blocks.1.attn


@pytest.fixture(scope="module")
def model():
    pipeline = build_mmdit_standin("sd3_medium", narrow=True)
    return LoadedModel("sd3_medium", pipeline, "standin", torch.device("cpu"), torch.float32, 64, 64)


def _run(model, method_class, schema, **overrides):
    cfg = OmegaConf.merge(OmegaConf.structured(schema), overrides)
    settings = GenerationSettings(steps=STEPS, guidance_scale=3.0, height=64, width=64, negative_prompt="", batch_size=1)
    records = [PromptRecord("a", "a red cat on a chair", 0)]
    return method_class(cfg, model, settings).run_batch(records, [7])[0]


def test_pag_and_cfg_pag_match_diffusers_and_count_transformer_calls(model):
    from diffusers import StableDiffusion3PAGPipeline

    processors = {k: type(v) for k, v in model.pipeline.transformer.attn_processors.items()}
    pag = _run(model, PAG, PAGConfig, pag_applied_layers=LAYERS, pag_scale=3.0)
    cfg_pag = _run(model, CFGPAG, CFGPAGConfig, pag_applied_layers=LAYERS, pag_scale=3.0)
    cfg = _run(model, CFG, CFGConfig)
    assert pag.meta["unet_calls"] == 2 * STEPS and cfg_pag.meta["unet_calls"] == 3 * STEPS and cfg.meta["unet_calls"] == 2 * STEPS
    assert not np.array_equal(cfg_pag.image, cfg.image)
    assert {k: type(v) for k, v in model.pipeline.transformer.attn_processors.items()} == processors  # restored
    reference = StableDiffusion3PAGPipeline.from_pipe(model.pipeline, pag_applied_layers=LAYERS)
    reference.set_progress_bar_config(disable=True)
    expected = reference("a red cat on a chair", num_inference_steps=STEPS, guidance_scale=3.0, pag_scale=3.0,
                         height=64, width=64, output_type="np",
                         generator=[torch.Generator().manual_seed(7)]).images
    np.testing.assert_array_equal(cfg_pag.image, to_uint8(expected)[0])


def test_pag_layer_patterns_and_perturbations_are_checked(model):
    with pytest.raises(ConfigError, match="match no self-attention layer"):
        _run(model, PAG, PAGConfig, pag_applied_layers=["mid"])
    with pytest.raises(ConfigError, match="only perturbation=identity"):
        _run(model, PAG, PAGConfig, pag_applied_layers=LAYERS, perturbation="random_mask")
