"""The real models' path, proven on faithful stand-ins (harness.models.standins) without their weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import REPO_ROOT
from harness.models.loader import KNOWN_MODELS
from harness.models.standins import STANDINS, build_standin, save_standin, unet_config
from harness.run import run_experiment

NAMES = ["sd15", "sd2_base", "sd21_base", "sdxl_base"]
#: published full-size facts, written independently of the stand-in tables (per-head width and
#: heads per attention block, text width; SDXL: 2 text encoders and a 2816-wide added embedding)
FULL_SIZE = {
    "sd15": {"head_width": {40, 80, 160}, "heads": {8}, "cross": 768, "linear": False},
    "sd2_base": {"head_width": {64}, "heads": {5, 10, 20}, "cross": 1024, "linear": True},
    "sd21_base": {"head_width": {64}, "heads": {5, 10, 20}, "cross": 1024, "linear": True},
    "sdxl_base": {"head_width": {64}, "heads": {10, 20}, "cross": 2048, "linear": True},  # no attention at 128x128
}


@pytest.fixture(scope="module")
def standin_folders(tmp_path_factory):
    """Each stand-in written once as a save_pretrained folder (as real weights are provided)."""
    root = tmp_path_factory.mktemp("standins")
    return {name: save_standin(name, root / name) for name in NAMES}


def attention_layout(unet) -> list[tuple[str, int, bool]]:
    """(module name, heads, is cross-attention) of every attention layer."""
    from diffusers.models.attention_processor import Attention

    return [(name, module.heads, module.is_cross_attention) for name, module in unet.named_modules()
            if isinstance(module, Attention)]


def projections(unet) -> set[str]:
    return {type(module.proj_in).__name__ for name, module in unet.named_modules() if hasattr(module, "proj_in")}


@pytest.mark.parametrize("name", NAMES)
def test_standin_has_the_real_models_layout(name):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):  # the full-size model's structure, without allocating its weights
        full = UNet2DConditionModel(**unet_config(name, scale=False))
    pipeline = build_standin(name)
    small = pipeline.unet
    expected = FULL_SIZE[name]
    # Same attention layers, in the same blocks, with the same number of heads each.
    assert attention_layout(small) == attention_layout(full)
    assert {m.heads for n, m in full.named_modules() if n.endswith("attn2")} == expected["heads"]
    widths = {m.inner_dim // m.heads for n, m in full.named_modules() if n.endswith("attn2")}
    assert widths == expected["head_width"]
    assert full.config.cross_attention_dim == expected["cross"]
    assert projections(small) == projections(full) == {"Linear" if expected["linear"] else "Conv2d"}
    assert [type(b).__name__ for b in small.down_blocks] == [type(b).__name__ for b in full.down_blocks]
    assert [type(b).__name__ for b in small.up_blocks] == [type(b).__name__ for b in full.up_blocks]
    # Pipeline, scheduler, text encoders and VAE as the real model's.
    assert type(pipeline).__name__ == KNOWN_MODELS[name].pipeline_class
    assert type(pipeline.scheduler).__name__ == ("EulerDiscreteScheduler" if name == "sdxl_base" else "PNDMScheduler")
    assert pipeline.vae_scale_factor == 8
    assert type(pipeline.tokenizer).__name__ == "CLIPTokenizer"
    if name == "sdxl_base":
        assert type(pipeline.text_encoder).__name__ == "CLIPTextModel"
        assert type(pipeline.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
        assert full.add_embedding.linear_1.in_features == 1280 + 6 * 256
        depths = [len(a.transformer_blocks) for b in full.down_blocks for a in getattr(b, "attentions", [])]
        assert depths == [2, 2, 10, 10]
        hidden = pipeline.text_encoder.config.hidden_size + pipeline.text_encoder_2.config.hidden_size
        assert small.config.cross_attention_dim == hidden
        assert small.add_embedding.linear_1.in_features == pipeline.text_encoder_2.config.projection_dim + 6 * 256
    else:
        assert type(pipeline.text_encoder).__name__ == "CLIPTextModel"
        assert small.config.cross_attention_dim == pipeline.text_encoder.config.hidden_size
        assert pipeline.text_encoder.config.num_hidden_layers == (12 if name == "sd15" else 23)
        assert (pipeline.tokenizer.pad_token == "!") == (name != "sd15")


def test_loader_reads_a_standin_folder_as_it_reads_real_weights(compose, standin_folders):
    from harness.models.loader import load_model

    cfg = compose(["model=sd15", f"model.path={standin_folders['sd15']}", "model.device=cpu"])
    model = load_model(cfg.model)
    assert type(model.pipeline).__name__ == "StableDiffusionPipeline"
    assert (model.default_height, model.default_width) == (512, 512)
    assert model.fingerprint.startswith("sd15-sha256:")

    def image(pipeline):
        return pipeline("a red cat", num_inference_steps=2, height=64, width=64, output_type="np",
                        generator=torch.Generator().manual_seed(3)).images[0]

    built = build_standin("sd15")
    for component in ("unet", "vae", "text_encoder"):  # the folder holds exactly the built weights
        loaded_state, built_state = getattr(model.pipeline, component).state_dict(), getattr(built, component).state_dict()
        assert loaded_state.keys() == built_state.keys()
        assert all(torch.equal(loaded_state[k], built_state[k]) for k in built_state)
    # Same images up to float rounding (a loaded text encoder may pick another attention kernel).
    np.testing.assert_allclose(image(model.pipeline), image(built), atol=1e-5)


def test_hub_cache_entry_is_loaded_offline_and_named_by_its_commit(compose, standin_folders, tmp_path, monkeypatch):
    from harness.models.loader import load_model

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    shutil.copytree(standin_folders["sd15"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    index = tmp_path / "index.jsonl"
    monkeypatch.setenv("HARNESS_HASH_INDEX", str(index))
    model = load_model(compose(["model=sd15", "model.device=cpu"]).model)
    assert model.fingerprint == f"sd15-hf-commit:{commit}"
    assert not index.exists(), "a hub snapshot is identified by its commit, not hashed"
    # Another snapshot (a new commit of the repo) is another model.
    other = "f" * 40
    shutil.copytree(repo / "snapshots" / commit, repo / "snapshots" / other)
    (repo / "refs" / "main").write_text(other)
    assert load_model(compose(["model=sd15", "model.device=cpu"]).model).fingerprint == f"sd15-hf-commit:{other}"


def standin_run(compose, experiment: str, name: str, folder: Path, tmp_path: Path, *extra: str):
    """``experiment`` through ``model=<name>`` on the stand-in folder: the experiment's own smoke
    overrides for data and metrics, but the real model's name, loader, scheduler and pipeline."""
    base = compose([f"experiment={experiment}"])
    kept = [o for o in base.smoke_overrides if not o.startswith(("model=", "model.", "generation.height", "generation.width"))]
    cfg = compose([f"experiment={experiment}", *kept, "smoke=true", f"model={name}", f"model.path={folder}",
                   "model.device=cpu", "generation.height=64", "generation.width=64", f"store.root={tmp_path / 'store'}",
                   *extra])
    outcome = run_experiment(cfg, tmp_path / "run")
    assert outcome.generated >= 1 and not outcome.rows.empty
    assert set(outcome.rows["model"]) == {name}
    return cfg, outcome


