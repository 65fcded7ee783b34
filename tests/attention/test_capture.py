"""Cross-attention capture: conditional rows, batch independence, sizes, and agreement with diffusers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor
from helpers import generators

from harness.attention import AttentionTracer, BatchLayout, aggregate_layer_maps, swap_processors
from harness.methods.daam import generate_with_maps

PROMPTS = ["a red cat", "a blue dog on the grass", "a green tree near a white car"]
SEEDS = (11, 12, 13)
STEPS = 2
MODES = {  # name -> (pipeline fixture, guidance_scale, pag_scale)
    "cfg": ("tiny", 7.5, 0.0),
    "no_cfg": ("tiny", 1.0, 0.0),
    "cfg_pag": ("tiny_pag", 7.5, 3.0),
}


def _run(pipeline, prompts, seeds, guidance, pag, **options):
    return generate_with_maps(pipeline, prompts, generators(*seeds), steps=STEPS, guidance_scale=guidance,
                              height=32, width=32, pag_scale=pag, options=options)


@pytest.fixture(scope="module")
def reference_step0(tiny):
    """Conditional maps of the first UNet call, from a run with no guidance at all (only conditional rows exist)."""
    _, tracer = _run(tiny, PROMPTS, SEEDS, 1.0, 0.0, per_step=True)
    return tracer.steps.maps[0]


@pytest.mark.parametrize("mode", list(MODES))
def test_each_prompt_of_a_batch_gets_the_maps_it_gets_alone(mode, request, reference_step0):
    fixture, guidance, pag = MODES[mode]
    pipeline = request.getfixturevalue(fixture)
    _, tracer = _run(pipeline, PROMPTS, SEEDS, guidance, pag, per_step=True)
    assert tracer.branches == {"cfg": 2, "no_cfg": 1, "cfg_pag": 3}[mode]
    batch = tracer.token_maps()
    assert batch.shape == (3, 9, 16, 16)  # start + the longest prompt's 7 tokens + end
    for index, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS)):
        _, alone = _run(pipeline, [prompt], [seed], guidance, pag)
        single = alone.token_maps()[0]
        assert single.shape[0] == len(prompt.split()) + 2
        torch.testing.assert_close(batch[index, : single.shape[0]], single, rtol=1e-4, atol=1e-6)
    # Different prompts give different maps, so the comparison above is not vacuous.
    assert (batch[0] - batch[1]).abs().max() > 1e-3
    # At the first call every branch sees the same latents; only the conditional rows see the prompt
    # without perturbation, so they must equal a run that has conditional rows only.
    torch.testing.assert_close(tracer.steps.maps[0], reference_step0, rtol=1e-4, atol=1e-6)


def test_the_comparison_tells_the_branches_apart(tiny_pag, reference_step0):
    """Keeping the unconditional or the perturbed rows instead gives other maps at the first call."""
    for keep in ("uncond", "perturbed"):
        layout = BatchLayout(("uncond", "cond", "perturbed"), keep=keep)
        _, tracer = _run(tiny_pag, PROMPTS, SEEDS, 7.5, 3.0, per_step=True, layout=layout)
        assert (tracer.steps.maps[0] - reference_step0).abs().max() > 1e-4


def test_tracing_does_not_change_the_image(tiny):
    plain = tiny(PROMPTS[:2], num_inference_steps=STEPS, guidance_scale=7.5, height=32, width=32,
                 generator=generators(*SEEDS[:2]), output_type="np").images
    traced, _ = _run(tiny, PROMPTS[:2], SEEDS[:2], 7.5, 0.0)
    np.testing.assert_array_equal(plain, traced)


def test_non_square_images_keep_height_and_width(tiny):
    _, tracer = generate_with_maps(tiny, PROMPTS[:1], generators(0), steps=1, guidance_scale=7.5, height=32, width=48)
    assert tracer.latent_size == (16, 24)
    assert tracer.token_maps().shape == (1, 5, 16, 24)
    assert sorted({tuple(layer["size"]) for layer in tracer.layers_used()}) == [(8, 12), (16, 24)]


def _diffusers_probabilities(unet, sample, timestep, context):
    """Attention probabilities of every attn2 layer from diffusers' own (non-SDPA) AttnProcessor."""
    recorded = {}
    modules = {name: m for name, m in unet.named_modules() if name.endswith("attn2")}
    originals = {}
    for name, module in modules.items():
        originals[name] = module.get_attention_scores

        def record(query, key, mask=None, _name=name, _original=originals[name]):
            probabilities = _original(query, key, mask)
            recorded[_name] = probabilities.detach().clone()
            return probabilities

        module.get_attention_scores = record
    try:
        with swap_processors(unet, lambda name, current: AttnProcessor()), torch.no_grad():
            unet(sample, timestep, encoder_hidden_states=context)
    finally:
        for module in modules.values():
            del module.get_attention_scores  # back to the class method
    return recorded


