"""method=guider: agreement with diffusers' own guider path, the equal-budget rule, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.methods.guiders import (
    build_guider,
    calls_per_image,
    sample_with_guider,
    steps_for_budget,
)

STEPS = 3
PROMPTS = ["a red cat", "a blue dog"]
SEEDS = [5, 6]
MID = "mid_block.attentions.0.transformer_blocks.0"

# Every image guider of diffusers 0.42.1, with arguments that switch its extra branch on at every
# step (diffusers' PAG/SLG defaults confine it to steps 1%-20%, i.e. none of 3 steps).
GUIDERS = {
    "ClassifierFreeGuidance": {},
    "ClassifierFreeZeroStarGuidance": {"zero_init_steps": 1},
    "AdaptiveProjectedGuidance": {"adaptive_projected_guidance_momentum": -0.5},
    "AdaptiveProjectedMixGuidance": {"adaptive_projected_guidance_start_step": 1},
    "TangentialClassifierFreeGuidance": {},
    "FrequencyDecoupledGuidance": {"guidance_scales": [5.0, 2.0]},
    "MagnitudeAwareGuidance": {},
    "PerturbedAttentionGuidance": {"perturbed_guidance_scale": 2.0, "perturbed_guidance_start": 0.0,
                                   "perturbed_guidance_stop": 1.0},
    "SkipLayerGuidance": {"skip_layer_guidance_scale": 2.0, "skip_layer_guidance_start": 0.0,
                          "skip_layer_guidance_stop": 1.0},
    "SmoothedEnergyGuidance": {"seg_guidance_scale": 2.0, "seg_blur_sigma": 2.0},
    "AutoGuidance": {"dropout": 1.0},
}
# diffusers 0.42.1's mambo_guidance cannot take 4-D latents (torch.norm over three dims), so its
# own modular pipeline fails for it on a UNet; the harness's flattening is pinned separately.
MODULAR_FAILS = {"MagnitudeAwareGuidance"}


def guider(name: str, **extra):
    scale = {} if name == "FrequencyDecoupledGuidance" else {"guidance_scale": 3.0}  # it has guidance_scales
    return build_guider(name, {**scale, **GUIDERS[name], **extra}, layers=[MID])


def generators():
    return [torch.Generator().manual_seed(seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def sdxl():
    from harness.models.standins import build_standin

    pipeline = build_standin("sdxl_base")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def modular_sdxl(sdxl):
    from diffusers.modular_pipelines.stable_diffusion_xl.modular_blocks_stable_diffusion_xl import (
        StableDiffusionXLAutoBlocks,
    )

    modular = StableDiffusionXLAutoBlocks().init_pipeline()
    modular.update_components(**{k: v for k, v in sdxl.components.items() if v is not None})
    modular.set_progress_bar_config(disable=True)
    return modular


@pytest.mark.parametrize("name", sorted(set(GUIDERS) - MODULAR_FAILS))
def test_sdxl_image_equals_diffusers_modular_pipeline(name, sdxl, modular_sdxl):
    ours = sample_with_guider(sdxl, guider(name), PROMPTS, None, STEPS, 64, 64, generators())
    modular_sdxl.update_components(guider=guider(name))
    theirs = modular_sdxl(prompt=PROMPTS, num_inference_steps=STEPS, height=64, width=64, generator=generators(),
                          output_type="np", output="images")
    assert np.abs(np.asarray(ours) - np.asarray(theirs)).max() < 1e-4
    # and the guider did something: the image differs from the conditional branch alone
    plain = sample_with_guider(sdxl, build_guider("ClassifierFreeGuidance", {"guidance_scale": 1.0}), PROMPTS, None,
                               STEPS, 64, 64, generators())
    assert np.abs(np.asarray(ours) - np.asarray(plain)).max() > 1e-3


def test_hooks_are_removed_after_sampling(sdxl):
    sample_with_guider(sdxl, guider("PerturbedAttentionGuidance"), PROMPTS[:1], None, 1, 64, 64, generators()[:1])
    from diffusers.hooks import HookRegistry

    left = [name for module in sdxl.unet.modules()
            if isinstance(getattr(module, "_diffusers_hook", None), HookRegistry)
            for name in module._diffusers_hook.hooks]
    assert left == []


def test_cfg_guider_equals_the_classic_pipelines(tiny_model, sdxl):
    pipeline = tiny_model.pipeline
    pipeline.set_progress_bar_config(disable=True)
    ours = sample_with_guider(pipeline, guider("ClassifierFreeGuidance"), PROMPTS, None, STEPS, 32, 32, generators())
    theirs = pipeline(PROMPTS, num_inference_steps=STEPS, guidance_scale=3.0, height=32, width=32,
                      generator=generators(), output_type="np").images
    assert np.abs(ours - theirs).max() < 1e-4
    ours = sample_with_guider(sdxl, guider("ClassifierFreeGuidance"), PROMPTS, None, STEPS, 64, 64, generators())
    theirs = sdxl(PROMPTS, num_inference_steps=STEPS, guidance_scale=3.0, height=64, width=64,
                  generator=generators(), output_type="np").images
    assert np.abs(ours - theirs).max() < 1e-4


def reference_loop(pipeline, guider_object, steps):
    """A minimal SD 1.x loop written from diffusers' guider API (the modular denoise step)."""
    embeds, negative = pipeline.encode_prompt(PROMPTS, "cpu", 1, True, None)
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(steps)
    side = 32 // pipeline.vae_scale_factor
    shape = (len(PROMPTS), pipeline.unet.config.in_channels, side, side)
    latents = torch.stack([torch.randn(shape[1:], generator=g) for g in generators()]) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        guider_object.set_state(step=i, num_inference_steps=steps, timestep=t)
        batches = guider_object.prepare_inputs({"encoder_hidden_states": (embeds, negative)})
        for batch in batches:
            guider_object.prepare_models(pipeline.unet)
            batch.noise_pred = pipeline.unet(scheduler.scale_model_input(latents, t), t,
                                             encoder_hidden_states=batch.encoder_hidden_states).sample
            guider_object.cleanup_models(pipeline.unet)
        latents = scheduler.step(guider_object(batches).pred, t, latents).prev_sample
    image = pipeline.vae.decode(latents / pipeline.vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", sorted(set(GUIDERS) - MODULAR_FAILS))
def test_sd_shaped_image_equals_a_reference_loop(name, tiny_model):
    pipeline = tiny_model.pipeline
    with torch.no_grad():
        ours = sample_with_guider(pipeline, guider(name), PROMPTS, None, STEPS, 32, 32, generators())
        theirs = reference_loop(pipeline, guider(name), STEPS)
    assert np.abs(ours - theirs).max() < 1e-4


def test_magnitude_aware_flattening_keeps_the_guider_formula():
    # mambo guidance by hand (its paper's formula) on 4-D predictions vs the guider on (N, C, H*W)
    from diffusers.guiders import MagnitudeAwareGuidance

    generator = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 4, 3, 3, generator=generator), torch.randn(2, 4, 3, 3, generator=generator)
    scale, alpha = 4.0, 2.0
    diff = cond - uncond
    ratio = diff.flatten(1).norm(dim=1) / uncond.flatten(1).norm(dim=1)
    expected = uncond + (1 + (scale - 1) * torch.exp(-alpha * ratio)).view(-1, 1, 1, 1) * diff
    guider_object = MagnitudeAwareGuidance(guidance_scale=scale, alpha=alpha)
    got = guider_object.forward(cond.flatten(2), uncond.flatten(2)).pred.reshape(cond.shape)
    torch.testing.assert_close(got, expected)


