"""Baselines for EmerDiff, predicting ``labels`` (int32 HxW) like the method, from its sample.

- ``emerdiff_naive_upsampling``: the paper's naive baseline -- the SAME low-resolution query
  features EmerDiff clusters (``lowres_features`` of the sample), upsampled bilinearly to image
  resolution and k-means'd per pixel. It isolates what the modulated-denoising step adds.
- ``kmeans_colours``: k-means on the image's RGB pixel colours (no model at all).

Both use K = the sample's ``clusters`` unless ``clusters`` is given, and a fixed seed. K is lowered
only where ``cap_at_distinct`` says so (the default of ``kmeans_colours``: flat-colour images have
fewer colours than K), to the number of distinct points; each prediction's ``meta`` holds the K
used (``clusters``) and the K asked for (``clusters_asked``). Without it, too few distinct points
is a DataError naming the record (``harness.clustering``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.baselines.base import Baseline
from harness.clustering import distinct_count, kmeans_labels
from harness.data.prompts import PromptRecord
from harness.errors import DataError
from harness.store.samples import Sample


class _KMeansBaseline(Baseline):
    version = "2"  # 2: the prediction's meta["clusters"] is the K used (was: the K asked for)
    #: default of ``cap_at_distinct``
    CAP_AT_DISTINCT = False

    def __init__(self, model: Any = None, clusters: int | None = None, seed: int = 0, restarts: int = 10,
                 fit_points: int | None = 20000, cap_at_distinct: bool | None = None) -> None:
        cap = self.CAP_AT_DISTINCT if cap_at_distinct is None else bool(cap_at_distinct)
        super().__init__(model, clusters=clusters, seed=seed, restarts=restarts, fit_points=fit_points,
                         cap_at_distinct=cap)
        #: K = min(K, distinct points) per image (recorded in each prediction's meta); else a DataError
        self.cap_at_distinct = cap
        self.clusters = clusters
        self.seed = seed
        self.restarts = restarts
        self.fit_points = fit_points

    def _count(self, sample: Sample) -> int:
        count = self.clusters or sample.meta.get("clusters")
        if not count:
            raise DataError(f"baseline {self.name}: the sample does not say its number of clusters; set baseline.{self.name}.clusters.")
        return int(count)

    def _labels(self, points: np.ndarray, sample: Sample, record: PromptRecord) -> tuple[np.ndarray, dict[str, int]]:
        """(labels, meta): meta["clusters"] is the K used, meta["clusters_asked"] the K asked for."""
        asked = self._count(sample)
        used = min(asked, distinct_count(points)) if self.cap_at_distinct else asked
        labels = kmeans_labels(points, used, self.seed, self.restarts, self.fit_points,
                               what=f"baseline {self.name} on record {getattr(record, 'id', '?')!r}")
        return labels.astype(np.int32), {"clusters": used, "clusters_asked": asked}

    def _image_shape(self, sample: Sample) -> tuple[int, int]:
        if "labels" in sample.arrays:
            return tuple(sample.arrays["labels"].shape)
        if sample.image is not None:
            return tuple(sample.image.shape[:2])
        raise DataError(f"baseline {self.name}: the sample has neither labels nor an image to size the prediction.")


class NaiveUpsampling(_KMeansBaseline):
    """k-means per pixel on bilinearly upsampled low-resolution features (EmerDiff's naive baseline)."""

    name = "emerdiff_naive_upsampling"

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        import torch
        import torch.nn.functional as F

        if "lowres_features" not in sample.arrays or "lowres_clusters" not in sample.arrays:
            raise DataError(f"baseline {self.name} needs the method's lowres_features (method.save_features=true) "
                            f"in the sample of record {record.id!r}.")
        grid = sample.arrays["lowres_clusters"].shape
        features = torch.from_numpy(sample.arrays["lowres_features"].astype(np.float32))
        channels = features.shape[1]
        height, width = self._image_shape(sample)
        upsampled = F.interpolate(features.T.reshape(1, channels, *grid), size=(height, width), mode="bilinear",
                                  align_corners=False)[0]
        points = upsampled.reshape(channels, -1).T.numpy()
        labels, meta = self._labels(points, sample, record)
        return Sample(image=None, arrays={"labels": labels.reshape(height, width),
                                          "lowres_clusters": sample.arrays["lowres_clusters"]}, meta=meta)


class KMeansColours(_KMeansBaseline):
    """k-means on RGB pixel colours of the segmented image.

    A flat-colour image has fewer distinct colours than K: by default (``cap_at_distinct``) K is
    then the number of colours, and the prediction's ``meta["clusters"]`` says so.
    """

    name = "kmeans_colours"
    CAP_AT_DISTINCT = True

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        if sample.image is None:
            raise DataError(f"baseline {self.name}: the sample of record {record.id!r} has no image.")
        height, width = sample.image.shape[:2]
        points = sample.image.reshape(-1, 3).astype(np.float64)
        labels, meta = self._labels(points, sample, record)
        return Sample(image=None, arrays={"labels": labels.reshape(height, width)}, meta=meta)
