"""The mIoU definitions (docs/metrics.md) pinned on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.ground_truth import encode_inline
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.heatmaps import heatmap_to_mask, normalize_minmax
from harness.metrics.base import build_metrics
from harness.metrics.miou import Coco80NounMIoU, NounMIoU
from harness.overlap import mask_iou
from harness.store.samples import Sample


def grid(rows, cols, cells):
    mask = np.zeros((rows, cols), bool)
    for r, c in cells:
        mask[r, c] = True
    return mask


def block(rows, cols, top, left, bottom, right):
    mask = np.zeros((rows, cols), bool)
    mask[top:bottom, left:right] = True
    return mask


# The 2x2 map [[0, 1], [0, 0]] upsampled bilinearly (align_corners=False) to 4x4 is the outer
# product of the row weights (1, .75, .25, 0) and column weights (0, .25, .75, 1):
#   0  .25    .75    1
#   0  .1875  .5625  .75
#   0  .0625  .1875  .25
#   0  0      0      0
# Its range is already [0, 1]; > 0.4 keeps rows 0-1, columns 2-3.
CORNER = np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)
DOG_GT = block(4, 4, 0, 1, 2, 4)  # 6 pixels, 4 of them predicted: IoU 4/6
SINK_GT = block(4, 4, 2, 0, 4, 2)  # 4 pixels; a constant map predicts all 16: IoU 4/16
CUP_GT = grid(4, 4, [(3, 3)])  # no heat map in the sample: IoU 0, counted as missing
MAN_GT = np.ones((4, 4), bool)
TREE_GT = block(4, 4, 0, 0, 1, 1)


def image_one():
    record = PromptRecord("1", "a dog, a sink, a cat and a cup", 0, {
        "nouns": ["dog", "sink", "cat", "cup"],
        # "cat" has no mask: absent from the image, not scored
        "ground_truth": encode_inline({"dog": DOG_GT, "sink": SINK_GT, "cup": CUP_GT}),
    })
    sample = Sample(image=np.zeros((4, 4, 3), np.uint8), arrays={
        "heatmap:dog": CORNER,
        "heatmap:sink": np.full((2, 2), 0.7, np.float32),
        "heatmap:cat": np.ones((2, 2), np.float32),
    }, meta={"words": ["dog", "sink", "cat", "cup"]})
    return record, sample


def image_two():
    record = PromptRecord("2", "a man under a tree", 1, {
        "nouns": ["man", "tree"], "ground_truth": encode_inline({"man": MAN_GT, "tree": TREE_GT})})
    sample = Sample(image=np.zeros((4, 4, 3), np.uint8), arrays={
        "heatmap:man": MAN_GT.astype(np.float32),  # exact: IoU 1
        "heatmap:tree": np.zeros((4, 4), np.float32),  # empty prediction: IoU 0
    }, meta={"words": ["man", "tree"]})
    return record, sample


def run(metric, images):
    rows = []
    for record, sample in images:
        rows.extend(metric.process(record, sample))
    return rows, {r.metric: r for r in metric.compute()}


def test_mask_pipeline_matches_the_hand_computed_upsampling():
    np.testing.assert_array_equal(heatmap_to_mask(CORNER, (4, 4), 0.4), block(4, 4, 0, 2, 2, 4))
    np.testing.assert_array_equal(heatmap_to_mask(CORNER, (4, 4), 0.6), grid(4, 4, [(0, 2), (0, 3), (1, 3)]))
    np.testing.assert_array_equal(heatmap_to_mask(CORNER, (4, 4), 0.2),
                                  grid(4, 4, [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]))
    # non-square: a 2x3 map whose right column is hot, to 4x6 (columns weights 0,0,0,.25,.75,1)
    right = np.array([[0, 0, 1], [0, 0, 1]], np.float32)
    np.testing.assert_array_equal(heatmap_to_mask(right, (4, 6), 0.4), block(4, 6, 0, 4, 4, 6))
    # min-max normalisation makes the threshold relative to the map's own range
    np.testing.assert_array_equal(heatmap_to_mask(CORNER * 5 + 3, (4, 4), 0.4), block(4, 4, 0, 2, 2, 4))
    # constant maps: all inside when positive, all outside when zero
    assert normalize_minmax(np.full((2, 2), 0.7)).min() == 1.0
    assert normalize_minmax(np.zeros((2, 2))).max() == 0.0
    # ... also after resizing, whose rounding must not speckle the mask, at any threshold
    for constant, inside in ((0.7, True), (1.0, True), (0.0, False), (-2.0, False)):
        for threshold in (0.0, 0.4, 0.99):
            assert (heatmap_to_mask(np.full((2, 2), constant, np.float32), (4, 4), threshold) == inside).all()
    assert mask_iou(block(4, 4, 0, 2, 2, 4), DOG_GT) == pytest.approx(4 / 6)


def test_miou_is_the_mean_over_image_noun_pairs_with_absent_and_missing_counted():
    rows, results = run(NounMIoU(), [image_one(), image_two()])
    pairs = [4 / 6, 4 / 16, 0.0, 1.0, 0.0]  # dog, sink, cup (missing map), man, tree
    assert [r["item"] for r in rows] == ["dog", "sink", "cup", "man", "tree"]
    assert [r["value"] for r in rows] == pytest.approx(pairs)
    assert all(r["metric"] == "miou" for r in rows)
    miou = results["miou"]
    assert miou.value == pytest.approx(np.mean(pairs)) and miou.n == 5
    assert miou.value == pytest.approx(0.38333333)
    # pairs, not images, are the unit: the per-image mean would differ
    assert miou.value != pytest.approx(np.mean([np.mean(pairs[:3]), np.mean(pairs[3:])]))
    # the interval resamples images, not pairs: with two images a resample holds image one twice
    # (mean of its 3 pairs), both (the point figure) or image two twice (mean of its 2 pairs), each
    # with probability >= 1/4, so the 2.5% and 97.5% percentiles are exactly those extremes
    assert (miou.ci_low, miou.ci_high) == pytest.approx((np.mean(pairs[:3]), np.mean(pairs[3:])))
    assert results["miou.absent_nouns"].value == 1 and results["miou.absent_nouns"].n == 6
    assert results["miou.missing_maps"].value == 1


def test_miou80_scores_only_nouns_naming_coco_classes():
    metric = Coco80NounMIoU()
    rows, results = run(metric, [image_one(), image_two()])
    # "tree" is not a COCO-80 class; "man" is (person); cat is absent; cup has no map
    assert [r["item"] for r in rows] == ["dog", "sink", "cup", "man"]
    assert results["miou80"].value == pytest.approx((4 / 6 + 4 / 16 + 0 + 1) / 4)
    assert results["miou80.absent_nouns"].value == 1 and results["miou80.absent_nouns"].n == 5
    assert metric.accepts("women") and metric.accepts("Bikes") and metric.accepts("television")
    assert not metric.accepts("street") and not metric.accepts("grass")


def test_threshold_sweep_reports_each_threshold():
    metric = NounMIoU(threshold=0.4, thresholds=[0.2, 0.6])
    _, results = run(metric, [image_one()])
    # dog: 5/7 at 0.2 (6 predicted, 5 inside the 6-pixel GT) and 3/6 at 0.6; sink 4/16; cup 0
    assert results["miou@0.2"].value == pytest.approx((5 / 7 + 4 / 16 + 0) / 3)
    assert results["miou@0.6"].value == pytest.approx((3 / 6 + 4 / 16 + 0) / 3)
    assert results["miou"].value == pytest.approx((4 / 6 + 4 / 16 + 0) / 3)


def test_accumulation_over_batches_equals_one_pass_and_reset_clears():
    metric = NounMIoU()
    _, both = run(metric, [image_one(), image_two()])
    metric.reset()
    _, again = run(metric, [image_one(), image_two()])
    assert again["miou"].value == both["miou"].value and again["miou"].n == 5


def test_heat_maps_at_any_resolution_are_upsampled_to_the_ground_truth():
    gt = block(8, 8, 0, 4, 8, 8)
    record = PromptRecord("3", "a dog", 0, {"nouns": ["dog"], "ground_truth": encode_inline({"dog": gt})})
    sample = Sample(image=np.zeros((8, 8, 3), np.uint8), arrays={"heatmap:Dog": np.array([[0, 1]], np.float32)})
    rows, results = run(NounMIoU(), [(record, sample)])
    assert results["miou"].value == 1.0  # 1x2 -> 8x8, right half; word keys are case-insensitive


def test_options_are_checked_when_built():
    with pytest.raises(ConfigError, match="threshold"):
        NounMIoU(threshold=1.5)
    with pytest.raises(ConfigError, match="accepts"):
        build_metrics({"miou": {"treshold": 0.3}})
    built = build_metrics({"miou": {"threshold": 0.3}, "miou80": None})
    assert [m.name for m in built] == ["miou", "miou80"] and built[0].threshold == 0.3
