"""Hungarian-matched mIoU and pixel accuracy on hand-computed examples (docs/emerdiff.md)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.metrics.unsupervised_seg import (
    MiouHungarian,
    PixelAccuracy,
    resize_labels,
    unsupervised_segmentation_scores,
)
from harness.overlap import confusion_matrix, hungarian_match
from harness.store.samples import Sample

# Two images, 3 classes; -1 = ignored (its prediction, 2, must not count).
TARGETS = [np.array([[0, 0, 1, 1, -1]]), np.array([[0, 1, 1, 2]])]
PREDICTIONS = [np.array([[0, 0, 0, 1, 2]]), np.array([[1, 0, 0, 2]])]


def test_dataset_level_matching_by_hand():
    # Summed confusion M[k, c]: k0 = [2, 3, 0], k1 = [1, 1, 0], k2 = [0, 0, 1].
    # Best one-to-one matching: k0->1 (3), k1->0 (1), k2->2 (1) = 5 of 8 pixels.
    # IoU: class 0 = 1 / (1 + 1 + 2) = 1/4; class 1 = 3 / (3 + 2 + 1) = 1/2; class 2 = 1/1.
    scores = unsupervised_segmentation_scores(PREDICTIONS, TARGETS, num_classes=3, matching="dataset")
    np.testing.assert_allclose(scores["iou"], [0.25, 0.5, 1.0])
    assert scores["miou"] == pytest.approx((0.25 + 0.5 + 1.0) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 8)


def test_per_image_matching_by_hand():
    # Image 1: k0->0, k1->1 (3 of 4); image 2: k0->1, k1->0, k2->2 (4 of 4).
    # Summed: TP = [3, 3, 1], FP = [1, 0, 0], FN = [0, 1, 0] -> IoU = [3/4, 3/4, 1].
    scores = unsupervised_segmentation_scores(PREDICTIONS, TARGETS, num_classes=3, matching="image")
    np.testing.assert_allclose(scores["iou"], [0.75, 0.75, 1.0])
    assert scores["miou"] == pytest.approx(2.5 / 3)
    assert scores["pixel_accuracy"] == pytest.approx(7 / 8)


def test_more_segments_than_classes_leaves_the_extra_segment_wrong():
    # k2 -> class 1 (2 px), one of k0/k1 -> class 0 (1 px); the other segment's pixel is wrong.
    scores = unsupervised_segmentation_scores([np.array([[0, 1, 2, 2]])], [np.array([[0, 0, 1, 1]])], 2)
    np.testing.assert_allclose(scores["iou"], [0.5, 1.0])
    assert scores["pixel_accuracy"] == pytest.approx(0.75)


def test_classes_never_seen_nor_predicted_are_left_out_of_the_mean():
    scores = unsupervised_segmentation_scores([np.array([[0, 1]])], [np.array([[0, 1]])], num_classes=5)
    assert scores["miou"] == 1.0 and scores["classes_scored"] == 2


def test_hungarian_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        confusion = rng.integers(0, 20, size=(4, 4))
        assignment = hungarian_match(confusion)
        best = max(sum(confusion[k, c] for k, c in enumerate(perm)) for perm in itertools.permutations(range(4)))
        assert sum(confusion[k, c] for k, c in enumerate(assignment)) == best
        assert sorted(assignment) == [0, 1, 2, 3]


def test_confusion_matrix_counts_and_refuses_bad_ids():
    confusion = confusion_matrix(np.array([0, 1, 1, 0]), np.array([1, 1, -1, 0]), 2, 2)
    assert confusion.tolist() == [[1, 1], [0, 1]]
    with pytest.raises(DataError, match="num_classes"):
        confusion_matrix(np.array([0]), np.array([3]), 1, 2)


def test_nearest_resize_of_label_maps():
    labels = np.array([[0, 1], [2, 3]])
    assert resize_labels(labels, (4, 4)).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def _fed(metric_class, matching, tmp_path, targets=TARGETS, predictions=PREDICTIONS, **options):
    metric = metric_class(matching=matching, **options)
    metric.reset()
    for index, (target, predicted) in enumerate(zip(targets, predictions)):
        path = tmp_path / f"labels-{matching}-{index}.png"
        Image.fromarray(np.where(target < 0, 255, target).astype(np.uint8)).save(path)
        record = PromptRecord(f"r{index}", "x", 0, {"label_path": str(path), "num_classes": 3})
        returned = metric.process(record, Sample(arrays={"labels": predicted.astype(np.int32)}))
        if matching == "dataset":  # no per-image figure before the dataset-level matching
            assert returned is None
        else:  # per image: the image's own figure (its own matching), for paired comparisons
            key = "miou" if metric.name == "miou_hungarian" else "pixel_accuracy"
            expected = unsupervised_segmentation_scores([predicted], [target], 3, "image")[key]
            assert returned == {metric.name: pytest.approx(expected)}
    return metric


@pytest.mark.parametrize("matching", ["dataset", "image"])
def test_metric_classes_accumulate_to_the_functional_result(tmp_path, matching):
    expected = unsupervised_segmentation_scores(PREDICTIONS, TARGETS, 3, matching)
    for metric_class, key in ((MiouHungarian, "miou"), (PixelAccuracy, "pixel_accuracy")):
        (result,) = _fed(metric_class, matching, tmp_path).compute()
        assert result.value == pytest.approx(expected[key]) and result.n == 2
        assert matching in result.definition


def test_metric_options_are_checked():
    with pytest.raises(ConfigError, match="matching"):
        MiouHungarian(matching="global")


def test_bootstrap_interval_by_hand(tmp_path):
    # Two images: a resample is {1, 1}, {2, 2} (a quarter of the resamples each) or {1, 2}.
    # Image 1 alone (k0->0, k1->1): IoU = [2/3, 1/2, -] -> 7/12, pixel accuracy 3/4.
    # Image 2 alone: everything right -> 1 and 1. So the 2.5% and 97.5% percentiles are exactly those.
    (miou,) = _fed(MiouHungarian, "image", tmp_path).compute()
    assert (miou.ci_low, miou.ci_high) == (pytest.approx(7 / 12), pytest.approx(1.0))
    assert "bootstrap" in miou.definition
    (accuracy,) = _fed(PixelAccuracy, "image", tmp_path).compute()
    assert (accuracy.ci_low, accuracy.ci_high) == (pytest.approx(0.75), pytest.approx(1.0))


@pytest.mark.parametrize("matching", ["dataset", "image"])
def test_bootstrap_interval_invariants(tmp_path, matching):
    rng = np.random.default_rng(3)
    targets = [rng.integers(0, 3, (4, 4)) for _ in range(12)]
    predictions = [np.where(rng.random((4, 4)) < 0.7, t, rng.integers(0, 3, (4, 4))) for t in targets]
    metric = _fed(MiouHungarian, matching, tmp_path, targets, predictions)
    (result,) = metric.compute()
    assert result.ci_low <= result.value <= result.ci_high and result.ci_low < result.ci_high
    assert metric.compute()[0].ci_low == result.ci_low  # seeded: the same interval every time
    # the per-image shortcut gives what recomputing the resampled images from scratch gives
    for _ in range(5):
        indices = rng.integers(0, 12, 12)
        expected = unsupervised_segmentation_scores([predictions[i] for i in indices], [targets[i] for i in indices],
                                                    3, matching)["miou"]
        assert metric._statistic()(indices) == pytest.approx(expected)
    # identical images: nothing varies between resamples
    (same,) = _fed(MiouHungarian, matching, tmp_path, targets[:1] * 5, predictions[:1] * 5).compute()
    assert same.ci_low == pytest.approx(same.value) and same.ci_high == pytest.approx(same.value)
    (off,) = _fed(MiouHungarian, matching, tmp_path, targets, predictions, bootstrap=0).compute()
    assert off.ci_low is None and off.value == result.value


def test_bootstrap_option_is_checked():
    with pytest.raises(ConfigError, match="bootstrap"):
        MiouHungarian(bootstrap=-1)
