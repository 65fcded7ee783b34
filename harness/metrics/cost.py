"""Cost metrics: time per image as recorded when each sample was generated."""

from __future__ import annotations

import math

from harness.data.prompts import PromptRecord
from harness.metrics.base import Metric
from harness.stats import mean_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample


class SecondsPerImage(Metric):
    """Wall seconds per generated image (from the sample's metadata, so cached reruns report
    the time of the original generation, not of the cache read)."""

    name = "seconds_per_image"
    kind = "cost"
    definition = "mean wall-clock seconds per image at generation time (batch time / batch size)"

    def reset(self) -> None:
        self.values: list[float] = []
        self.unet_calls: list[float] = []

    def process(self, record: PromptRecord, sample: Sample) -> None:
        if "seconds" in sample.meta:
            self.values.append(float(sample.meta["seconds"]))
        if "unet_calls" in sample.meta:
            self.unet_calls.append(float(sample.meta["unet_calls"]))
        return None

    def compute(self) -> list[MetricResult]:
        results = []
        if self.values:
            mean, low, high = mean_ci(self.values, bounds=(0.0, math.inf))  # a time is never negative
            results.append(MetricResult(self.name, mean, len(self.values), low, high, kind="cost", definition=self.definition))
        if self.unet_calls:
            mean, _, _ = mean_ci(self.unet_calls)
            results.append(MetricResult("unet_calls_per_image", mean, len(self.unet_calls), kind="cost",
                                        definition="UNet forward passes per image (a CFG step counts 2)"))
        return results
