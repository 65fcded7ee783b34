"""Masks at a threshold, threshold sweeps and overlay figures."""

from __future__ import annotations

import numpy as np
from PIL import Image

from harness.data.prompts import PromptRecord
from harness.heatmaps import (
    heatmap_to_mask,
    normalize_minmax,
    save_overlays,
    sweep_iou,
    threshold_sweep,
)
from harness.store.samples import Sample

HEAT = np.array([[2.0, 4.0], [6.0, 10.0]])  # min-max normalised: [[0, .25], [.5, 1]]


def test_mask_at_the_default_threshold():
    np.testing.assert_allclose(normalize_minmax(HEAT), [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(heatmap_to_mask(HEAT), [[False, False], [True, True]])  # tau 0.4
    np.testing.assert_array_equal(heatmap_to_mask(HEAT, threshold=0.5), [[False, False], [False, True]])  # strictly greater
    np.testing.assert_array_equal(heatmap_to_mask(np.full((2, 2), 3.0)), np.ones((2, 2), bool))  # constant > 0: full
    np.testing.assert_array_equal(heatmap_to_mask(np.zeros((2, 2))), np.zeros((2, 2), bool))  # zero map: empty


def test_threshold_sweep_and_iou():
    masks = threshold_sweep(HEAT, [0.0, 0.2, 0.4, 0.9])
    assert masks.sum(axis=(1, 2)).tolist() == [3, 3, 2, 1]
    truth = np.array([[False, False], [True, False]])
    np.testing.assert_allclose(sweep_iou(HEAT, truth, [0.2, 0.4, 0.9]), [1 / 3, 1 / 2, 0.0])


def test_save_overlays_writes_one_png_per_sample(tmp_path):
    rng = np.random.default_rng(0)
    records = [PromptRecord("r/0", "a red cat", 0), PromptRecord("r1", "a dog", 1), PromptRecord("r2", "no maps", 2)]
    samples = {
        "r/0": Sample(image=rng.integers(0, 255, (32, 48, 3), dtype=np.uint8),
                      arrays={"heatmap:red": rng.random((16, 24)).astype(np.float32),
                              "heatmap:cat": rng.random((16, 24)).astype(np.float32)},
                      meta={"words": ["red", "cat"]}),
        "r1": Sample(image=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                     arrays={"heatmap:dog": rng.random((4, 4)).astype(np.float32)}, meta={"words": ["dog"]}),
        "r2": Sample(image=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
    }
    written = save_overlays(tmp_path, records, samples)
    assert [p.name for p in written] == ["r_0.png", "r1.png"]
    for path in written:
        assert path.parent == tmp_path / "figures"
        with Image.open(path) as image:
            assert image.format == "PNG"
    with Image.open(written[0]) as wide, Image.open(written[1]) as narrow:
        assert wide.size[0] > narrow.size[0]  # three panels (image + 2 words) vs two


def test_the_miou_metric_scores_a_constant_map_as_the_one_mask_function_does():
    """A constant positive map is the whole image (IoU = the truth's area share), after resizing too."""
    from harness.metrics.miou import NounMIoU
    from harness.overlap import mask_iou

    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True
    record = PromptRecord("c", "a dog", 0, meta={"nouns": ["dog"], "ground_truth": {}})
    sample = Sample(image=np.zeros((4, 4, 3), np.uint8), arrays={"heatmap:dog": np.full((2, 2), 0.7, np.float32)},
                    meta={"words": ["dog"]})
    class Truth:
        def masks(self, record, sample):
            return {"dog": truth}

    metric = NounMIoU(ground_truth=Truth())
    metric.reset()
    assert mask_iou(heatmap_to_mask(sample.arrays["heatmap:dog"], truth.shape), truth) == 0.25
    assert [row["value"] for row in metric.process(record, sample)] == [0.25]
