"""method=daam_swap on tiny_random: variants share the prompt's seed, so the same prompt gives the same image."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from harness.config import ModelConfig
from harness.data.prompts import PromptRecord
from harness.errors import DataError
from harness.methods.base import GenerationSettings
from harness.methods.daam_analyses import DAAMSwap
from harness.models.loader import load_tiny_random
from harness.schemas.daam import DAAMConfig

SETTINGS = GenerationSettings(steps=2, guidance_scale=7.5, height=32, width=32, negative_prompt="", batch_size=2)


@pytest.fixture(scope="module")
def method():
    model_cfg = OmegaConf.structured(ModelConfig)
    model_cfg.name, model_cfg.device = "tiny_random", "cpu"
    cfg = OmegaConf.structured(DAAMConfig)
    cfg.name, cfg.words_source = "daam_swap", "all"
    return DAAMSwap(cfg, load_tiny_random(model_cfg), SETTINGS)


def record(rid, prompt, swapped, seed):
    return PromptRecord(rid, prompt, seed, {
        "nouns": ["car"], "swap": {"word": prompt.split()[1], "to": swapped.split()[1], "noun": "car", "object": 0},
        "variants": {"adjective": swapped, "same": prompt}})


def test_same_prompt_variant_is_identical_and_swap_differs(method):
    records = [record("r1", "a blue car on the street", "a red car on the street", 3),
               record("r2", "a green car near a tree", "a yellow car near a tree", 4)]
    samples = method.run_batch(records, [11, 12])
    for sample in samples:
        np.testing.assert_array_equal(sample.arrays["image:same"], sample.image)
        assert not np.array_equal(sample.arrays["image:adjective"], sample.image)
        assert "heatmap_adjective:car" in sample.arrays and "heatmap:blue" in samples[0].arrays
        assert sample.meta["variants"]["same"] in (records[0].prompt, records[1].prompt)
    # the spec carries the variants: a different swap is a different sample
    other = record("r1", "a blue car on the street", "a black car on the street", 3)
    assert method.sample_spec(records[0], 11) != method.sample_spec(other, 11)


def test_a_record_without_variants_is_refused(method):
    with pytest.raises(DataError):
        method.run_batch([PromptRecord("x", "a car", 0, {"nouns": ["car"]})], [0])


def test_daam_words_maps_like_daam_and_draws_few_overlays(method, tmp_path):
    from harness.methods.daam import DAAM
    from harness.methods.daam_analyses import OVERLAYS, DAAMWords

    cfg = OmegaConf.structured(DAAMConfig)
    cfg.name, cfg.words_source = "daam_words", "all"
    words = DAAMWords(cfg, method.model, SETTINGS)
    plain_cfg = OmegaConf.structured(DAAMConfig)
    plain_cfg.words_source = "all"
    plain = DAAM(plain_cfg, method.model, SETTINGS)
    probe = PromptRecord("p", "a red car", 0)
    mine, theirs = words.run_batch([probe], [5])[0], plain.run_batch([probe], [5])[0]
    assert set(mine.arrays) == set(theirs.arrays) == {"heatmap:a", "heatmap:red", "heatmap:car"}
    for key in mine.arrays:
        np.testing.assert_array_equal(mine.arrays[key], theirs.arrays[key])
    records = [PromptRecord(f"r{k}", "a red car", k) for k in range(OVERLAYS + 2)]
    samples = dict(zip([r.id for r in records], words.run_batch(records, list(range(len(records))))))
    written = words.save_figures(tmp_path, records, samples)
    assert len(written) == OVERLAYS