def test_captured_probabilities_equal_diffusers_attention_scores(tiny):
    """Independent reference: diffusers' AttnProcessor.get_attention_scores on the same inputs, non-square latent."""
    unet = tiny.unet
    torch.manual_seed(0)
    sample = torch.randn(4, 4, 8, 12)  # CFG batch of 2 images: [uncond x2, cond x2]
    context = torch.randn(4, 77, unet.config.cross_attention_dim)
    reference = _diffusers_probabilities(unet, sample, 500, context)
    with AttentionTracer(unet, layers=["*"], exclude_factors=[], layout=BatchLayout.diffusers(cfg=True)) as tracer, torch.no_grad():
        unet(sample, 500, encoder_hidden_states=context)
    assert set(tracer.sums) == set(reference)
    for name, layer in tracer.sums.items():
        heads = layer.total.shape[1]
        expected = reference[name].view(4, heads, *reference[name].shape[1:])[2:]  # conditional rows
        torch.testing.assert_close(layer.total, expected, rtol=1e-5, atol=1e-7)
        h, w = layer.size
        assert h * w == expected.shape[2] and w / h == 1.5
    # Factor-1 layers need no resampling: their maps are the reference reshaped row-major to (h, w).
    full = [n for n, layer in tracer.sums.items() if layer.factor == 1]
    with AttentionTracer(unet, layers=full, exclude_factors=[], layout=BatchLayout.diffusers(cfg=True)) as only, torch.no_grad():
        unet(sample, 500, encoder_hidden_states=context)
    by_hand = torch.stack([reference[n].view(4, -1, 96, 77)[2:].mean(1) for n in full]).mean(0)  # (2, 96, 77)
    expected_maps = by_hand.permute(0, 2, 1).reshape(2, 77, 8, 12)
    torch.testing.assert_close(only.token_maps(), expected_maps, rtol=1e-5, atol=1e-7)


def test_step_window_and_per_step_maps(tiny):
    options = {"factors": [1]}  # native-resolution layers: no resampling, so sums commute with aggregation
    _, full = generate_with_maps(tiny, PROMPTS[:1], generators(3), steps=3, guidance_scale=7.5, height=32, width=32,
                                 options={**options, "per_step": True})
    assert len(full.steps.maps) == 3 and full.steps.call_indices == [0, 1, 2]
    assert full.steps.timesteps == sorted(full.steps.timesteps, reverse=True)
    torch.testing.assert_close(sum(full.steps.maps), full.token_maps(), rtol=1e-5, atol=1e-7)
    _, window = generate_with_maps(tiny, PROMPTS[:1], generators(3), steps=3, guidance_scale=7.5, height=32, width=32,
                                   options={**options, "step_window": [1, 2]})
    assert {layer["calls"] for layer in window.layers_used()} == {1}
    torch.testing.assert_close(window.token_maps(), full.steps.maps[1], rtol=1e-5, atol=1e-7)