@pytest.mark.slow
def test_daam_coco_on_the_sd2_standin(compose, standin_folders, tmp_path):
    cfg, outcome = standin_run(compose, "daam_coco", "sd2_base", standin_folders["sd2_base"], tmp_path)
    assert cfg.model.scheduler == "dpm_solver"  # the paper's sampler, as in the real run
    rows = outcome.rows[outcome.rows["metric"] == "miou"]
    summary = rows[rows["level"] == "aggregate"].set_index("method")["value"]
    pairs = rows[rows["level"] == "sample"]
    # mIoU is the mean over (image, noun) pairs of the per-pair rows, for the method and the baseline
    for method in ("daam", "whole_image"):
        assert summary[method] == pytest.approx(pairs[pairs["method"] == method]["value"].mean(), abs=1e-12)
    # known answer: the whole image as the prediction has IoU |G| / (H W) with each noun's mask G
    from harness.data.ground_truth import RecordGroundTruth, lookup, noun_lemmas
    from harness.run import build_prompt_set

    truth = RecordGroundTruth()
    records = {record.id: record for record in build_prompt_set(cfg).records}
    whole = pairs[pairs["method"] == "whole_image"]
    assert len(whole) >= 1
    for _, row in whole.iterrows():
        record = records[row["sample_id"]]
        mask = lookup(truth.masks(record), row["item"], noun_lemmas(record).get(row["item"]))
        assert row["value"] == pytest.approx(mask.mean(), abs=1e-12)