def test_measured_calls_equal_the_guiders_count(tiny_model):
    from harness.data.prompts import PromptRecord
    from harness.methods.base import GenerationSettings
    from harness.methods.guiders import GuiderSampling
    from harness.schemas.guidance import GuiderConfig

    records = [PromptRecord("r0", PROMPTS[0], 1), PromptRecord("r1", PROMPTS[1], 2)]
    for name, params, steps in [("PerturbedAttentionGuidance", GUIDERS["PerturbedAttentionGuidance"], 4),
                                ("SmoothedEnergyGuidance", {"seg_guidance_stop": 0.5}, 4),
                                ("ClassifierFreeGuidance", {}, 4)]:
        cfg = OmegaConf.merge(OmegaConf.structured(GuiderConfig), {"guider": name, "params": params, "start": 0.25})
        settings = GenerationSettings(steps=steps, guidance_scale=3.0, height=32, width=32, negative_prompt="",
                                      batch_size=2)
        method = GuiderSampling(cfg, tiny_model, settings)
        samples = method.run_batch(records, SEEDS)
        assert samples[0].meta["unet_calls"] == method.expected_calls
    # start=0.25 of 4 steps: step 0 is conditional only. PAG: 1 + 3*3; SEG on steps 1 (stop 0.5 -> 2): 1 + 3 + 2*2
    assert calls_per_image(build_guider("PerturbedAttentionGuidance", GUIDERS["PerturbedAttentionGuidance"],
                                        start=0.25, layers=[MID]), 4) == 10