def test_aggregation_of_hand_made_maps():
    """Two layers: one at the latent size (2 heads), one 1x1 (1 head); mean over the 3 (layer, head) pairs."""
    first = torch.zeros(1, 2, 2, 2, 2)  # (images, heads, tokens, h, w)
    first[0, 0, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    first[0, 1, 0] = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    first[0, :, 1] = 0.25
    second = torch.full((1, 1, 2, 1, 1), 0.6)  # bicubic from 1x1 is constant
    result = aggregate_layer_maps([first, second], (2, 2))
    expected_token0 = (torch.tensor([[1.0, 0.0], [0.0, 0.0]]) + torch.tensor([[0.0, 0.0], [0.0, 1.0]]) + 0.6) / 3
    torch.testing.assert_close(result[0, 0], expected_token0)
    torch.testing.assert_close(result[0, 1], torch.full((2, 2), (0.25 + 0.25 + 0.6) / 3))


def test_bicubic_undershoot_is_clamped():
    spike = torch.zeros(1, 1, 1, 4, 4)
    spike[0, 0, 0, 1, 1] = 1.0
    unclamped = aggregate_layer_maps([spike], (8, 8), clamp=False)
    clamped = aggregate_layer_maps([spike], (8, 8), clamp=True)
    assert unclamped.min() < 0
    assert clamped.min() == 0
    torch.testing.assert_close(clamped, unclamped.clamp(min=0))


def test_tracer_accumulates_hand_made_probabilities_at_native_resolution(tiny):
    """Known probabilities fed through add(): sizes inferred from a non-square latent, summed over calls."""
    tracer = AttentionTracer(tiny, layers=["down_blocks.*"], exclude_factors=[])
    tracer.latent_size = (4, 6)
    names = tracer.layer_names
    fine = torch.zeros(1, 1, 24, 3)
    fine[0, 0, :, 1] = torch.arange(24, dtype=torch.float32)  # token 1: value = row-major position
    coarse = torch.ones(1, 1, 6, 3)  # 2x3 map, all ones
    for _ in range(2):  # two UNet calls
        tracer.add(names[0], fine)
        tracer.add(names[1], coarse)
    assert tracer.sums[names[0]].size == (4, 6) and tracer.sums[names[1]].size == (2, 3)
    maps = tracer.token_maps()
    assert maps.shape == (1, 3, 4, 6)
    # Token 1: layer 0 contributes 2 * position (no resampling), layer 1 a constant 2; mean of the two.
    expected = (2 * torch.arange(24, dtype=torch.float32).view(4, 6) + 2.0) / 2
    torch.testing.assert_close(maps[0, 1], expected)
    torch.testing.assert_close(maps[0, 0], torch.full((4, 6), 1.0))  # (0 + 2) / 2


def test_sdxl_shaped_unet_with_an_odd_latent():
    """SDXL's layout (no full-resolution attention, 2-deep transformers, text_time embedding), latent 15x21."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=32).eval()
    sample, context = torch.randn(2, 4, 15, 21), torch.randn(2, 77, 64)
    added = {"text_embeds": torch.randn(2, 32), "time_ids": torch.randn(2, 6)}
    layout = BatchLayout.diffusers(cfg=True)
    with AttentionTracer(unet, layers=["*"], exclude_factors=[], layout=layout, max_tokens=10) as tracer, torch.no_grad():
        unet(sample, 10, encoder_hidden_states=context, added_cond_kwargs=added)
    assert tracer.token_maps().shape == (1, 10, 15, 21)
    assert {tuple(layer["size"]) for layer in tracer.layers_used()} == {(8, 11)}  # ceil(15/2) x ceil(21/2)
    assert len(tracer.layers_used()) == 2 + 4 + 2  # 2 deep: down 1 attention, up 2, mid 1
    reference = {}
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            original = module.get_attention_scores
            module.get_attention_scores = (lambda q, k, m=None, _n=name, _o=original:
                                           reference.setdefault(_n, _o(q, k, m)))
    try:
        with swap_processors(unet, lambda name, current: AttnProcessor()), torch.no_grad():
            unet(sample, 10, encoder_hidden_states=context, added_cond_kwargs=added)
    finally:
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                del module.get_attention_scores
    for name, layer in tracer.sums.items():
        expected = reference[name].view(2, 4, 88, 77)[1:, :, :, :10]
        torch.testing.assert_close(layer.total, expected, rtol=1e-5, atol=1e-7)


def test_layers_of_an_excluded_size_are_computed_once_then_skipped(tiny, monkeypatch):
    """exclude_factors: a layer's size is learnt at its first call; after that its maps are not computed.
    The maps equal those of a tracer that never wraps the excluded layers (chosen by name instead)."""
    from harness.attention import capture

    calls: dict[str, int] = {}
    original = capture.CrossAttentionCapture._capture

    def counting(self, *args, **kwargs):
        calls[self.name] = calls.get(self.name, 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(capture.CrossAttentionCapture, "_capture", counting)
    _, skipping = _run(tiny, PROMPTS[:1], SEEDS[:1], 7.5, 0.0, exclude_factors=[1])
    kept = sorted(skipping.sums)
    excluded = sorted(set(calls) - set(kept))
    assert kept and excluded
    assert all(calls[name] == 1 for name in excluded) and all(calls[name] == STEPS for name in kept)
    _, by_name = _run(tiny, PROMPTS[:1], SEEDS[:1], 7.5, 0.0, layers=kept, exclude_factors=[])
    torch.testing.assert_close(skipping.token_maps(), by_name.token_maps(), rtol=0, atol=0)


def test_one_pass_path_is_taken_and_gives_the_two_pass_maps(tiny, monkeypatch):
    """On the CPU the maps come from the SDPA kernel's own log-sum-exp (one pass); they equal the
    recomputed softmax (two passes), and the image is bit-identical to an untraced one."""
    from harness.attention import capture

    seen = []
    original = capture.CrossAttentionCapture._one_pass

    def recording(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        seen.append(output is not None)
        return output

    monkeypatch.setattr(capture.CrossAttentionCapture, "_one_pass", recording)
    images, one_pass = _run(tiny, PROMPTS[:2], SEEDS[:2], 7.5, 0.0)
    assert seen and all(seen), "the one-pass path fell back to two passes"
    monkeypatch.setattr(capture.CrossAttentionCapture, "_one_pass_applies", lambda self, attn, hidden: False)
    two_images, two_pass = _run(tiny, PROMPTS[:2], SEEDS[:2], 7.5, 0.0)
    np.testing.assert_array_equal(images, two_images)
    torch.testing.assert_close(one_pass.token_maps(), two_pass.token_maps(), rtol=1e-5, atol=1e-7)
