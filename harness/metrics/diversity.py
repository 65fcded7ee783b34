"""``diversity``: per-prompt mean pairwise distance between the features of its samples.

For every prompt with two or more samples (records sharing a prompt, each with its own seed),
the mean over unordered pairs of the Euclidean (or cosine) distance between the samples'
features; the aggregate is the mean over such prompts with a 95% Student-t interval. Higher
means more varied samples for one prompt. This is our definition (pairwise feature distance,
as PAG's paper discusses diversity); the extractor and distance are recorded in every row.
Prompts with a single sample are left out and counted in the definition.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from functools import cached_property

import numpy as np
from scipy.spatial.distance import pdist

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.metrics.base import Metric
from harness.metrics.features import FeatureExtractor, build_extractor, images_to_tensor
from harness.stats import mean_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample

log = logging.getLogger(__name__)


def mean_pairwise_distance(features: np.ndarray, distance: str = "euclidean") -> float:
    """Mean over unordered pairs of rows of ``features`` (N >= 2) of their distance (scipy ``pdist``)."""
    if len(features) < 2:
        raise ValueError("mean pairwise distance needs at least two samples")
    return float(pdist(np.asarray(features, dtype=np.float64), metric=distance).mean())


class Diversity(Metric):
    """Per-prompt sample diversity (see module docstring)."""

    name = "diversity"

    def __init__(self, features: str = "inception_torchscript", distance: str = "euclidean",
                 weights_path: str | None = None, antialias: bool = True, device: str = "auto",
                 pixel_size: int = 8, evaluator_module: str = "harness.toy.evaluator") -> None:
        if distance not in ("euclidean", "cosine"):
            raise ConfigError(f"metric.diversity.distance must be euclidean or cosine, not {distance!r}.")
        self.features_name = features
        self.distance = distance
        self.extractor_options = {"weights_path": weights_path, "antialias": antialias, "device": device,
                                  "pixel_size": pixel_size, "evaluator_module": evaluator_module}

    @cached_property
    def extractor(self) -> FeatureExtractor:
        """Built on first use (a feature extractor may load weights)."""
        return build_extractor(self.features_name, **self.extractor_options)

    def reset(self) -> None:
        self.by_prompt: dict[str, list[np.ndarray]] = defaultdict(list)

    def process(self, record: PromptRecord, sample: Sample) -> None:
        if sample.image is not None:
            prompt = sample.meta.get("prompt_used", record.prompt)
            self.by_prompt[prompt].append(self.extractor(images_to_tensor([sample.image])).double().numpy()[0])
        return None

    def compute(self) -> list[MetricResult]:
        values = [mean_pairwise_distance(np.stack(feats), self.distance)
                  for feats in self.by_prompt.values() if len(feats) >= 2]
        single = sum(1 for feats in self.by_prompt.values() if len(feats) < 2)
        if not values:
            return self.nothing_to_score(f"no prompt has two or more samples ({single} prompt(s) with one); "
                                         "repeat prompts with different seeds to measure diversity")
        mean, low, high = mean_ci(values)
        definition = (f"mean over {len(values)} prompts (with >= 2 samples; {single} single-sample prompts left out) of "
                      f"the mean pairwise {self.distance} distance of {self.extractor.identity()} features; 95% t-CI")
        return [MetricResult(self.name, mean, len(values), low, high, definition=definition)]
