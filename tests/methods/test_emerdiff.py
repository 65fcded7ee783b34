"""EmerDiff mechanics on tiny_random: lambda = 0 is a no-op, batching changes nothing, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.clustering import kmeans_labels
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.methods.emerdiff import lowres_masks, normalize_differences


@pytest.fixture(scope="module")
def reference(request):
    """The batched EmerDiff sample of the first synthetic image (default chunking)."""
    make_method = request.getfixturevalue("make_method")
    synthetic_set = request.getfixturevalue("synthetic_set")
    record = synthetic_set.records[0]
    return record, make_method().segment(record, _generator(7), 7)


def _generator(seed):
    import torch

    return torch.Generator().manual_seed(seed)


def test_sample_arrays_have_the_documented_shapes(reference):
    _, sample = reference
    labels, clusters = sample.arrays["labels"], sample.arrays["lowres_clusters"]
    assert labels.shape == (32, 32) and labels.dtype == np.int32
    assert clusters.shape == (8, 8) and clusters.dtype == np.int32  # tiny UNet: lowest up-block grid is 8x8
    assert set(np.unique(clusters)) == {0, 1, 2}
    assert sample.arrays["difference_maps"].shape == (3, 32, 32) and sample.arrays["difference_maps"].dtype == np.float16
    assert sample.arrays["lowres_features"].shape[0] == 64
    # labels are the argmax of the (filtered) difference maps; float16 storage keeps the order
    # (rounding is monotone) but may create ties, so compare values, not indices
    maps = sample.arrays["difference_maps"]
    assert np.array_equal(np.take_along_axis(maps, labels[None].astype(np.int64), 0)[0], maps.max(axis=0))
    # the modulation is visible: a real modulation changes the image
    assert float(sample.arrays["difference_maps"].astype(np.float32).max()) > 1e-2
    meta = sample.meta
    assert meta["modulation_timestep"] == 251 and meta["rerun_steps"] == 2
    assert meta["feature_layer"] == "up_blocks.0.attentions.0.transformer_blocks.0.attn2"
    assert meta["modulation_layer"] == "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
    # 4 inversion calls + 2K = 6 trajectories x 2 rerun steps; batched: 2 invocations after the inversion
    assert meta["unet_calls"] == 4 + 6 * 2 and meta["unet_invocations"] == 4 + 2
    assert any("snapped" in note for note in meta["notes"])


def test_lambda_zero_changes_nothing(make_method, synthetic_set):
    sample = make_method(modulation_strength=0.0).segment(synthetic_set.records[0], _generator(7), 7)
    assert float(np.abs(sample.arrays["difference_maps"].astype(np.float32)).max()) < 1e-4


def test_lambda_zero_changes_nothing_in_the_values_variant_either(make_method, synthetic_set):
    method = make_method(modulation_strength=0.0, modulation_target="values", attention_injection=False)
    sample = method.segment(synthetic_set.records[0], _generator(7), 7)
    assert float(np.abs(sample.arrays["difference_maps"].astype(np.float32)).max()) < 1e-4


def test_one_at_a_time_and_odd_chunks_give_the_same_maps(make_method, reference):
    record, batched = reference
    expected = batched.arrays["difference_maps"].astype(np.float32)
    for options in ({"one_at_a_time": True}, {"chunk_size": 4}):
        sample = make_method(**options).segment(record, _generator(7), 7)
        maps = sample.arrays["difference_maps"].astype(np.float32)
        np.testing.assert_allclose(maps, expected, rtol=0, atol=2e-3 * float(expected.max()))
        assert np.array_equal(sample.arrays["lowres_clusters"], batched.arrays["lowres_clusters"])
        if options.get("one_at_a_time"):
            assert sample.meta["unet_invocations"] == 4 + 6 * 2


def test_batching_options_do_not_change_the_content_address(make_method, synthetic_set):
    record = synthetic_set.records[0]
    assert make_method(chunk_size=2).sample_spec(record, 1) == make_method(one_at_a_time=True).sample_spec(record, 1)
    assert make_method().sample_spec(record, 1) != make_method(modulation_strength=5.0).sample_spec(record, 1)


def test_difference_normalizations_on_a_hand_computed_case():
    import torch

    # mask 0 covers 3 of 4 positions, mask 1 covers 1; pixel 0 changes 6 vs 3, pixel 1 changes 3 vs 2
    maps = np.array([[[6.0, 3.0]], [[3.0, 2.0]]])
    masks = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert np.array_equal(np.argmax(normalize_differences(maps, masks, "none"), axis=0), [[0, 0]])
    # per modulated position: [2, 1] vs [3, 2] -> mask 1 wins both pixels
    np.testing.assert_allclose(normalize_differences(maps, masks, "area"), [[[2.0, 1.0]], [[3.0, 2.0]]])
    # relative to each map's peak: [1, 0.5] vs [1, 2/3] -> a tie at pixel 0 (first wins), mask 1 at pixel 1
    np.testing.assert_allclose(normalize_differences(maps, masks, "max"), [[[1.0, 0.5]], [[1.0, 2 / 3]]])
    assert np.array_equal(np.argmax(normalize_differences(maps, masks, "max"), axis=0), [[0, 1]])
    with pytest.raises(ConfigError, match="difference_normalization"):
        normalize_differences(maps, masks, "softmax")


def test_kmeans_is_deterministic_given_the_seed():
    features = np.random.default_rng(0).normal(size=(64, 16))
    first = kmeans_labels(features, 5, seed=11, restarts=1)
    assert np.array_equal(first, kmeans_labels(features, 5, seed=11, restarts=1))
    assert set(first) == set(range(5))


def test_lowres_masks_partition_the_grid_and_resize_nearest():
    clusters = np.array([[0, 1], [2, 2]])
    masks = lowres_masks(clusters, 3, (4, 4)).numpy().reshape(3, 4, 4)
    assert np.array_equal(masks.sum(axis=0), np.ones((4, 4)))
    assert masks[2, 2:, :].all() and masks[0, :2, :2].all() and masks[1, :2, 2:].all()


def test_more_clusters_than_positions_is_refused(make_method, synthetic_set):
    with pytest.raises(ConfigError, match="larger than the 64 low-resolution positions"):
        make_method(clusters=65).segment(synthetic_set.records[0], _generator(1), 1)


def test_an_unknown_layer_lists_the_candidates(make_method, synthetic_set):
    with pytest.raises(ConfigError, match=r"not a cross-attention layer.*Candidates: .*up_blocks\.0\.attentions\.0"):
        make_method(feature_layer="up_blocks.9.attn2").segment(synthetic_set.records[0], _generator(1), 1)


def test_rgba_and_odd_sized_images_are_converted_with_notes(make_method, tmp_path):
    path = tmp_path / "odd.png"
    Image.fromarray((np.random.default_rng(1).random((27, 45, 4)) * 255).astype(np.uint8), "RGBA").save(path)
    record = PromptRecord("odd", "x", 0, {"image_path": str(path)})
    method = make_method(clusters=2)
    image = method._prepare_image(*_load(record))
    assert image.shape == (32, 32, 3)
    notes = []
    method._prepare_image(_load(record)[0], notes)
    assert any("resized from 45x27" in n for n in notes)
    assert any("RGBA" in n for n in _load(record)[1])


def _load(record):
    from harness.data.image_sets import load_record_image

    return load_record_image(record)


def test_missing_image_is_a_clear_data_error(make_method, tmp_path):
    record = PromptRecord("gone", "x", 0, {"image_path": str(tmp_path / "nope.png")})
    with pytest.raises(DataError, match="nope.png .*does not exist"):
        make_method().segment(record, _generator(1), 1)


def test_bad_options_are_refused_at_construction(make_method):
    with pytest.raises(ConfigError, match="modulation_target"):
        make_method(modulation_target="keys")
    with pytest.raises(ConfigError, match="clusters"):
        make_method(clusters=0)
    with pytest.raises(ConfigError, match="difference_normalization"):
        make_method(difference_normalization="softmax")


def test_attention_injection_is_active(make_method, reference):
    """Replaying the unmodulated Q/K changes the modulated images (else the option would be a no-op)."""
    record, injected = reference
    sample = make_method(attention_injection=False).segment(record, _generator(7), 7)
    change = np.abs(sample.arrays["difference_maps"].astype(np.float32) - injected.arrays["difference_maps"].astype(np.float32))
    assert float(change.max()) > 1e-2


@pytest.mark.parametrize("recorded", [1, 2])
def test_shared_attention_maps_equal_sdpa_with_replayed_query_and_key(recorded):
    """The injected attention (maps computed once, applied to every trajectory's values) equals
    torch's scaled_dot_product_attention with the recorded Q/K repeated per row; recorded=2 is the
    CFG layout [uncond x B, cond x B]."""
    import torch
    import torch.nn.functional as F

    from harness.methods.emerdiff import _expand_rows, _injected_attention

    generator = torch.Generator().manual_seed(0)
    query = torch.randn(recorded, 2, 12, 4, generator=generator)
    key = torch.randn(recorded, 2, 7, 4, generator=generator)
    value = torch.randn(6, 2, 7, 4, generator=generator)
    expected = F.scaled_dot_product_attention(_expand_rows(query, 6), _expand_rows(key, 6), value)
    torch.testing.assert_close(_injected_attention(query, key, value), expected, rtol=1e-5, atol=1e-5)


def test_lambda_zero_changes_nothing_with_cfg(make_method, synthetic_set):
    sample = make_method(modulation_strength=0.0, guidance_scale=2.0).segment(synthetic_set.records[0], _generator(7), 7)
    assert float(np.abs(sample.arrays["difference_maps"].astype(np.float32)).max()) < 1e-4
    assert sample.meta["unet_calls"] == 2 * (4 + 6 * 2)  # CFG: two branches per pass


def test_cfg_batched_and_one_at_a_time_agree(make_method, synthetic_set):
    """With CFG the rows are [uncond x B, cond x B]: a wrong row layout would mix trajectories."""
    record = synthetic_set.records[1]
    batched = make_method(guidance_scale=2.0).segment(record, _generator(3), 3).arrays["difference_maps"].astype(np.float32)
    single = make_method(guidance_scale=2.0, one_at_a_time=True).segment(record, _generator(3), 3)
    maps = single.arrays["difference_maps"].astype(np.float32)
    assert float(batched.max()) > 1e-2
    np.testing.assert_allclose(maps, batched, rtol=0, atol=2e-3 * float(batched.max()))
