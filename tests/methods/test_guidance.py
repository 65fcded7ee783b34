"""plain / cfg / pag / cfg_pag against diffusers' own pipelines on tiny_random."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.attention import swap_processors
from harness.errors import ConfigError
from harness.methods.base import to_uint8
from harness.methods.guidance import (
    CFG,
    CFGPAG,
    PAG,
    PerturbedSelfAttnProcessor,
    Plain,
    check_layer_patterns,
)
from harness.models.tiny import tiny_components

STEPS = 2


LAYERS = ["mid", "up_blocks.1"]
SEEDS = [5, 6]


@pytest.fixture(scope="module")
def outputs(tiny_model, records):
    """Each method's samples for the two records (batch of two), computed once for the module."""
    from omegaconf import OmegaConf

    from harness.methods.base import GenerationSettings
    from harness.schemas.guidance import CFGConfig, CFGPAGConfig, PAGConfig, PlainConfig

    def run(method_class, schema, **overrides):
        cfg = OmegaConf.merge(OmegaConf.structured(schema), {"pag_applied_layers": LAYERS} if schema in (PAGConfig, CFGPAGConfig) else {}, overrides)
        settings = GenerationSettings(steps=STEPS, guidance_scale=3.0, height=32, width=32, negative_prompt="", batch_size=2)
        return method_class(cfg, tiny_model, settings).run_batch(records, SEEDS)

    return {
        "plain": run(Plain, PlainConfig),
        "cfg": run(CFG, CFGConfig),
        "pag": run(PAG, PAGConfig, pag_scale=2.5),
        "cfg_pag": run(CFGPAG, CFGPAGConfig, pag_scale=2.5),
        "cfg_pag_scale0": run(CFGPAG, CFGPAGConfig, pag_scale=0.0),
    }


@pytest.fixture(scope="module")
def records():
    from harness.data.prompts import PromptRecord

    return [PromptRecord("r0", "a red cat", 11), PromptRecord("r1", "a blue dog", 12)]


def test_our_pag_equals_diffusers_pag_pipeline(outputs, records):
    # diffusers' StableDiffusionPAGPipeline, built independently from the same tiny components
    from diffusers import StableDiffusionPAGPipeline

    reference = StableDiffusionPAGPipeline(**tiny_components(), requires_safety_checker=False, pag_applied_layers=LAYERS)
    reference.set_progress_bar_config(disable=True)
    for name, guidance_scale in (("cfg_pag", 3.0), ("pag", 1.0)):
        output = reference(prompt=[r.prompt for r in records], num_inference_steps=STEPS, guidance_scale=guidance_scale,
                           pag_scale=2.5, height=32, width=32, output_type="np",
                           generator=[torch.Generator().manual_seed(s) for s in SEEDS])
        for sample, expected in zip(outputs[name], to_uint8(output.images)):
            np.testing.assert_array_equal(sample.image, expected)
    # PAG changes the image (the comparison would pass vacuously otherwise)
    assert np.abs(outputs["pag"][0].image.astype(int) - outputs["plain"][0].image).max() > 0
    assert np.abs(outputs["cfg_pag"][0].image.astype(int) - outputs["cfg"][0].image).max() > 0


def test_pag_scale_zero_equals_plain_cfg(outputs):
    for with_zero_pag, cfg in zip(outputs["cfg_pag_scale0"], outputs["cfg"]):
        np.testing.assert_array_equal(with_zero_pag.image, cfg.image)
    assert outputs["cfg_pag_scale0"][0].meta["unet_calls"] == 2 * STEPS  # PAG off: no third branch


@pytest.mark.parametrize("name,per_step", [("plain", 1), ("cfg", 2), ("pag", 2), ("cfg_pag", 3)])
def test_unet_calls_count_guidance_branches(outputs, name, per_step):
    samples = outputs[name]  # a batch of two: still counted per image
    assert [s.meta["unet_calls"] for s in samples] == [per_step * STEPS] * 2
    assert all(s.meta["seconds"] > 0 for s in samples)


