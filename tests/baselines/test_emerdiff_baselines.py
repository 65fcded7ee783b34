"""The two baselines predict `labels` from the method's sample."""

from __future__ import annotations

import numpy as np
import pytest

from harness.baselines.emerdiff_baselines import KMeansColours, NaiveUpsampling
from harness.data.image_sets import SYNTHETIC_PALETTE
from harness.errors import DataError
from harness.metrics.unsupervised_seg import unsupervised_segmentation_scores
from harness.registry import BASELINES
from harness.store.samples import Sample


def test_registered():
    assert BASELINES.get("kmeans_colours") is KMeansColours
    assert BASELINES.get("emerdiff_naive_upsampling") is NaiveUpsampling


def test_colour_kmeans_recovers_flat_colour_regions_exactly():
    labels = np.zeros((16, 16), dtype=np.int64)
    labels[2:9, 3:12] = 2
    labels[10:15, 1:6] = 4
    image = np.array([rgb for _, rgb in SYNTHETIC_PALETTE], dtype=np.uint8)[labels]
    prediction = KMeansColours(None).predict(None, Sample(image=image, meta={"clusters": 3}))
    assert prediction.arrays["labels"].shape == (16, 16) and prediction.arrays["labels"].dtype == np.int32
    scores = unsupervised_segmentation_scores([prediction.arrays["labels"]], [labels], 6, "image")
    assert scores["miou"] == 1.0 and scores["pixel_accuracy"] == 1.0


def test_naive_upsampling_clusters_the_upsampled_features():
    # A 4x4 feature grid: left half one vector, right half another -> two vertical halves at 16x16.
    features = np.zeros((4, 4, 8), dtype=np.float32)
    features[:, 2:, 0] = 10.0
    sample = Sample(image=np.zeros((16, 16, 3), np.uint8),
                    arrays={"lowres_features": features.reshape(16, 8).astype(np.float16),
                            "lowres_clusters": np.zeros((4, 4), np.int32), "labels": np.zeros((16, 16), np.int32)},
                    meta={"clusters": 2})
    labels = NaiveUpsampling(None, seed=0).predict(None, sample).arrays["labels"]
    assert labels.shape == (16, 16)
    assert len(np.unique(labels[:, :7])) == 1 and len(np.unique(labels[:, 9:])) == 1
    assert labels[0, 0] != labels[0, 15]


def test_naive_upsampling_needs_the_methods_features():
    from harness.data.prompts import PromptRecord

    with pytest.raises(DataError, match="save_features"):
        NaiveUpsampling(None).predict(PromptRecord("r", "x", 0), Sample(image=np.zeros((4, 4, 3), np.uint8)))
