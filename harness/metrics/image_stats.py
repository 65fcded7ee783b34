"""``mean_intensity``: the mean pixel value of each image, a model-free sanity metric."""

from __future__ import annotations

from harness.data.prompts import PromptRecord
from harness.metrics.base import Metric
from harness.stats import mean_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample


class MeanIntensity(Metric):
    """Mean of all pixel values in [0, 1] per image; aggregate: mean over images with a 95% CI."""

    name = "mean_intensity"
    definition = "mean over images of the mean RGB value in [0, 1]; 95% Student-t CI"

    def reset(self) -> None:
        self.values: list[float] = []

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float]:
        value = float(sample.image.mean() / 255.0)
        self.values.append(value)
        return {self.name: value}

    def compute(self) -> list[MetricResult]:
        mean, low, high = mean_ci(self.values)
        return [MetricResult(self.name, mean, len(self.values), low, high, definition=self.definition)]
