"""DAAM and ConceptAttention on MMDiT stand-ins through the method classes, the CLI and a DAAM experiment by model=."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from harness.config import ModelConfig
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.methods.base import GenerationSettings
from harness.models.loader import load_model
from harness.models.mmdit_standins import save_mmdit_standin

SETTINGS = GenerationSettings(steps=2, guidance_scale=3.0, height=64, width=64, negative_prompt="", batch_size=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("standins")
    return {name: save_mmdit_standin(name, root / name, narrow=True) for name in ("sd3_medium", "flux_schnell")}


def _model(name, folder):
    cfg = OmegaConf.structured(ModelConfig)
    cfg.name, cfg.path, cfg.device, cfg.dtype = name, str(folder), "cpu", "float32"
    return load_model(cfg)


@pytest.mark.parametrize("name", ["sd3_medium", "flux_schnell"])
def test_daam_method_on_mmdit_matches_a_direct_joint_trace(name, folders):
    from harness.attention.joint import JointAttentionTracer, text_axis
    from harness.methods.daam import DAAM
    from harness.schemas.daam import DAAMConfig

    model = _model(name, folders[name])
    cfg = OmegaConf.structured(DAAMConfig)  # the UNet defaults (down/up blocks) mean every joint layer here
    records = [PromptRecord("a", "a red cat on a chair", 0, {"nouns": ["cat", "chair"]})]
    sample = DAAM(cfg, model, SETTINGS).run_batch(records, [3])[0]
    assert set(sample.arrays) == {"heatmap:cat", "heatmap:chair"} and sample.arrays["heatmap:cat"].shape == (8, 8)
    axis = text_axis(model.pipeline, ["a red cat on a chair"])
    generator = torch.Generator().manual_seed(DAAM(cfg, model, SETTINGS).generators([3])[0].initial_seed())
    with JointAttentionTracer(model.pipeline, columns=axis.columns) as tracer:
        model.pipeline("a red cat on a chair", num_inference_steps=2, guidance_scale=3.0, height=64, width=64,
                       generator=generator, output_type="np")
    columns = axis.word_positions("a red cat on a chair", "cat")
    assert len(columns) == (2 if name == "sd3_medium" else 1)  # SD3: CLIP and T5 positions; Flux: T5
    expected = tracer.token_maps()[0, columns].mean(dim=0).numpy()
    np.testing.assert_allclose(sample.arrays["heatmap:cat"], expected, rtol=1e-5, atol=1e-8)
    assert len(sample.meta["layers"]) == len(tracer.layers_used())


def test_concept_attention_method_generated_and_given_image(folders, tmp_path):
    from PIL import Image

    from harness.methods.concept_attention import ConceptAttention
    from harness.schemas.concept_attention import ConceptAttentionConfig

    model = _model("flux_schnell", folders["flux_schnell"])
    cfg = OmegaConf.structured(ConceptAttentionConfig)
    records = [PromptRecord("a", "a red cat on a chair", 0, {"nouns": ["cat", "chair"]})]
    sample = ConceptAttention(cfg, model, SETTINGS).run_batch(records, [3])[0]
    assert sample.meta["concepts"] == ["cat", "chair", "background"]
    stacked = np.stack([sample.arrays[f"heatmap_cross:{c}"] for c in sample.meta["concepts"]])
    assert stacked.shape == (3, 8, 8) and np.all(stacked >= 0)
    Image.fromarray(sample.image).save(tmp_path / "x.png")
    cfg.source, cfg.concepts = "image", ["cat", "sky"]
    records = [PromptRecord("b", "a red cat", 0, {"image": str(tmp_path / "x.png")})]
    given = ConceptAttention(cfg, model, SETTINGS).run_batch(records, [3])[0]
    assert set(given.arrays) == {"heatmap:cat", "heatmap:sky", "heatmap_cross:cat", "heatmap_cross:sky"}
    assert given.meta["unet_calls"] == 1


def test_concept_attention_refuses_a_unet_model():
    from harness.methods.concept_attention import ConceptAttention
    from harness.models.loader import load_tiny_random
    from harness.schemas.concept_attention import ConceptAttentionConfig

    cfg = OmegaConf.structured(ModelConfig)
    cfg.name, cfg.device = "tiny_random", "cpu"
    with pytest.raises(ConfigError, match="joint-attention"):
        ConceptAttention(OmegaConf.structured(ConceptAttentionConfig), load_tiny_random(cfg), SETTINGS)


def test_cli_daam_and_concept_attention_on_flux(folders, tmp_path, capsys):
    from harness.daam_cli import main

    base = ["a red cat on a chair", "model=flux_schnell", f"model.path={folders['flux_schnell']}", "steps=2",
            "height=64", "width=64", "guidance_scale=0", "model.device=cpu"]
    assert main([*base, "words=cat,chair", f"out={tmp_path / 'daam'}"]) == 0
    maps = np.load(tmp_path / "daam" / "heatmaps.npz")
    assert sorted(maps) == ["cat", "chair"] and maps["cat"].shape == (8, 8)
    meta = json.loads((tmp_path / "daam" / "meta.json").read_text())
    assert any(layer.startswith("single_transformer_blocks.") for layer in meta["layers"])
    assert main([*base, "method=concept_attention", "concepts=cat,background", f"out={tmp_path / 'ca'}"]) == 0
    concept = np.load(tmp_path / "ca" / "heatmaps.npz")
    cross = np.load(tmp_path / "ca" / "heatmaps_cross.npz")
    np.testing.assert_allclose(cross["cat"] + cross["background"], np.ones((8, 8)), atol=1e-5)  # no clamp bite at 8x8
    assert sorted(concept) == ["background", "cat"]
    # the same seed gives the same image with and without the concept stream
    assert (np.asarray(_png(tmp_path / "daam" / "image.png")) == np.asarray(_png(tmp_path / "ca" / "image.png"))).all()
    assert main([*base, "method=concept_attention", f"out={tmp_path / 'x'}"]) == 2
    assert "give method.concepts=" in capsys.readouterr().err


def _png(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def test_a_daam_experiment_runs_on_an_mmdit_by_changing_model(folders, tmp_path):
    from hydra import compose, initialize_config_dir

    from harness import REPO_ROOT
    from harness.config import register_configs
    from harness.run import run_experiment

    register_configs()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=daam_smoke", f"store.root={tmp_path / 'store'}", "model=sd3_medium",
                                           f"model.path={folders['sd3_medium']}", "model.device=cpu",
                                           "generation.height=64", "generation.width=64"])
    assert cfg.model.name == "sd3_medium" and cfg.method.name == "daam"
    outcome = run_experiment(cfg, tmp_path / "run")
    assert outcome.generated == 2
    from harness.store.samples import SampleStore

    store = SampleStore(tmp_path / "store")
    for meta_path in sorted((tmp_path / "store").glob("*/*/meta.json")):
        sample = store.get(meta_path.parent.name)
        assert all(layer.startswith("transformer_blocks.") for layer in sample.meta["layers"])
        assert all(f"heatmap:{w}" in sample.arrays for w in sample.meta["words"])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["daam_pos_toy", "entanglement_adjective_toy"])
def test_daam_analysis_experiments_run_on_an_mmdit_by_changing_model(compose, experiment, tmp_path):
    """The DAAM analyses (daam_words, daam_swap methods and their metrics) on the narrowed SD3 stand-in."""
    from harness.run import run_experiment

    base = compose([f"experiment={experiment}"])
    cfg = compose([f"experiment={experiment}", *base.smoke_overrides, "smoke=true", "model=tiny_sd3",
                   "generation.height=64", "generation.width=64", f"store.root={tmp_path / 'store'}"])
    assert cfg.model.name == "tiny_sd3"
    outcome = run_experiment(cfg, tmp_path / "run")
    aggregate = outcome.rows[outcome.rows["level"] == "aggregate"]
    quality = aggregate[aggregate["kind"].fillna("quality") == "quality"]
    assert outcome.generated >= 1 and quality["value"].notna().any()
