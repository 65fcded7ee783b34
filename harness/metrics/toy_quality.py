"""Quality figures of a toy-world model (``experiment=toy_quality``).

Per generated image (scored on the samples of the run):

- ``gen_accuracy_single`` / ``gen_accuracy_pair``: :class:`~harness.metrics.gen_accuracy.GenAccuracy`
  over the records that ask for one / two objects (``record.meta["objects"]``): 1 when the toy
  evaluator finds every asked shape in its asked colour (any colour where the prompt names none).
- ``noun_attention_miou``: DAAM's ``miou`` (pairs of image and present noun; heat map min-max
  normalised, > 0.4) with the toy annotator (``harness.toy.annotator``) as the ground truth of
  the generated image.
- ``colour_attention_miou``: the same for the colour adjectives the prompt names, each scored
  against its object's mask (the noun must beat it: the model should attend to the noun).

Per split, independent of the generated samples (they measure the instruments):

- ``evaluator_accuracy``: top-1 accuracy of the toy evaluator on held-out single-object renders.
- ``annotator_miou``: the annotator's mean IoU over (image, object) pairs on held-out renders
  degraded like generations, against the renderer's exact masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.heatmaps import DEFAULT_THRESHOLD
from harness.metrics.base import Metric
from harness.metrics.gen_accuracy import GenAccuracy
from harness.metrics.miou import NounMIoU
from harness.stats import proportion_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample

ANNOTATOR = "harness.toy.annotator:ToyAnnotator"
TOY_SPLITS = ("toy_gen", "toy_unreal")


def _object_count(record: PromptRecord) -> int | None:
    objects = record.meta.get("objects") if isinstance(record.meta, dict) else None
    return len(objects) if objects is not None else None


class GenAccuracySingle(GenAccuracy):
    """``gen_accuracy_single``: generation accuracy over one-object prompts."""

    name = "gen_accuracy_single"
    objects = 1

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float] | None:
        if _object_count(record) != self.objects:
            return None
        return super().process(record, sample)

    def empty_reason(self) -> str:
        return f"no record of the run asks for {self.objects} object(s)"

    def compute(self) -> list[MetricResult]:
        results = super().compute()
        for result in results:
            if not result.n:
                continue
            result.definition = f"{result.definition}; prompts asking for {self.objects} object(s)"
        return results


class GenAccuracyPair(GenAccuracySingle):
    """``gen_accuracy_pair``: generation accuracy over two-object prompts (both must be found)."""

    name = "gen_accuracy_pair"
    objects = 2


class NounAttentionMIoU(NounMIoU):
    """``noun_attention_miou``: DAAM mIoU of the nouns against the toy annotator's masks."""

    name = "noun_attention_miou"
    definition = ("mean over (generated image, present noun) pairs of IoU(noun heat map min-max normalised > tau; "
                  "toy annotator's mask of its object); 95% percentile bootstrap CI resampling images")

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, thresholds: list[float] | None = None, ground_truth: Any = ANNOTATOR) -> None:
        super().__init__(threshold, thresholds, ground_truth)


class ColourAttentionMIoU(NounAttentionMIoU):
    """``colour_attention_miou``: the same figure for the colour adjectives the prompts name."""

    name = "colour_attention_miou"
    definition = ("mean over (generated image, named colour adjective of a present object) pairs of IoU(adjective "
                  "heat map min-max normalised > tau; toy annotator's mask of its object); 95% percentile bootstrap CI "
                  "resampling images")

    def scored_words(self, record: PromptRecord, truth: dict[str, np.ndarray]) -> list[tuple[str, str | None]]:
        from harness.toy.annotator import parse_caption

        colours = [obj.colour for obj in parse_caption(record.prompt).objects if obj.colour is not None]
        return [(colour, None) for colour in dict.fromkeys(colours)]


class _SplitMetric(Metric):
    """A figure of an instrument on held-out renders of ``split`` (the run's samples are not used)."""

    def __init__(self, split: str = "toy_gen", n: int = 500, seed: int = 0) -> None:
        if split not in TOY_SPLITS:
            raise ConfigError(f"metric.{self.name}.split must be one of {list(TOY_SPLITS)}, got {split!r}.")
        if int(n) < 1:
            raise ConfigError(f"metric.{self.name}.n must be >= 1, got {n}.")
        self.split, self.n, self.seed = split, int(n), int(seed)

    def reset(self) -> None:
        pass

    def process(self, record: PromptRecord, sample: Sample) -> None:
        return None


class EvaluatorAccuracy(_SplitMetric):
    """``evaluator_accuracy``: the toy evaluator's top-1 accuracy on held-out single-object renders."""

    name = "evaluator_accuracy"

    def __init__(self, split: str = "toy_gen", n: int = 500, seed: int = 0, weights: str = "weights/toy/evaluator",
                 degraded: bool = False) -> None:
        super().__init__(split, n, seed)
        self.weights, self.degraded = weights, bool(degraded)

    def compute(self) -> list[MetricResult]:
        from harness import REPO_ROOT
        from harness.toy.evaluator import load_evaluator, single_object_accuracy

        weights = Path(self.weights) if Path(self.weights).is_absolute() else REPO_ROOT / self.weights
        accuracy = single_object_accuracy(load_evaluator(weights), self.split, self.n, degraded=self.degraded)
        kind = "degraded" if self.degraded else "clean"
        low, high = proportion_ci(int(round(accuracy * self.n)), self.n)
        return [MetricResult(self.name, float(accuracy), self.n, low, high, definition=(
            f"top-1 (colour, shape) accuracy of the toy evaluator on {self.n} held-out {kind} single-object "
            f"{self.split} renders; 95% Wilson score binomial interval"))]


class AnnotatorMIoU(_SplitMetric):
    """``annotator_miou``: the toy annotator against exact masks on degraded held-out renders."""

    name = "annotator_miou"

    def compute(self) -> list[MetricResult]:
        from harness.toy.annotator import annotator_miou

        result = annotator_miou(self.n, self.split, self.seed, degraded=True)
        return [
            MetricResult(self.name, result["annotator_miou"], result["n_objects"], definition=(
                f"mean IoU over (image, object) pairs of the toy annotator's region vs the exact mask, on {self.n} "
                f"held-out {self.split} renders degraded like generations (blur, colour shift, contrast, noise)")),
            MetricResult(f"{self.name}.background", result["background_miou"], self.n,
                         definition="mean IoU of the annotator's background vs the exact background, same images"),
        ]