def test_plain_and_pag_record_guidance_one(method_cfg, tiny_model, settings):
    shared = settings(7.5)
    PAG(method_cfg("pag"), tiny_model, shared)
    assert shared.guidance_scale == 1.0  # the rows' hp.guidance_scale says no CFG branch ran


def test_unconditional_ignores_the_prompt(method_cfg, tiny_model, settings, records):
    method = PAG(method_cfg("pag", unconditional=True), tiny_model, settings())
    samples = method.run_batch(records, [3, 3])  # two captions, one seed: one image
    np.testing.assert_array_equal(samples[0].image, samples[1].image)
    assert samples[0].meta["prompt_used"] == ""
    assert method.sample_spec(records[0], 3) == method.sample_spec(records[1], 3) | {"seed": 3}


def test_layer_pattern_matching_nothing_lists_candidates(method_cfg, tiny_model, settings):
    with pytest.raises(ConfigError) as caught:
        PAG(method_cfg("pag", pag_applied_layers=["mid", "middle_block"]), tiny_model, settings())
    message = str(caught.value)
    assert "'middle_block'" in message and "'mid'" not in message.split("match no")[0]
    assert "mid_block.attentions.0.transformer_blocks.0.attn1" in message
    assert "attn2" not in message  # cross-attention is not a PAG candidate
    # the same rule as diffusers: "down_blocks.1" must not match down_blocks.10..., and regexes work
    found = check_layer_patterns(["up_blocks.(0|1)"], tiny_model.pipeline.unet)
    assert len(found["up_blocks.(0|1)"]) == 4


def test_generic_identity_processor_equals_diffusers(tiny_model):
    from diffusers.models.attention_processor import (
        PAGCFGIdentitySelfAttnProcessor2_0,
        PAGIdentitySelfAttnProcessor2_0,
    )

    attn = tiny_model.pipeline.unet.mid_block.attentions[0].transformer_blocks[0].attn1
    hidden = torch.randn(6, 16, attn.to_q.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for with_cfg, reference in ((True, PAGCFGIdentitySelfAttnProcessor2_0()), (False, PAGIdentitySelfAttnProcessor2_0())):
            ours = PerturbedSelfAttnProcessor("identity", with_cfg=with_cfg)(attn, hidden)
            torch.testing.assert_close(ours, reference(attn, hidden), rtol=1e-5, atol=1e-5)


def test_off_diagonal_never_attends_to_itself(tiny_model):
    from harness.methods.guidance import PERTURBATIONS

    logits = torch.randn(1, 2, 5, 5)
    probabilities = PERTURBATIONS["off_diagonal"](logits, 0.0, None)
    assert torch.all(torch.diagonal(probabilities, dim1=-2, dim2=-1) == 0)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(1, 2, 5))


@pytest.mark.parametrize("perturbation", ["random_mask", "additive_noise", "off_diagonal"])
def test_ablation_perturbations_are_deterministic_and_differ_from_identity(method_cfg, tiny_model, settings, records,
                                                                           outputs, perturbation):
    cfg = method_cfg("cfg_pag", perturbation=perturbation, pag_scale=2.5, pag_applied_layers=LAYERS)
    alone = CFGPAG(cfg, tiny_model, settings()).run_batch(records[1:], SEEDS[1:])
    assert np.abs(outputs["cfg_pag"][1].image.astype(int) - alone[0].image).max() > 0  # identity differs
    if perturbation != "off_diagonal":  # random ones: one stream per image, so batch neighbours do not matter
        batch = CFGPAG(cfg, tiny_model, settings()).run_batch(records, SEEDS)
        # Same noise stream; a batch of 3 and a batch of 1 may sum floats in another order on a
        # loaded CPU, so allow one grey level (another seed's image differs by far more).
        assert np.abs(batch[1].image.astype(int) - alone[0].image).max() <= 1


def test_processors_are_restored_after_a_failure(tiny_model):
    unet = tiny_model.pipeline.unet
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    with pytest.raises(RuntimeError), swap_processors(unet, {}):
        unet.set_attn_processor(PerturbedSelfAttnProcessor("identity"))
        raise RuntimeError("sampling failed")
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before
