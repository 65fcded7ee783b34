"""Segmentation baselines: exact outputs of the trivial and k-means ones, the Mask R-CNN path with
random weights, the missing-weights message, and the detectron2 adapter's skip message."""

from __future__ import annotations

import numpy as np
import pytest

from harness.baselines.base import build_baselines
from harness.baselines.detectron2_adapter import (
    BaselineUnavailableError,
    Detectron2Segmenter,
    detectron2_available,
)
from harness.baselines.kmeans import KMeansDatasetHungarian, KMeansOracleHungarian, hungarian_assign
from harness.baselines.maskrcnn import WEIGHTS_FILE, MaskRCNN, coco_category_names
from harness.baselines.segmentation import detections_to_heatmaps
from harness.baselines.trivial import CentreBlob, WholeImage, centre_disc
from harness.data.ground_truth import encode_inline
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, MissingWeightsError
from harness.metrics.miou import NounMIoU
from harness.registry import BASELINES
from harness.store.samples import Sample


def two_region_scene(height=12, width=16):
    """Left part flat red, right part flat blue (split at column 6); GT: dog = left, car = right."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :6] = (200, 30, 30)
    image[:, 6:] = (30, 40, 210)
    left = np.zeros((height, width), bool)
    left[:, :6] = True
    record = PromptRecord("s1", "a dog next to a car and a tree", 0, {
        "nouns": ["dog", "car", "tree"],
        "ground_truth": encode_inline({"dog": left, "car": ~left}),  # the tree is absent
    })
    sample = Sample(image=image, arrays={}, meta={"words": ["dog", "car", "tree"]})
    return record, sample, left


def test_every_baseline_is_registered():
    for name in ("whole_image", "centre_blob", "kmeans_oracle_hungarian", "kmeans_dataset_hungarian", "maskrcnn", "clipseg", "detectron2"):
        assert name in BASELINES


def test_whole_image_scores_the_ground_truth_area_fraction():
    record, sample, left = two_region_scene()
    prediction = WholeImage().predict(record, sample)
    assert prediction.meta["words"] == ["dog", "car", "tree"]
    assert set(prediction.arrays) == {"heatmap:dog", "heatmap:car", "heatmap:tree"}
    metric = NounMIoU()
    metric.process(record, prediction)
    # IoU(whole, G) = |G| / (H W): 72/192 for the dog, 120/192 for the car
    assert metric.compute()[0].value == pytest.approx((72 / 192 + 120 / 192) / 2)


def test_centre_blob_is_the_centred_disc():
    disc = centre_disc(4, 4, 0.3)
    # pixel centres at +-0.125 and +-0.375 from the centre; inside when y^2 + x^2 <= 0.09
    expected = np.zeros((4, 4), np.float32)
    expected[1:3, 1:3] = 1
    np.testing.assert_array_equal(disc, expected)
    # 4x8, an ellipse (same fractions of each side): column centres at +-1/16, +-3/16, +-5/16, +-7/16
    # of the width; rows +-1/8 allow |x| <= 0.2728, so columns 2-5 of rows 1-2
    expected_wide = np.zeros((4, 8), np.float32)
    expected_wide[1:3, 2:6] = 1
    np.testing.assert_array_equal(centre_disc(4, 8, 0.3), expected_wide)
    record, sample, _ = two_region_scene(8, 8)
    prediction = CentreBlob(radius=0.3).predict(record, sample)
    np.testing.assert_array_equal(prediction.arrays["heatmap:dog"], centre_disc(8, 8, 0.3))
    with pytest.raises(ConfigError, match="radius"):
        CentreBlob(radius=0.0)


def test_kmeans_hungarian_recovers_two_flat_regions_exactly():
    record, sample, left = two_region_scene()
    prediction = KMeansOracleHungarian(clusters=2).predict(record, sample)
    np.testing.assert_array_equal(prediction.arrays["heatmap:dog"], left.astype(np.float32))
    np.testing.assert_array_equal(prediction.arrays["heatmap:car"], (~left).astype(np.float32))
    assert not prediction.arrays["heatmap:tree"].any()  # absent in GT: nothing assigned
    metric = NounMIoU()
    metric.process(record, prediction)
    assert metric.compute()[0].value == 1.0


def half_scene(record_id: str, left_noun: str, right_noun: str):
    """8x8: left half flat red, right half flat blue; GT: left_noun = left, right_noun = right."""
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4] = (200, 30, 30)
    image[:, 4:] = (30, 40, 210)
    left = np.zeros((8, 8), bool)
    left[:, :4] = True
    record = PromptRecord(record_id, f"a {left_noun} and a {right_noun}", 0, {
        "nouns": [left_noun, right_noun], "ground_truth": encode_inline({left_noun: left, right_noun: ~left})})
    return record, Sample(image=image, arrays={}, meta={"words": [left_noun, right_noun]}), left


def test_kmeans_dataset_hungarian_matches_cluster_ids_once_over_the_dataset():
    # red is the circle in two images and the square in one; one matching for the whole set
    # gives red -> circle, blue -> square, so the odd image scores 0 on both nouns: mIoU 4/6
    scenes = [half_scene("a", "circle", "square"), half_scene("b", "square", "circle"),
              half_scene("c", "circle", "square")]
    records = [record for record, _, _ in scenes]
    samples = {record.id: sample for record, sample, _ in scenes}
    baseline = KMeansDatasetHungarian(clusters=2, position_weight=0.0)
    baseline.fit(records, samples)
    metric = NounMIoU()
    for record, sample, left in scenes:
        prediction = baseline.predict(record, sample)
        np.testing.assert_array_equal(prediction.arrays["heatmap:circle"], left.astype(np.float32))
        metric.process(record, prediction)
    assert metric.compute()[0].value == pytest.approx(4 / 6)
    # the per-image oracle matches each image on its own and gets every pair right
    oracle = NounMIoU()
    for record, sample, _ in scenes:
        oracle.process(record, KMeansOracleHungarian(clusters=2, position_weight=0.0).predict(record, sample))
    assert oracle.compute()[0].value == 1.0


def test_runner_fits_a_dataset_level_baseline_once_and_caches_by_the_sample_set(tmp_path, monkeypatch):
    from harness.data.prompts import PromptSet
    from harness.run import predict_all
    from harness.store.samples import SampleStore

    scenes = [half_scene("a", "circle", "square"), half_scene("b", "circle", "square")]
    prompt_set = PromptSet("halves", [record for record, _, _ in scenes])
    samples = {record.id: sample for record, sample, _ in scenes}
    keys = {"a": "key-a", "b": "key-b"}
    store = SampleStore(tmp_path)
    baseline = KMeansDatasetHungarian(clusters=2, position_weight=0.0)
    fits = []
    original_fit = baseline.fit
    monkeypatch.setattr(baseline, "fit", lambda records, found: (fits.append(len(records)), original_fit(records, found)))
    first = predict_all(baseline, prompt_set, samples, keys, store)
    assert fits == [2]
    again = predict_all(baseline, prompt_set, samples, keys, store)
    assert fits == [2]  # every prediction came from the store
    np.testing.assert_array_equal(again["b"].arrays["heatmap:square"], first["b"].arrays["heatmap:square"])
    # another sample set is another dataset: fitted anew, not served from the cache
    predict_all(baseline, PromptSet("halves", prompt_set.records[:1]), samples, {"a": "key-a"}, store)
    assert fits == [2, 1]


def test_hungarian_assignment_maximises_total_iou():
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    first = labels == 1  # matches cluster 1 exactly
    second = (labels == 1) | (labels == 2)  # best alone with cluster 2 (4/8) or 1 (4/8)
    assert hungarian_assign(labels, [first, second]) == [1, 2]
    assert hungarian_assign(labels, []) == []


def test_detections_become_word_masks_via_the_synonym_table():
    categories = coco_category_names()
    person, dog = categories.index("person"), categories.index("dog")
    masks = np.zeros((3, 4, 4), np.float32)
    masks[0, 0, :2] = 0.9  # person, kept
    masks[1, 3, 3] = 0.9  # person, score too low
    masks[2, :, 3] = 0.6  # dog, kept
    maps = detections_to_heatmaps(["men", "puppies", "street"], categories, np.array([person, person, dog]),
                                  np.array([0.8, 0.2, 0.7]), masks, score_threshold=0.5)
    expected_men = np.zeros((4, 4), np.float32)
    expected_men[0, :2] = 1
    np.testing.assert_array_equal(maps["men"], expected_men)
    np.testing.assert_array_equal(maps["puppies"], (masks[2] > 0.5).astype(np.float32))
    assert not maps["street"].any()  # no COCO class: empty


def test_maskrcnn_random_weights_path_gives_a_map_per_word():
    record, sample, _ = two_region_scene(48, 64)
    baseline = MaskRCNN(weights=None, min_size=64, max_size=64, score_threshold=0.0)
    prediction = baseline.predict(record, sample)
    assert prediction.meta["words"] == ["dog", "car", "tree"]
    for word in ("dog", "car", "tree"):
        heat = prediction.arrays[f"heatmap:{word}"]
        assert heat.shape == (48, 64) and heat.dtype == np.float32
        assert set(np.unique(heat)) <= {0.0, 1.0}
    assert not prediction.arrays["heatmap:tree"].any()  # "tree" names no COCO class


def test_maskrcnn_missing_weights_message_names_file_places_and_remedy(tmp_path):
    with pytest.raises(MissingWeightsError) as caught:
        MaskRCNN(weights=str(tmp_path / WEIGHTS_FILE))
    message = str(caught.value)
    assert WEIGHTS_FILE in message and str(tmp_path) in message
    assert "download.pytorch.org" in message and "baseline.maskrcnn.weights=PATH" in message
    with pytest.raises(MissingWeightsError, match="Looked in"):
        MaskRCNN()  # the default places hold no weights on a fresh machine
    import torch

    wrong = tmp_path / "wrong.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, wrong)  # loads (weights_only), does not fit
    with pytest.raises(MissingWeightsError, match="not a usable"):
        MaskRCNN(weights=str(wrong))


def test_build_baselines_checks_options_by_name():
    with pytest.raises(ConfigError, match="radius"):
        build_baselines({"centre_blob": {"radious": 0.2}}, None)
    built = build_baselines({"whole_image": None, "kmeans_oracle_hungarian": {"clusters": 3}}, None)
    assert [b.name for b in built] == ["whole_image", "kmeans_oracle_hungarian"]
    assert built[1].params()["clusters"] == 3


@pytest.fixture
def without_detectron2(monkeypatch):
    """detectron2 unimportable, whether or not it is installed here (None in sys.modules makes
    both ``import detectron2`` and ``find_spec`` say it is missing)."""
    import sys

    monkeypatch.setitem(sys.modules, "detectron2", None)
    assert not detectron2_available()


def test_detectron2_adapter_says_how_to_install_when_missing(without_detectron2):
    with pytest.raises(BaselineUnavailableError, match="detectron2 is not importable") as caught:
        Detectron2Segmenter(config_file="mask2former.yaml", weights="model.pkl")
    assert "pip install" in str(caught.value)


def test_an_unavailable_baseline_stops_the_run_unless_it_is_optional(without_detectron2):
    from harness.errors import BaselineUnavailableError

    with pytest.raises(BaselineUnavailableError, match="detectron2 is not importable"):
        build_baselines({"whole_image": None, "detectron2": None}, model=None)
    built = build_baselines({"whole_image": None, "detectron2": {"optional": True}}, model=None)
    assert [b.name for b in built] == ["whole_image", "detectron2"]
    assert built[0].skipped_reason is None
    assert "detectron2 is not importable" in built[1].skipped_reason