@pytest.mark.slow
def test_pag_coco_on_the_sd15_standin(compose, standin_folders, tmp_path):
    cfg, outcome = standin_run(compose, "pag_coco", "sd15", standin_folders["sd15"], tmp_path)
    assert cfg.method.name == "cfg_pag"
    fid = outcome.rows[(outcome.rows["level"] == "aggregate") & (outcome.rows["metric"] == "fid")]["value"]
    assert len(fid) == 1
    # the streamed figure agrees with the Frechet distance computed at once, by hand, on the same
    # images: the run's samples read back from the store and the configured reference renders
    from harness.metrics.features import PixelFeatures
    from harness.store.samples import SampleStore
    from harness.toy.data import render_pool

    keys = json.loads((outcome.run_dir / "sample_keys.json").read_text())["cfg_pag"]
    store = SampleStore(Path(cfg.store.root))
    fake_images = [store.get(key).image for key in keys.values()]
    options = dict(cfg.metric.fid.real_source_options)
    real_images = render_pool(options["split"], int(options["n"]), workers=1).images
    extractor = PixelFeatures(size=int(cfg.metric.fid.get("pixel_size", 8)))
    from harness.metrics.features import images_to_tensor

    fake = extractor(images_to_tensor(fake_images)).double().numpy()
    real = extractor(images_to_tensor(list(real_images))).double().numpy()
    mean_gap = float(((real.mean(0) - fake.mean(0)) ** 2).sum())
    cov_real, cov_fake = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    cross = np.linalg.eigvals(cov_real @ cov_fake)  # tr sqrt(AB) = sum of sqrt of AB's eigenvalues
    expected = mean_gap + np.trace(cov_real) + np.trace(cov_fake) - 2 * np.sqrt(np.clip(cross.real, 0, None)).sum()
    assert fid.iloc[0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_daam_and_pag_on_the_sdxl_standin(compose, standin_folders, tmp_path):
    _, daam = standin_run(compose, "daam_smoke", "sdxl_base", standin_folders["sdxl_base"], tmp_path / "daam")
    from harness.store.samples import SampleStore

    store = SampleStore(tmp_path / "daam" / "store")
    samples = [store.get(p.parent.name) for p in store.root.glob("??/*/meta.json")]
    assert samples and all(s.meta["words"] for s in samples)
    for sample in samples:  # maps at the latent grid of a 64x64 image (8x8), one per word
        assert all(sample.arrays[f"heatmap:{w}"].shape == (8, 8) for w in sample.meta["words"])
    _, pag = standin_run(compose, "pag_coco", "sdxl_base", standin_folders["sdxl_base"], tmp_path / "pag")
    assert pag.generated >= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_harness_daam_on_each_standin(name, standin_folders, tmp_path):
    from harness.daam_cli import main

    out = tmp_path / "out"
    status = main(["a red cat near a tree", f"model={name}", f"model.path={standin_folders[name]}", "seed=1",
                   "steps=2", "height=64", "width=64", "words=cat,tree", f"out={out}", "model.device=cpu"])
    assert status == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["scheduler"] == type(build_standin(name).scheduler).__name__
    with np.load(out / "heatmaps.npz") as npz:
        assert sorted(npz.files) == ["cat", "tree"] and npz["cat"].shape == (8, 8)
        assert np.isfinite(npz["cat"]).all() and npz["cat"].max() > 0
    assert np.asarray(Image.open(out / "image.png")).shape == (64, 64, 3)
    # the maps came from the model's cross-attention layers
    assert meta["layers"] and all(name.endswith("attn2") for name in meta["layers"]), meta["layers"]


EXPERIMENT_DIR = REPO_ROOT / "conf" / "experiment"
SPECIFIC = {"daam_coco", "pag_coco"}  # tested above with their own assertions


def experiments_naming_a_real_model(compose) -> dict[str, str]:
    found = {}
    for path in sorted(EXPERIMENT_DIR.glob("*.yaml")):
        name = compose([f"experiment={path.stem}"]).model.name
        if name in STANDINS:
            found[path.stem] = name
    return found


@pytest.mark.slow
def test_every_experiment_naming_a_real_model_runs_on_its_standin(compose, standin_folders, tmp_path):
    found = experiments_naming_a_real_model(compose)
    assert SPECIFIC <= set(found), found
    for experiment, name in found.items():
        if experiment in SPECIFIC:
            continue
        _, outcome = standin_run(compose, experiment, name, standin_folders[name], tmp_path / experiment)
        summary = outcome.rows[outcome.rows["level"] == "aggregate"]
        assert summary["value"].notna().any(), experiment
