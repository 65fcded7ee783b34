"""Noun-segmentation mIoU as DAAM defines it (Tang et al., ACL 2023, section 3).

Definition (``miou``, the paper's mIoU-inf; ``miou80`` restricts the nouns):

1. The scored pairs are (image, noun) for every distinct noun of the prompt
   (``record.meta["nouns"]``, lower case) that has a non-empty ground-truth mask in that image.
   A noun without a mask is *absent*: it is not scored, and is counted in ``<metric>.absent_nouns``.
   For ``miou80`` only nouns that name one of the 80 COCO classes (synonym table
   ``harness/data/coco80_synonyms.json``: plurals, "man"/"women"/"kids" -> person, "bike" ->
   bicycle, ...) are considered at all.
2. Prediction mask of a pair: the word's heat map ``sample.arrays["heatmap:<noun>"]`` is
   upsampled **bilinearly** (``torch.nn.functional.interpolate``, ``align_corners=False``) to the
   ground-truth size, **min-max normalised** over the image, and thresholded ``> threshold``
   (default 0.4): :func:`harness.heatmaps.heatmap_to_mask`, the harness's one mask function. A
   constant map has no range: it gives an empty mask (as in the DAAM reference). A noun with no heat map in the sample
   gets an empty prediction (IoU 0) and is counted in ``<metric>.missing_maps``.
3. IoU of a pair = |P ∩ G| / |P ∪ G| on the binary masks (G non-empty, so never 0/0).
4. ``miou`` = the mean over all scored pairs of the whole set (pairs, not images, are the
   unit: an image with three nouns weighs three times), in [0, 1] (the paper prints x100), with a
   95% percentile bootstrap interval that resamples **images** (pairs of one image are not
   independent), 1000 resamples, seeded, inside [0, 1].

Optional ``thresholds=[...]`` adds the same mean at other thresholds (``<metric>@<tau>``).
Per-pair IoUs are per-sample rows with ``item`` = the noun.

Not to be confused with torchmetrics' ``MeanIoU`` (per-image mean over classes) or the
segmentation-benchmark mIoU (dataset-level intersections over unions per class, then the mean
over classes); see docs/metrics.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.data.coco80 import coco80_class
from harness.data.ground_truth import GroundTruth, lookup, noun_lemmas, resolve_ground_truth
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.heatmaps import DEFAULT_THRESHOLD, heatmap_to_mask, sample_heat_maps
from harness.metrics.base import Metric
from harness.overlap import mask_iou
from harness.stats import grouped_mean_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample


def nouns_of(record: PromptRecord, truth: dict[str, np.ndarray]) -> list[tuple[str, str | None]]:
    """(noun, lemma) pairs to consider: the record's nouns, else the annotated words."""
    nouns = record.meta.get("nouns") if isinstance(record.meta, dict) else None
    if nouns is None:
        return [(word, None) for word in sorted(truth)]
    lemmas = noun_lemmas(record)
    seen: dict[str, str | None] = {}
    for noun in nouns:
        seen.setdefault(str(noun).lower(), lemmas.get(str(noun).lower()))
    return list(seen.items())


class NounMIoU(Metric):
    """``miou``: DAAM's mIoU-inf over (image, noun) pairs (see the module docstring)."""

    name = "miou"
    definition = ("DAAM mIoU: mean over (image, noun present in image) pairs of IoU(heat map bilinear-upsampled "
                  "to GT size, min-max normalised, > tau; GT mask); 95% percentile bootstrap CI resampling images")

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, thresholds: list[float] | None = None,
                 ground_truth: Any = None) -> None:
        if not 0.0 <= float(threshold) < 1.0:
            raise ConfigError(f"metric.{self.name}.threshold must be in [0, 1), got {threshold}.")
        self.threshold = float(threshold)
        self.thresholds = [float(t) for t in (thresholds or [])]
        self.ground_truth: GroundTruth = resolve_ground_truth(ground_truth)
        self.reset()

    def accepts(self, noun: str) -> bool:
        """Whether a noun is in this metric's vocabulary (all nouns for ``miou``)."""
        return True

    def scored_words(self, record: PromptRecord, truth: dict[str, np.ndarray]) -> list[tuple[str, str | None]]:
        """(word, lemma) pairs this metric scores: the nouns (see :func:`nouns_of`)."""
        return nouns_of(record, truth)

    def reset(self) -> None:
        self.pairs: dict[float, list[float]] = {tau: [] for tau in [self.threshold, *self.thresholds]}
        self.pair_images: list[str] = []  #: the image (record id) of each scored pair
        self.absent = 0
        self.missing_maps = 0
        self.considered = 0

    def pair_ious(self, record: PromptRecord, sample: Sample) -> tuple[list[tuple[str, dict[float, float]]], int, int]:
        """Per scored noun its IoU at every threshold; plus the numbers of absent nouns and missing maps."""
        truth = self.ground_truth.masks(record, sample)
        maps = sample_heat_maps(sample, lower=True)
        scored: list[tuple[str, dict[float, float]]] = []
        absent = missing = 0
        for noun, lemma in self.scored_words(record, truth):
            if not self.accepts(noun):
                continue
            gt = lookup(truth, noun, lemma)
            if gt is None:
                absent += 1
                continue
            heat = maps.get(noun)
            if heat is None:
                missing += 1
                scored.append((noun, {tau: 0.0 for tau in self.pairs}))
                continue
            scored.append((noun, {tau: mask_iou(heatmap_to_mask(heat, gt.shape, tau), gt) for tau in self.pairs}))
        return scored, absent, missing

    def process(self, record: PromptRecord, sample: Sample) -> list[dict[str, Any]]:
        scored, absent, missing = self.pair_ious(record, sample)
        self.absent += absent
        self.missing_maps += missing
        self.considered += absent + len(scored)
        rows = []
        for noun, values in scored:
            for tau, value in values.items():
                self.pairs[tau].append(value)
            self.pair_images.append(record.id)
            rows.append({"metric": self.name, "value": values[self.threshold], "item": noun})
        return rows

    def compute(self) -> list[MetricResult]:
        values = self.pairs[self.threshold]
        mean, low, high = grouped_mean_ci(values, self.pair_images, bounds=(0.0, 1.0))
        results = [
            MetricResult(self.name, mean, len(values), low, high, definition=f"{self.definition}; tau={self.threshold:g}"),
            MetricResult(f"{self.name}.absent_nouns", float(self.absent), self.considered,
                         definition="nouns of the prompts with no ground-truth mask in their image (not scored); "
                                    "n = nouns considered"),
            MetricResult(f"{self.name}.missing_maps", float(self.missing_maps), len(values),
                         definition="scored nouns the sample had no heat map for (scored as IoU 0)"),
        ]
        for tau in self.thresholds:
            mean, low, high = grouped_mean_ci(self.pairs[tau], self.pair_images, bounds=(0.0, 1.0))
            results.append(MetricResult(f"{self.name}@{tau:g}", mean, len(self.pairs[tau]), low, high,
                                        definition=f"{self.definition}; tau={tau:g}"))
        return results


class Coco80NounMIoU(NounMIoU):
    """``miou80``: :class:`NounMIoU` over the nouns that name one of the 80 COCO classes."""

    name = "miou80"
    definition = ("DAAM mIoU80: as miou, over nouns mapped to the 80 COCO classes by harness/data/coco80_synonyms.json; "
                  "95% percentile bootstrap CI resampling images")

    def accepts(self, noun: str) -> bool:
        return coco80_class(noun) is not None
