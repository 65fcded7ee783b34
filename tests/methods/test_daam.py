"""method=daam end to end on tiny_random: samples, words, image source, the CLI and the smoke experiment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import generators
from omegaconf import OmegaConf
from PIL import Image

from harness.config import ModelConfig
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.methods.base import GenerationSettings
from harness.methods.daam import DAAM
from harness.models.loader import load_tiny_random
from harness.schemas.daam import DAAMConfig

SETTINGS = GenerationSettings(steps=2, guidance_scale=7.5, height=32, width=32, negative_prompt="", batch_size=2)


@pytest.fixture(scope="module")
def model():
    cfg = OmegaConf.structured(ModelConfig)
    cfg.name = "tiny_random"
    cfg.device = "cpu"
    return load_tiny_random(cfg)


def _method(model, settings=SETTINGS, **overrides):
    cfg = OmegaConf.structured(DAAMConfig)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return DAAM(cfg, model, settings)


def test_samples_carry_a_heat_map_per_noun_and_match_a_direct_trace(model):
    from harness.attention import AttentionTracer

    records = [PromptRecord("a", "a red cat near a tree", 0, {"nouns": ["cat", "tree"]}),
               PromptRecord("b", "a blue dog", 1)]
    samples = _method(model).run_batch(records, [5, 6])
    assert samples[0].meta["words"] == ["cat", "tree"]
    assert samples[1].meta["words"] == ["a", "blue", "dog"]  # no nouns: every word
    assert set(samples[0].arrays) == {"heatmap:cat", "heatmap:tree"}
    heat = samples[0].arrays["heatmap:cat"]
    assert heat.dtype == np.float32 and heat.shape == (16, 16)
    assert samples[0].meta["unet_calls"] == 4  # 2 steps x (uncond, cond)
    # The same prompt and seed traced directly: the cat map is token 3's map.
    with AttentionTracer(model.pipeline) as tracer:
        image = model.pipeline("a red cat near a tree", num_inference_steps=2, guidance_scale=7.5, height=32, width=32,
                               generator=generators(5), output_type="np").images[0]
    np.testing.assert_allclose(heat, tracer.token_maps()[0, 3].numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(samples[0].image, np.clip(np.round(image * 255), 0, 255).astype(np.uint8))


def test_words_source_all_and_explicit_words(model):
    record = PromptRecord("a", "a red cat and a red dog", 0, {"nouns": ["cat", "dog"]})
    every = _method(model, words_source="all").extra_spec(record)["words"]
    assert every == ["a", "red", "cat", "and", "dog"]
    explicit = _method(model, words=["red#2", "dog"]).extra_spec(record)["words"]
    assert explicit == ["red#2", "dog"]


def test_a_noun_missing_from_the_prompt_fails_before_generating(model):
    record = PromptRecord("a", "a red cat", 0, {"nouns": ["horse"]})
    method = _method(model)
    calls = []
    hook = model.pipeline.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ConfigError, match="'horse' is not in the prompt 'a red cat'. Its words are: a, cat, red"):
            method.run_batch([record], [0])
    finally:
        hook.remove()
    assert not calls


def test_bad_option_values_are_refused(model):
    with pytest.raises(ConfigError, match="method.normalize='softmax'"):
        _method(model, normalize="softmax")
    with pytest.raises(ConfigError, match="occurrence"):
        _method(model, occurrence="second")


def test_daam_on_a_given_image(model, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(2):
        path = tmp_path / f"image{index}.png"
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    settings = GenerationSettings(steps=2, guidance_scale=7.5, height=32, width=48, negative_prompt="", batch_size=2)
    method = _method(model, settings, source="image", image_timesteps=[300, 700])
    records = [PromptRecord(f"r{i}", prompt, i, {"image": paths[i], "nouns": [noun]})
               for i, (prompt, noun) in enumerate([("a red cat", "cat"), ("a blue dog", "dog")])]
    both = method.run_batch(records, [1, 2])
    np.testing.assert_array_equal(both[0].image, np.asarray(Image.open(paths[0]).convert("RGB")))
    assert both[0].arrays["heatmap:cat"].shape == (16, 24)
    assert both[0].meta["unet_calls"] == 2  # 2 timesteps x the conditional branch only
    alone = method.run_batch(records[1:], [2])
    np.testing.assert_allclose(both[1].arrays["heatmap:dog"], alone[0].arrays["heatmap:dog"], rtol=1e-4, atol=1e-7)
    other_time = _method(model, settings, source="image", image_timesteps=[100]).run_batch(records[1:], [2])
    assert np.abs(other_time[0].arrays["heatmap:dog"] - alone[0].arrays["heatmap:dog"]).max() > 1e-4
    assert method.extra_spec(records[0])["image"] == paths[0]


def test_per_timestep_maps(model):
    method = _method(model, per_timestep=True, factors=[1])
    sample = method.run_batch([PromptRecord("a", "a red cat", 0)], [3])[0]
    steps = sample.arrays["heatmap_steps:cat"]
    assert steps.shape == (2, 16, 16)
    np.testing.assert_allclose(steps.sum(0), sample.arrays["heatmap:cat"], rtol=1e-5, atol=1e-7)
    assert sample.meta["step_timesteps"][0] > sample.meta["step_timesteps"][1]


def test_cli_writes_image_maps_and_overlay_reproducibly(tmp_path, model, capsys):
    from harness.daam_cli import main

    out = tmp_path / "out"
    status = main(["a red cat near a tree", "model=tiny_random", "seed=7", "steps=2", "guidance_scale=7.5",
                   "height=32", "width=48", f"out={out}", "words=cat,tree", "model.device=cpu"])
    assert status == 0
    with np.load(out / "heatmaps.npz") as npz:
        assert sorted(npz.files) == ["cat", "tree"]
        assert npz["cat"].shape == (16, 24) and npz["cat"].dtype == np.float32
    assert (out / "overlay.png").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["scheduler"] == "DDIMScheduler" and meta["token_positions"]["cat"] == [3]
    # Reproducible outside the harness: plain diffusers with a CPU generator seeded with `seed`.
    image = model.pipeline("a red cat near a tree", num_inference_steps=2, guidance_scale=7.5, height=32, width=48,
                           generator=torch.Generator("cpu").manual_seed(7), output_type="np").images[0]
    expected = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "image.png")), expected)

    assert main(["a red cat", "model=tiny_random", "words=horse", f"out={out}", "steps=1"]) == 2
    assert "'horse' is not in the prompt" in capsys.readouterr().err
    assert main(["a red cat", "model=tiny_random", "colour=red"]) == 2
    assert "method.colour: no such key. Known: clamp, " in capsys.readouterr().err
    assert main(["a red cat", "model=tiny_random", "normalise=minmax"]) == 2
    assert "Did you mean 'method.normalize'?" in capsys.readouterr().err


def test_cli_scheduler_option(tmp_path):
    from harness.daam_cli import main

    out = tmp_path / "euler"
    assert main(["a red cat", "model=tiny_random", "steps=1", "height=32", "width=32", "scheduler=euler",
                 f"out={out}", "model.device=cpu"]) == 0
    assert json.loads((out / "meta.json").read_text())["scheduler"] == "EulerDiscreteScheduler"


def test_daam_smoke_experiment_runs(tmp_path):
    from harness.compose import compose
    from harness.run import run_experiment
    from harness.store.samples import SampleStore

    cfg = compose(["experiment=daam_smoke", f"store.root={tmp_path / 'store'}", "model.device=cpu"])
    assert cfg.method.name == "daam" and cfg.method.layers == ["down_blocks.*", "up_blocks.*"]
    outcome = run_experiment(cfg, tmp_path / "run")
    assert outcome.generated == 2
    assert sorted(p.name for p in (tmp_path / "run" / "figures").glob("*.png")) == ["smoke-0000.png", "smoke-0001.png"]
    store = SampleStore(tmp_path / "store")
    metas = sorted((tmp_path / "store").glob("*/*/meta.json"))
    assert len(metas) == 2
    for meta_path in metas:
        sample = store.get(meta_path.parent.name)
        assert sample.meta["words"] and all(f"heatmap:{w}" in sample.arrays for w in sample.meta["words"])


def test_cli_on_a_given_image(tmp_path):
    from harness.daam_cli import main

    source = np.random.default_rng(1).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert main(["a red cat", "model=tiny_random", f"image={tmp_path / 'photo.png'}", "image_timesteps=200,600",
                 "height=32", "width=48", "words=cat", f"out={out}", "model.device=cpu"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "image.png")), source)
    with np.load(out / "heatmaps.npz") as npz:
        assert npz.files == ["cat"] and npz["cat"].shape == (16, 24)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"]["source"] == "image" and meta["method"]["image_timesteps"] == [200, 600]
    assert meta["unet_calls"] == 2  # one denoising step with the prompt per timestep


def test_cli_accepts_every_option_of_the_daam_schema():
    """`harness daam` is the registered method: each field of its schema can be set, and reaches the method."""
    import dataclasses

    from harness.daam_cli import daam_config
    from harness.schemas.daam import DAAMConfig

    values = {"layers": ("up_blocks.*", ["up_blocks.*"]), "exclude_layers": ("mid_block.*", ["mid_block.*"]),
              "factors": ("1,2", [1, 2]), "exclude_factors": ("4", [4]), "heads": ("0,1", [0, 1]),
              "step_window": ("0,1", [0, 1]), "per_timestep": ("true", True), "upsample": ("bilinear", "bilinear"),
              "clamp": ("false", False), "normalize": ("minmax", "minmax"), "words": ("cat", ["cat"]),
              "words_source": ("nouns", "nouns"), "occurrence": ("first", "first"), "pag_scale": ("1.5", 1.5),
              "pag_applied_layers": ("up_blocks.1", ["up_blocks.1"]), "source": ("image", "image"),
              "image_key": ("photo", "photo"), "image_timesteps": ("100,200", [100, 200])}
    fields = {f.name for f in dataclasses.fields(DAAMConfig)} - {"name"}
    assert fields == set(values), "a DAAM option without a case here"
    for key, (text, expected) in values.items():
        for spelled in (key, f"method.{key}"):
            _, _, cfg = daam_config(["a red cat", "model=tiny_random", f"{spelled}={text}"])
            assert cfg.method.name == "daam" and cfg.method[key] == expected, (spelled, cfg.method[key])
