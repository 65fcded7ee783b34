"""unCLIP: slerp against its closed form, the text-diff direction, the metrics, and the stand-ins end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from harness.methods.unclip import slerp, text_diff_direction
from harness.metrics.unclip import UnclipSmoothness, UnclipVariationStats, consecutive_distances
from harness.store.samples import Sample


def test_slerp_endpoints_unit_norm_and_constant_angular_speed():
    a = torch.tensor([3.0, 0.0, 0.0])
    b = torch.tensor([0.0, 0.0, 2.0])
    assert torch.allclose(slerp(a, b, 0.0), torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    for theta in np.linspace(0, 1, 7):
        out = slerp(a, b, float(theta))
        assert float(out.norm()) == pytest.approx(1.0, abs=1e-6)
        # closed form for orthogonal unit vectors: (cos(theta pi/2), 0, sin(theta pi/2))
        expected = torch.tensor([math.cos(theta * math.pi / 2), 0.0, math.sin(theta * math.pi / 2)])
        assert torch.allclose(out, expected, atol=1e-6)


def test_slerp_at_a_general_angle():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=generator), torch.randn(16, generator=generator)
    ua, ub = a / a.norm(), b / b.norm()
    omega = math.acos(float(ua @ ub))
    mid = slerp(a, b, 0.25)
    assert math.acos(min(1.0, float(mid @ ua))) == pytest.approx(0.25 * omega, abs=1e-5)
    assert math.acos(min(1.0, float(mid @ ub))) == pytest.approx(0.75 * omega, abs=1e-5)
    assert torch.allclose(slerp(a, a * 2, 0.5), ua, atol=1e-6)  # parallel: no division by sin(0)


def test_text_diff_direction_on_a_toy_embedding():
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    direction = text_diff_direction(red, 5 * blue)  # scale of the inputs does not matter
    assert torch.allclose(direction, torch.tensor([-1.0, 1.0, 0.0]) / math.sqrt(2), atol=1e-6)
    # an image embedding of "red circle" = red + a shape axis; moving along the diff raises its
    # cosine with blue monotonically and lowers it with red
    image = torch.tensor([1.0, 0.0, 1.0])
    cos_blue = [float(slerp(image, direction, t) @ blue) for t in (0.0, 0.25, 0.5, 0.75)]
    cos_red = [float(slerp(image, direction, t) @ red) for t in (0.0, 0.25, 0.5, 0.75)]
    assert all(x < y for x, y in zip(cos_blue, cos_blue[1:]))
    assert all(x > y for x, y in zip(cos_red, cos_red[1:]))
    with pytest.raises(HarnessError):
        text_diff_direction(red, 2 * red)


def test_metrics_by_hand():
    frames = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    # 1 - cos(45 deg) twice
    assert consecutive_distances(frames) == pytest.approx([1 - math.sqrt(0.5)] * 2)
    smooth = UnclipSmoothness()
    smooth.reset()
    assert smooth.process(None, Sample(arrays={"frame_embeds": frames}))["unclip_max_step"] == pytest.approx(1 - math.sqrt(0.5))
    stats = UnclipVariationStats()
    stats.reset()
    values = stats.process(None, Sample(arrays={"variation_embeds": np.array([[1.0, 0.0], [0.0, 1.0]]),
                                                "input_embed": np.array([1.0, 0.0])}))
    assert values["unclip_diversity"] == pytest.approx(1.0)
    assert values["unclip_input_similarity"] == pytest.approx(0.5)


@pytest.mark.parametrize("experiment,model", [("unclip_textdiff", "tiny_karlo"), ("unclip_interpolation", "tiny_sd21_unclip")])
def test_experiments_run_on_the_stand_ins(compose, tmp_path, experiment, model):
    from harness.run import run_experiment

    cfg = compose([f"experiment={experiment}", f"model={model}", "dataset.size=1", "generation.steps=2",
                   f"store.root={tmp_path / 'cache'}"])
    outcome = run_experiment(cfg, tmp_path / "run")
    rows = outcome.rows[outcome.rows["level"] == "aggregate"].set_index("metric")["value"]
    figures = sorted(p.name for p in (tmp_path / "run" / "figures").iterdir())
    if experiment == "unclip_textdiff":
        assert {"clip_score[step=0.00]", "clip_score[step=0.50]", "clip_score_gain"} <= set(rows.index)
        assert "textdiff_clip_score.png" in figures
    else:
        assert 0.0 <= rows["unclip_smoothness"] <= rows["unclip_max_step"] <= 2.0
        assert len(figures) == 1 and figures[0].startswith("frames_unclip_toy-")
    # the same config gives the same images (decoder noise from the record's seed)
    again = run_experiment(cfg, tmp_path / "run2")
    assert again.generated == 0 and again.reused == 1


def test_textdiff_is_refused_without_a_text_projection(compose, tmp_path):
    from harness.run import run_experiment

    cfg = compose(["experiment=unclip_textdiff", "model=tiny_sd21_unclip", "dataset.size=1",
                   f"store.root={tmp_path / 'cache'}"])
    with pytest.raises(HarnessError, match="no projection"):
        run_experiment(cfg, tmp_path / "run")


def test_missing_karlo_weights_stop_with_the_usual_message(compose, tmp_path):
    from harness.errors import MissingWeightsError
    from harness.models.loader import load_model

    cfg = compose(["experiment=unclip_variations", f"model.path={tmp_path / 'nowhere'}"])
    with pytest.raises(MissingWeightsError, match="save_pretrained"):
        load_model(cfg.model)


def test_daam_through_karlos_decoder_leaves_the_image_unchanged():
    from types import SimpleNamespace

    from harness.errors import ConfigError
    from harness.methods.unclip import karlo_decode_with_caption, word_positions
    from harness.models.unclip import load_tiny_unclip

    model = load_tiny_unclip(SimpleNamespace(name="tiny_karlo", weights_seed=0, device="cpu", dtype="auto"))
    embedding = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(1)), dim=0)
    caption = "a red circle"
    assert word_positions(model.pipeline.tokenizer, caption, ["red", "circle"]) == {"red": [2], "circle": [3]}  # BOS at 0
    with pytest.raises(ConfigError, match="'star' is not in the prompt"):  # never dropped silently
        karlo_decode_with_caption(model, embedding, caption, torch.Generator().manual_seed(0), 2, 3.0, words=["star"])
    plain, none = karlo_decode_with_caption(model, embedding, caption, torch.Generator().manual_seed(0), 2, 3.0)
    traced, maps = karlo_decode_with_caption(model, embedding, caption, torch.Generator().manual_seed(0), 2, 3.0,
                                             words=["red", "circle"])
    # the tracing processor computes what diffusers' does (its default is the SDPA kernel: float rounding only)
    difference = np.abs(plain.astype(int) - traced.astype(int))
    assert none == {} and difference.max() <= 2 and difference.mean() < 0.05
    assert set(maps) == {"red", "circle"}
    for heat in maps.values():
        assert heat.shape == (32, 32) and np.isfinite(heat).all() and heat.min() >= 0 and heat.max() > 0
    # the caption conditions the decoder: another caption, same noise, another image
    other, _ = karlo_decode_with_caption(model, embedding, "a blue star", torch.Generator().manual_seed(0), 2, 3.0)
    assert not np.array_equal(plain, other)
    # no hook is left on the pipeline's components: the next plain decode is the first one again
    again, _ = karlo_decode_with_caption(model, embedding, caption, torch.Generator().manual_seed(0), 2, 3.0)
    assert np.array_equal(plain, again)
    # the processors are restored
    assert all(type(p).__name__ != "_DecoderTracer" for p in model.pipeline.decoder.attn_processors.values())


def test_unclip_daam_maps_are_the_attention_mass_on_the_word_tokens():
    """Known answer: with every query projection zeroed, each decoder attention is uniform over its
    unmasked keys (4 image-embedding context tokens, the caption's 5 tokens: BOS "a" "red" "circle"
    EOS, and the layer's own P pixels), so a one-token word's map is 1 / (9 + P) at every pixel of
    every call; summed over steps and averaged over layers, as DAAM aggregates."""
    from types import SimpleNamespace

    from harness.methods.unclip import karlo_decode_with_caption
    from harness.models.unclip import load_tiny_unclip

    model = load_tiny_unclip(SimpleNamespace(name="tiny_karlo", weights_seed=0, device="cpu", dtype="auto"))
    decoder = model.pipeline.decoder
    pixels = []  # P of every attention call, read from the inputs (independent of the tracer)
    hooks = []
    for module in decoder.modules():
        if hasattr(module, "to_q") and hasattr(module, "add_k_proj"):
            torch.nn.init.zeros_(module.to_q.weight)
            if module.to_q.bias is not None:
                torch.nn.init.zeros_(module.to_q.bias)
            hooks.append(module.register_forward_pre_hook(
                lambda m, args, kwargs: pixels.append(int(np.prod((args[0] if args else kwargs["hidden_states"]).shape[2:]))),
                with_kwargs=True))
    steps = 2
    embedding = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(1)), dim=0)
    try:
        _, maps = karlo_decode_with_caption(model, embedding, "a red circle", torch.Generator().manual_seed(0), steps,
                                            3.0, words=["red", "circle"])
    finally:
        for hook in hooks:
            hook.remove()
    assert pixels and len(pixels) % steps == 0
    expected = sum(1.0 / (4 + 5 + p) for p in pixels) / (len(pixels) // steps)
    for word in ("red", "circle"):
        np.testing.assert_allclose(maps[word], np.full((32, 32), expected), rtol=1e-4)
