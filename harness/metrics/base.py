"""The metric interface (detectron2-style evaluators: reset / process / compute)."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.registry import METRICS
from harness.store.rows import MetricResult
from harness.store.samples import Sample


class Metric:
    """Accumulates over samples; ``process`` may return per-sample values for the rows."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "quality"
    definition: ClassVar[str] = ""

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float] | None:
        raise NotImplementedError

    def compute(self) -> list[MetricResult]:
        raise NotImplementedError


def build_metrics(metric_cfg: dict[str, Any] | None) -> list[Metric]:
    """Instantiate the metrics of ``metric:`` (name -> options or null), checking their options."""
    metrics = []
    for name, options in (metric_cfg or {}).items():
        metric_class = METRICS.get(name)
        options = dict(options or {})
        try:
            inspect.signature(metric_class).bind(**options)
        except TypeError:
            accepted = [p for p in inspect.signature(metric_class).parameters if p not in ("self", "args", "kwargs")]
            raise ConfigError(
                f"metric.{name} got options {sorted(options)}; it accepts {accepted or 'none'}."
            ) from None
        metric = metric_class(**options)
        metric.reset()
        metrics.append(metric)
    return metrics
