"""Unsupervised semantic segmentation: Hungarian-matched mIoU and pixel accuracy.

Definitions (the unsupervised protocol of IIC / PiCIE / STEGO, also used to report EmerDiff):

1. Predicted segments carry arbitrary ids 0..K-1; ground-truth classes are 0..C-1 (-1 = ignored
   pixel, never counted). Predictions are resized to the ground-truth size (nearest neighbour).
2. Confusion matrix ``M[k, c]`` = number of non-ignored pixels predicted ``k`` with true class ``c``.
3. Matching: a one-to-one assignment of segment ids to classes maximising the matched pixels
   (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment`` on ``-M``). When K != C only
   min(K, C) pairs are made; pixels of an unmatched segment count as wrong.
   - ``matching="dataset"`` (the standard protocol): ONE assignment on the confusion matrix summed
     over the whole dataset. Only meaningful when segment ids mean the same thing in every image
     (a dataset-level clustering).
   - ``matching="image"``: a separate assignment per image on its own confusion matrix (for
     methods whose segment ids are per-image, e.g. EmerDiff's per-image k-means); the matched
     counts are then summed over the dataset exactly as below.
4. Per class c: ``IoU_c = sum_images TP_c / sum_images (TP_c + FP_c + FN_c)`` (dataset-level: sums
   of intersections over sums of unions, NOT a mean of per-image IoUs), where TP_c = pixels of
   class c predicted with the segment matched to c, FP_c = pixels predicted with that segment whose
   class is not c, FN_c = pixels of class c not predicted with it.
5. ``miou_hungarian`` = mean of IoU_c over the classes with a non-empty union (classes never seen
   and never predicted are left out, STEGO's nan-mean); ``pixel_accuracy`` = matched pixels / all
   non-ignored pixels.
6. Interval: a 95% percentile bootstrap over images (``bootstrap`` resamples, seeded; 0 = none):
   each resample recomputes the figure from its images' confusion matrices, matching included.

Both are reported in [0, 1] (x100 for the papers' percentages).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.metrics.base import Metric
from harness.overlap import (
    confusion_matrix,
    hungarian_match,
    matched_counts,
    pad_confusions,
    per_image_matched_counts,
    scores_from_counts,
)
from harness.stats import bootstrap_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample

MATCHINGS = ("dataset", "image")


def unsupervised_segmentation_scores(predictions: list[np.ndarray], targets: list[np.ndarray], num_classes: int,
                                     matching: str = "dataset") -> dict[str, Any]:
    """Hungarian-matched mIoU and pixel accuracy over a dataset (see the module docstring).

    ``predictions``: int segment-id maps; ``targets``: int class maps of the same sizes (-1 = ignore).
    """
    if matching not in MATCHINGS:
        raise ConfigError(f"matching must be one of {MATCHINGS}, got {matching!r}")
    num_segments = max([int(p.max()) + 1 for p in predictions if p.size] + [1])
    confusions = [confusion_matrix(p, t, num_segments, num_classes) for p, t in zip(predictions, targets, strict=True)]
    return _scores(confusions, matching)


def _scores(confusions: list[np.ndarray], matching: str) -> dict[str, Any]:
    if not confusions:
        return {"miou": float("nan"), "iou": np.array([]), "pixel_accuracy": float("nan"), "classes_scored": 0}
    padded = pad_confusions(confusions)
    num_classes = padded[0].shape[1]
    totals = np.zeros((3, num_classes), dtype=np.int64)
    if matching == "dataset":
        summed = np.sum(padded, axis=0)
        totals += np.stack(matched_counts(summed, hungarian_match(summed)))
    else:
        totals += per_image_matched_counts(confusions)[0].sum(axis=0)
    total_pixels = int(sum(c.sum() for c in padded))
    return scores_from_counts(*totals, total_pixels)


class _UnsupervisedSegmentation(Metric):
    """Accumulates one confusion matrix per sample; the matching happens in :meth:`compute`."""

    result_key = ""

    def __init__(self, matching: str = "dataset", labels_key: str = "labels", num_classes: int | None = None,
                 bootstrap: int = 1000, seed: int = 0) -> None:
        if matching not in MATCHINGS:
            raise ConfigError(f"metric.{self.name}.matching must be one of {MATCHINGS}, got {matching!r}")
        if bootstrap < 0:
            raise ConfigError(f"metric.{self.name}.bootstrap must be >= 0 (0: no interval), got {bootstrap}")
        self.matching = matching
        self.bootstrap = int(bootstrap)
        self.seed = int(seed)
        self.labels_key = labels_key
        self.num_classes = num_classes

    def reset(self) -> None:
        self.confusions: list[np.ndarray] = []

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float] | None:
        from harness.data.image_sets import load_record_labels

        if self.labels_key not in sample.arrays:
            raise DataError(f"Sample of record {record.id!r} has no {self.labels_key!r} array; metric {self.name} "
                            "scores segmentation methods (emerdiff and its baselines).")
        target = load_record_labels(record)
        num_classes = self.num_classes or record.meta.get("num_classes")
        if num_classes is None:
            raise DataError(f"Record {record.id!r} does not say its num_classes; set metric.{self.name}.num_classes.")
        predicted = resize_labels(np.asarray(sample.arrays[self.labels_key]), target.shape)
        confusion = confusion_matrix(predicted, target, int(predicted.max()) + 1, int(num_classes))
        self.confusions.append(confusion)
        if self.matching != "image":
            return None  # a dataset-level matching has no per-image figure before every image is seen
        # Per-image rows (the image matched on its own), for paired comparisons over images.
        counts, pixels = per_image_matched_counts([confusion])
        return {self.name: scores_from_counts(*counts[0], int(pixels[0]))[self.result_key]}

    def compute(self) -> list[MetricResult]:
        value = _scores(self.confusions, self.matching)[self.result_key]
        low, high = bootstrap_ci(len(self.confusions), self._statistic(), self.bootstrap, seed=self.seed)
        interval = f"; 95% percentile bootstrap over images, {self.bootstrap} resamples" if low is not None else ""
        return [MetricResult(self.name, value, len(self.confusions), low, high,
                             definition=f"{self.definition} (Hungarian matching per {self.matching}{interval})")]

    def _statistic(self):
        """The figure of a resample of images (index array), for the bootstrap."""
        if self.matching == "dataset" or not self.confusions:
            return lambda indices: _scores([self.confusions[i] for i in indices], self.matching)[self.result_key]
        # Per-image matching does not depend on the other images: match each image once, then a
        # resample only sums its images' (TP, FP, FN) and pixel counts.
        counts, pixels = per_image_matched_counts(self.confusions)
        return lambda indices: scores_from_counts(*counts[indices].sum(axis=0),
                                                  int(pixels[indices].sum()))[self.result_key]


class MiouHungarian(_UnsupervisedSegmentation):
    """``miou_hungarian``: dataset-level mIoU after Hungarian matching of segments to classes."""

    name = "miou_hungarian"
    result_key = "miou"
    definition = ("mean over classes of sum(intersections)/sum(unions) over the dataset, segments matched "
                  "one-to-one to classes by the Hungarian algorithm; ignored pixels excluded")


class PixelAccuracy(_UnsupervisedSegmentation):
    """``pixel_accuracy``: fraction of non-ignored pixels whose matched class is right."""

    name = "pixel_accuracy"
    result_key = "pixel_accuracy"
    definition = "matched pixels / non-ignored pixels after Hungarian matching of segments to classes"


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map to ``shape`` (H, W)."""
    labels = np.asarray(labels)
    if labels.shape == tuple(shape):
        return labels.astype(np.int64)
    # Pixel centres, as PIL's NEAREST does.
    rows = ((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(np.int64)
    cols = ((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(np.int64)
    return labels[rows][:, cols].astype(np.int64)