def test_equal_budget_rule():
    cfg = build_guider("ClassifierFreeGuidance", {"guidance_scale": 3.0})
    # CFG + PAG: three branches at every step but the first (diffusers' PAG interval test is
    # start < step, strict, so its perturbed branch is off at step 0): 3n - 1 calls for n steps
    pag = guider("PerturbedAttentionGuidance")
    assert [calls_per_image(pag, n) for n in (1, 2, 20)] == [2, 5, 59]
    assert steps_for_budget(cfg, 60) == 30
    assert steps_for_budget(pag, 59) == 20
    assert steps_for_budget(pag, 61) == 20
    assert steps_for_budget(pag, 62) == 21
    # guidance only on the first half: steps outside it cost one call, so more steps fit
    half = build_guider("ClassifierFreeGuidance", {"guidance_scale": 3.0}, stop=0.5)
    steps = steps_for_budget(half, 60)
    assert calls_per_image(half, steps) <= 60 < calls_per_image(half, steps + 1)
    assert steps == 40  # 20 steps x 2 + 20 steps x 1
    # no guidance (scale 1): one call a step
    assert steps_for_budget(build_guider("ClassifierFreeGuidance", {"guidance_scale": 1.0}), 7) == 7
    with pytest.raises(ConfigError, match="does not buy one step"):
        steps_for_budget(cfg, 1)


def test_budget_sets_the_steps_the_rows_report(tiny_model):
    from harness.methods.base import GenerationSettings
    from harness.methods.guiders import GuiderSampling
    from harness.schemas.guidance import GuiderConfig

    settings = GenerationSettings(steps=50, guidance_scale=3.0, height=32, width=32, negative_prompt="", batch_size=1)
    cfg = OmegaConf.merge(OmegaConf.structured(GuiderConfig), {"guider": "SkipLayerGuidance", "budget_calls": 30,
                                                               "params": GUIDERS["SkipLayerGuidance"]})
    method = GuiderSampling(cfg, tiny_model, settings)
    assert settings.steps == 10 and method.expected_calls == 29  # 2 + 3 x 9 (see test_equal_budget_rule)


def test_unknown_guider_suggests_the_close_name():
    with pytest.raises(ConfigError, match="Did you mean SmoothedEnergyGuidance"):
        build_guider("SmoothedEnergyGuidence")


def test_unknown_argument_lists_the_accepted_ones():
    with pytest.raises(ConfigError, match="seg_guidance_scale"):
        build_guider("SmoothedEnergyGuidance", {"seg_scale": 2.0}, layers=[MID])


def test_model_that_cannot_take_a_guider_is_named(tiny_model):
    from harness.methods.base import GenerationSettings
    from harness.methods.guiders import GuiderSampling
    from harness.models.loader import LoadedModel
    from harness.schemas.guidance import GuiderConfig

    settings = GenerationSettings(steps=2, guidance_scale=3.0, height=32, width=32, negative_prompt="", batch_size=1)

    class FluxPipeline:  # any pipeline outside SD / SDXL / SD3
        pass

    flux = LoadedModel("flux_dev", FluxPipeline(), "x", torch.device("cpu"), torch.float32, 32, 32)
    cfg = OmegaConf.merge(OmegaConf.structured(GuiderConfig), {"guider": "SmoothedEnergyGuidance"})
    with pytest.raises(ConfigError, match=r"model 'flux_dev' \(FluxPipeline\) cannot take the guider SmoothedEnergyGuidance"):
        GuiderSampling(cfg, flux, settings)
    cfg = OmegaConf.merge(OmegaConf.structured(GuiderConfig), {"guider": "LTX2Guidance"})
    with pytest.raises(ConfigError, match="model 'tiny_random' cannot take the guider LTX2Guidance"):
        GuiderSampling(cfg, tiny_model, settings)


