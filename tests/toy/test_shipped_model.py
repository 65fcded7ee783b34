"""The shipped toy pipeline loads as Stable Diffusion does, and its parts fit together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.toy.tokens import CONTEXT_LENGTH, encode
from harness.toy.world import VOCABULARY

WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "toy"


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
