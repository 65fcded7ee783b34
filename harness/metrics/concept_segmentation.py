"""Zero-shot segmentation scores of concept maps, in ConceptAttention's protocol (Helbling et al., ICML 2025).

Maps come from ``sample.arrays["<prefix><concept>"]`` (default ``heatmap:``, so ConceptAttention,
its raw cross-attention variant with ``prefix=heatmap_cross:``, and DAAM maps of the same words
are scored alike) for the concepts in ``sample.meta["concepts"]`` (else ``meta["words"]``). Each
map is upsampled bilinearly to the ground truth's size. Ground truth comes from the image set
(:func:`harness.data.image_sets.load_record_labels`, -1 = ignored pixel, never counted).

- ``mode=binary`` (ImageNet-Segmentation, PascalVOC single-class): the target concept's map
  (``record.meta["target"]``) thresholded at its own mean is the foreground prediction; truth is
  ``labels == record.meta["target_class"]``.
- ``mode=multiclass`` (PascalVOC multi-class): each pixel takes the class of its highest concept
  map (``record.meta["concept_classes"]``: concept -> class id, background -> 0).

Figures (the reference code's definitions): ``concept_pixel_accuracy`` = correct pixels / labelled pixels
over the whole set; ``concept_miou`` = mean over classes of (summed intersections / summed unions) over the
whole set (binary: the two classes foreground and background; multi-class: the classes with a
non-empty union); ``concept_map`` (binary only) = mean over images of the average precision of the
target map as a foreground score (scikit-learn's ``average_precision_score``). Reported in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.image_sets import load_record_labels
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.metrics.base import Metric
from harness.store.rows import MetricResult
from harness.store.samples import Sample

MODES = ("binary", "multiclass")


def resize_map(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A heat map bilinearly resized to ``size`` (float32)."""
    tensor = torch.from_numpy(np.asarray(heat, dtype=np.float32))[None, None]
    if tuple(tensor.shape[-2:]) != tuple(size):
        tensor = F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)
    return tensor[0, 0].numpy()


def segment_counts(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(intersections, unions) per class, correct and labelled pixel counts; ``truth`` -1 is ignored."""
    valid = truth >= 0
    predicted, actual = prediction[valid], truth[valid]
    intersections = np.bincount(actual[predicted == actual], minlength=num_classes)[:num_classes]
    unions = (np.bincount(predicted, minlength=num_classes)[:num_classes]
              + np.bincount(actual, minlength=num_classes)[:num_classes] - intersections)
    return intersections, unions, int((predicted == actual).sum()), int(valid.sum())


class ConceptSegmentation(Metric):
    """``pixel_accuracy``, ``miou`` and (binary) ``map`` of concept maps against ground-truth masks."""

    name = "concept_segmentation"
    kind = "quality"

    def __init__(self, mode: str = "binary", prefix: str = "heatmap:") -> None:
        if mode not in MODES:
            raise ConfigError(f"metric concept_segmentation: mode={mode!r} is not one of {', '.join(MODES)}.")
        self.mode, self.prefix = mode, prefix
        self.reset()

    def reset(self) -> None:
        self.intersections: np.ndarray | None = None
        self.unions: np.ndarray | None = None
        self.correct = self.labelled = 0
        self.precisions: list[float] = []
        self.images = 0

    def _maps(self, record: PromptRecord, sample: Sample, size: tuple[int, int]) -> tuple[list[str], np.ndarray]:
        concepts = list(sample.meta.get("concepts") or sample.meta.get("words") or [])
        missing = [c for c in concepts if f"{self.prefix}{c}" not in sample.arrays]
        if not concepts or missing:
            raise DataError(f"Sample of record {record.id!r} lacks the maps {self.prefix}{missing or '<concepts>'} "
                            "that concept_segmentation scores.")
        return concepts, np.stack([resize_map(sample.arrays[f"{self.prefix}{c}"], size) for c in concepts])

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float] | None:
        from sklearn.metrics import average_precision_score

        labels = load_record_labels(record)
        concepts, maps = self._maps(record, sample, labels.shape)
        if self.mode == "binary":
            target = record.meta.get("target")
            if target not in concepts:
                raise DataError(f"Record {record.id!r}: its target {target!r} is not among the mapped concepts {concepts}.")
            heat = maps[concepts.index(target)]
            prediction = (heat > heat.mean()).astype(np.int64)
            truth = np.where(labels < 0, -1, (labels == int(record.meta["target_class"])).astype(np.int64))
            num_classes = 2
            valid = truth >= 0
            precision = float(average_precision_score(truth[valid], heat[valid])) if truth[valid].any() else 0.0
            self.precisions.append(precision)
        else:
            classes = record.meta.get("concept_classes") or {}
            unknown = [c for c in concepts if c not in classes]
            if unknown:
                raise DataError(f"Record {record.id!r}: concepts {unknown} have no class in meta['concept_classes'].")
            ids = np.array([int(classes[c]) for c in concepts])
            prediction = ids[maps.argmax(axis=0)]
            truth = labels.astype(np.int64)
            num_classes = int(record.meta.get("num_classes") or max(int(truth.max()), int(ids.max())) + 1)
        intersections, unions, correct, labelled = segment_counts(prediction, truth, num_classes)
        if self.intersections is None or len(self.intersections) != num_classes:
            if self.intersections is not None:
                raise DataError(f"Record {record.id!r} has {num_classes} classes; earlier records had {len(self.intersections)}.")
            self.intersections, self.unions = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
        self.intersections += intersections
        self.unions += unions
        self.correct += correct
        self.labelled += labelled
        self.images += 1
        return {"pixel_accuracy": correct / max(1, labelled)}

    def compute(self) -> list[MetricResult]:
        if not self.images:
            return self.nothing_to_score("no sample was scored")
        seen = self.unions > 0
        results = [
            MetricResult("concept_pixel_accuracy", self.correct / max(1, self.labelled), self.images,
                         definition="correct / labelled pixels over the set (concept maps, ConceptAttention protocol)"),
            MetricResult("concept_miou", float((self.intersections[seen] / self.unions[seen]).mean()), self.images,
                         definition=f"mean over classes of summed intersections / summed unions ({self.mode})"),
        ]
        if self.mode == "binary":
            results.append(MetricResult("concept_map", float(np.mean(self.precisions)), self.images,
                                        definition="mean over images of the target map's average precision"))
        return results