def test_a_layer_that_is_not_there_lists_the_candidates(tiny_model):
    from harness.methods.base import GenerationSettings
    from harness.methods.guiders import GuiderSampling
    from harness.schemas.guidance import GuiderConfig

    settings = GenerationSettings(steps=2, guidance_scale=3.0, height=32, width=32, negative_prompt="", batch_size=1)
    cfg = OmegaConf.merge(OmegaConf.structured(GuiderConfig), {"guider": "PerturbedAttentionGuidance",
                                                               "layers": ["mid_block.attentions.0.transformer_blocks.7"]})
    with pytest.raises(ConfigError, match="transformer-block lists here: .*mid_block.attentions.0.transformer_blocks"):
        GuiderSampling(cfg, tiny_model, settings)


def test_smoothed_energy_guidance_needs_its_branch_counter(tiny_model):
    # diffusers 0.42.1's SEG never applies its blur (no _count_prepared increment): its images equal
    # plain CFG's. The harness's SEG (diffusers' class + the counter) differs from CFG.
    from diffusers.guiders import SmoothedEnergyGuidance

    pipeline = tiny_model.pipeline
    params = {"guidance_scale": 3.0, "seg_guidance_scale": 3.0, "seg_blur_sigma": 2.0,
              "seg_guidance_config": [{"indices": [0], "fqn": "mid_block.attentions.0.transformer_blocks"}]}
    run = lambda g: sample_with_guider(pipeline, g, PROMPTS, None, STEPS, 32, 32, generators())  # noqa: E731
    with torch.no_grad():
        cfg = run(guider("ClassifierFreeGuidance"))
        theirs = run(SmoothedEnergyGuidance(**params))
        ours = run(guider("SmoothedEnergyGuidance", seg_blur_sigma=2.0, seg_guidance_scale=3.0))
    assert np.abs(theirs - cfg).max() < 1e-6
    assert np.abs(ours - cfg).max() > 1e-3



def test_sd3_runs_through_diffusers_modular_pipeline_and_flux_is_refused(compose):
    from harness.data.prompts import PromptRecord
    from harness.methods.base import GenerationSettings
    from harness.methods.guiders import GuiderSampling
    from harness.models.loader import load_model
    from harness.schemas.guidance import GuiderConfig

    def method(model_name, guider_name, **extra):
        model = load_model(compose([f"model={model_name}"]).model)
        settings = GenerationSettings(steps=2, guidance_scale=3.0, height=64, width=64, negative_prompt="",
                                      batch_size=1)
        cfg = OmegaConf.merge(OmegaConf.structured(GuiderConfig), {"guider": guider_name, **extra})
        return GuiderSampling(cfg, model, settings)

    cfg_sd3 = method("tiny_sd3", "ClassifierFreeGuidance")
    [sample] = cfg_sd3.run_batch([PromptRecord("r0", "a red cat", 1)], [5])
    assert sample.image.shape == (64, 64, 3) and sample.meta["unet_calls"] == cfg_sd3.expected_calls == 4
    # diffusers 0.42.1's layer-skip hooks do not know SD3's joint attention processor: refused up front
    with pytest.raises(ConfigError, match="model 'tiny_sd3' .*cannot take the guider PerturbedAttentionGuidance"):
        method("tiny_sd3", "PerturbedAttentionGuidance", layers=["transformer_blocks.0"])
    with pytest.raises(ConfigError, match=r"model 'tiny_flux' \(FluxPipeline\) cannot take the guider"):
        method("tiny_flux", "ClassifierFreeGuidance")
