"""The shipped toy pipeline loads as Stable Diffusion does, and its parts fit together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import REPO_ROOT
from harness.toy.tokens import CONTEXT_LENGTH, encode
from harness.toy.world import VOCABULARY

WEIGHTS = REPO_ROOT / "weights" / "toy"


@pytest.fixture(scope="module")
def pipeline():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(WEIGHTS, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_components_have_the_documented_shape(pipeline):
    assert pipeline.unet.config.sample_size == 16 and pipeline.unet.config.cross_attention_dim == 128
    assert pipeline.tokenizer.model_max_length == CONTEXT_LENGTH
    assert pipeline.vae_scale_factor == 2
    # every toy word is a single token of the shipped tokenizer
    for word in VOCABULARY:
        assert len(pipeline.tokenizer(word, add_special_tokens=False).input_ids) == 1
    assert sum(p.numel() for p in pipeline.unet.parameters()) < 5e6


def test_generation_is_seeded_and_pag_runs(pipeline):
    from diffusers import StableDiffusionPAGPipeline

    def run():
        return pipeline("a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                        output_type="np").images

    first, second = run(), run()
    assert first.shape == (1, 32, 32, 3) and np.array_equal(first, second)
    pag = StableDiffusionPAGPipeline.from_pipe(pipeline, pag_applied_layers=["mid"])
    image = pag("a red circle", num_inference_steps=3, pag_scale=1.0, output_type="np").images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_text_encoder_separates_nouns(pipeline):
    """The frozen toy CLIP was trained so that noun states identify their shape: the states of
    "circle" in two captions agree more than those of "circle" and "star" after the same words."""
    ids = pipeline.tokenizer(["a red circle", "a small red circle", "a red star"], padding="max_length",
                             max_length=CONTEXT_LENGTH, return_tensors="pt").input_ids
    with torch.no_grad():
        states = pipeline.text_encoder(ids).last_hidden_state
    circle, small_circle, star = states[0, 3], states[1, 4], states[2, 3]
    cos = torch.nn.functional.cosine_similarity
    assert cos(circle, small_circle, dim=0) > cos(circle, star, dim=0)
    assert list(encode("a red circle")[:5]) != list(ids[0, :5])  # shipped ids differ from training ids


def test_generated_images_follow_the_prompt(pipeline):
    """Semantic check of the shipped weights: the toy evaluator finds a red circle in the images
    generated for "a red circle" far more often than in those generated for "a blue square"."""
    from harness.toy.evaluator import load_evaluator, present_pairs

    evaluator = load_evaluator(WEIGHTS / "evaluator")
    torch.manual_seed(0)
    found = {}
    for prompt in ("a red circle", "a blue square"):
        images = pipeline([prompt] * 8, num_inference_steps=20, guidance_scale=5.0,
                          generator=torch.Generator().manual_seed(1), output_type="np").images
        pairs = present_pairs(evaluator, (images * 255).round().astype(np.uint8))
        found[prompt] = [("red", "circle") in p for p in pairs], [("blue", "square") in p for p in pairs]
    red_for_red, blue_for_red = (sum(x) for x in found["a red circle"])
    red_for_blue, blue_for_blue = (sum(x) for x in found["a blue square"])
    assert red_for_red >= 6 and red_for_blue <= 1
    assert blue_for_blue >= 6 and blue_for_red <= 1


def _model_cfg(path):
    from omegaconf import OmegaConf

    return OmegaConf.create({"name": "toy", "path": str(path), "model_id": None, "device": "cpu",
                             "dtype": "float32", "scheduler": None, "height": None, "width": None})


def test_truncated_weights_name_the_file_and_the_retrain_command(tmp_path):
    import shutil

    from harness.errors import MissingWeightsError
    from harness.models.loader import load_pretrained

    folder = tmp_path / "toy"
    shutil.copytree(WEIGHTS, folder, ignore=shutil.ignore_patterns("evaluator", "segmenter", "*.png"))
    unet_file = folder / "unet" / "diffusion_pytorch_model.safetensors"
    unet_file.write_bytes(unet_file.read_bytes()[:1000])
    with pytest.raises(MissingWeightsError) as caught:
        load_pretrained(_model_cfg(folder))
    assert str(unet_file) in str(caught.value) and "make toy-model" in str(caught.value)


def test_missing_weights_name_the_folder(tmp_path):
    from harness.errors import MissingWeightsError
    from harness.models.loader import load_pretrained

    with pytest.raises(MissingWeightsError) as caught:
        load_pretrained(_model_cfg(tmp_path / "absent"))
    assert str(tmp_path / "absent") in str(caught.value)
