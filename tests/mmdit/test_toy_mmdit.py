"""The toy MMDiT: an SD3 pipeline around the toy components; training checkpoints and resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from harness import REPO_ROOT
from harness.errors import DataError, MissingWeightsError

COMPONENTS = REPO_ROOT / "weights" / "toy"


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    from harness.toy.data import render_pool

    pool = render_pool("train", 8, workers=1)
    path = tmp_path_factory.mktemp("pool") / "pool.npz"
    np.savez(path, images=pool.images, captions=pool.captions.astype(str))
    return path


def test_toy_mmdit_is_an_sd3_pipeline_on_the_toy_components(tmp_path):
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTextModel

    from harness.attention.joint import JointAttentionTracer, text_axis
    from harness.toy.mmdit import build_toy_mmdit, save_toy_mmdit

    pipeline = build_toy_mmdit(COMPONENTS)
    ids = pipeline.tokenizer(["a red circle"], padding="max_length", max_length=32, return_tensors="pt").input_ids
    toy = CLIPTextModel.from_pretrained(COMPONENTS / "text_encoder")
    assert torch.equal(toy(ids).pooler_output, pipeline.text_encoder(ids).text_embeds)  # identity projection
    save_toy_mmdit(pipeline, tmp_path / "toy_mmdit")
    from omegaconf import OmegaConf

    from harness.config import ModelConfig
    from harness.models.loader import load_model

    cfg = OmegaConf.structured(ModelConfig)
    cfg.name, cfg.path, cfg.device, cfg.dtype = "toy_mmdit", str(tmp_path / "toy_mmdit"), "cpu", "float32"
    model = load_model(cfg)
    loaded = model.pipeline
    assert isinstance(loaded, StableDiffusion3Pipeline) and loaded.text_encoder_3 is None
    assert (model.default_height, model.default_width) == (32, 32)
    axis = text_axis(loaded, ["a red circle"])  # CLIP positions only: no T5 here
    with JointAttentionTracer(loaded, columns=axis.columns) as tracer:
        image = loaded("a red circle", num_inference_steps=2, height=32, width=32, output_type="np",
                       generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 32, 32, 3) and tracer.token_maps().shape == (1, len(axis.columns), 16, 16)
    with pytest.raises(MissingWeightsError, match="lacks"):
        build_toy_mmdit(tmp_path / "nowhere")


def test_training_checkpoints_and_resumes_the_same_run(pool_file, tmp_path):
    from harness.toy.train_mmdit import main

    common = ["--components", str(COMPONENTS), "--pool", str(pool_file), "--batch-size", "2", "--threads", "1",
              "--checkpoint-minutes", "0", "--warmup-steps", "1", "--out-root", str(tmp_path)]
    assert main([*common, "--run-name", "straight", "--steps", "3"]) == 0
    assert main([*common, "--run-name", "split", "--steps", "2"]) == 0
    assert main([*common, "--resume", str(tmp_path / "split"), "--steps", "3", "--export", str(tmp_path / "export")]) == 0
    straight = load_file(tmp_path / "straight" / "checkpoint" / "ema_transformer.safetensors")
    resumed = load_file(tmp_path / "split" / "checkpoint" / "ema_transformer.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(straight[name], resumed[name], rtol=0, atol=0)
    state = json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and state["pool"] == str(pool_file)
    assert (tmp_path / "export" / "model_index.json").is_file()
    exported = load_file(tmp_path / "export" / "transformer" / "diffusion_pytorch_model.safetensors")
    torch.testing.assert_close(exported["proj_out.weight"], resumed["proj_out.weight"], rtol=0, atol=0)  # EMA exported


def test_bad_pool_is_refused(tmp_path):
    from harness.toy.train_mmdit import load_pool

    with pytest.raises(DataError, match="no such file"):
        load_pool(str(tmp_path / "missing.npz"), tmp_path)
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="must hold"):
        load_pool(str(tmp_path / "bad.npz"), tmp_path)
    with pytest.raises(DataError, match="render:<split>:<n>"):
        load_pool("render:train", tmp_path)
