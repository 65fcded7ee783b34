"""CLIPSeg baseline through its real loading path: a small random CLIPSeg saved to a folder."""

from __future__ import annotations

import numpy as np
import pytest

from harness.baselines.clipseg import ClipSeg
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, MissingWeightsError
from harness.store.samples import Sample


@pytest.fixture(scope="module")
def clipseg_folder(tmp_path_factory):
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    from harness.models.clip_tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(["a", "dog", "car", "tree", "photo", "of"], model_max_length=16)
    config = CLIPSegConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16, extract_layers=(1,), reduce_dim=16, decoder_intermediate_size=32,
    )
    torch.manual_seed(0)
    network = CLIPSegForImageSegmentation(config).eval()
    image_processor = ViTImageProcessor(size={"height": 32, "width": 32})
    folder = tmp_path_factory.mktemp("clipseg")
    network.save_pretrained(folder)
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def scene():
    image = np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8)  # non-square
    record = PromptRecord("c1", "a dog near a car", 0, {"nouns": ["dog", "car"]})
    return record, Sample(image=image, meta={"words": ["dog", "car", "tree"]})


def test_clipseg_from_a_local_folder_maps_every_word(clipseg_folder):
    record, sample = scene()
    binary = ClipSeg(path=str(clipseg_folder), batch_size=2).predict(record, sample)
    assert binary.meta["words"] == ["dog", "car", "tree"]  # the method's words, in order
    for word in ("dog", "car", "tree"):
        heat = binary.arrays[f"heatmap:{word}"]
        assert heat.shape == (32, 32) and heat.dtype == np.float32  # CLIPSeg's output grid
        assert set(np.unique(heat)) <= {0.0, 1.0}
    soft = ClipSeg(path=str(clipseg_folder), binarize=None).predict(record, sample)
    probabilities = soft.arrays["heatmap:dog"]
    assert 0.0 < probabilities.min() and probabilities.max() < 1.0
    # the binary map is the probability map thresholded at 0.5 (batching does not change it)
    np.testing.assert_allclose(binary.arrays["heatmap:dog"], (probabilities > 0.5).astype(np.float32))


def test_clipseg_missing_weights_and_bad_options(tmp_path):
    with pytest.raises(MissingWeightsError) as caught:
        ClipSeg(path=str(tmp_path / "nothing"))
    assert str(tmp_path / "nothing") in str(caught.value) and "save_pretrained" in str(caught.value)
    with pytest.raises(MissingWeightsError, match="CIDAS/clipseg-rd64-refined"):
        ClipSeg()  # not in the offline cache here
    with pytest.raises(ConfigError, match="prompt_template"):
        ClipSeg(path=str(tmp_path), prompt_template="a photo")
