"""The metric interface (detectron2-style evaluators: reset / process / compute).

Lifecycle, as the runner drives it:

1. :func:`build_metrics` builds each ``metric:`` entry **once per run** (through the registry's
   one builder, :meth:`harness.registry.Registry.build`) and calls :meth:`Metric.check_available`,
   before any sample is generated, so a missing model or weight file stops the run at once.
   Unless the entry says ``optional: true``: then a :class:`SkippedMetric` takes its place, whose
   aggregate row has an empty value (NaN) and the reason in ``skipped_reason``.
2. The method and every baseline get their own accumulator with :meth:`Metric.fresh`: a copy with
   empty state that shares whatever the metric loaded (CLIP, a judge, reference features), so a
   model is loaded once per run however many baselines are scored.
3. ``reset`` / ``process`` per sample / ``compute``; the runner reads :meth:`Metric.results`
   (``compute`` with each row naming its config entry in ``metric_entry``).
4. Figures: one hook, :meth:`Metric.save_figures` (run folder, rows, records, samples), called
   once after the rows are written when ``figures=true``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, ClassVar

from harness.data.prompts import PromptRecord
from harness.errors import HarnessError
from harness.registry import METRICS
from harness.store.rows import ENTRY_COLUMN, MetricResult, skipped_result
from harness.store.samples import Sample

log = logging.getLogger(__name__)


class Metric:
    """Accumulates over samples; ``process`` may return per-sample values for the rows."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "quality"
    definition: ClassVar[str] = ""
    #: set by :func:`build_metrics` from the entry's ``optional: true``
    optional: bool = False
    #: set by :func:`build_metrics`: the ``metric:`` entry (its rows' ``metric_entry``)
    entry: str = ""

    def nothing_to_score(self, reason: str) -> list[MetricResult]:
        """What ``compute`` returns when the run gave it nothing to score (no row is never silent).

        An optional metric gets one aggregate row with an empty value and ``reason``; otherwise
        this raises a HarnessError with ``reason`` (the samples are cached: nothing is lost).
        """
        if self.optional:
            log.warning("metric %s: %s (optional: an empty cell)", self.name, reason)
            return [skipped_result(self.name, reason, self.kind)]
        raise HarnessError(f"metric {self.name} has nothing to score: {reason}. Change the run so that it has, "
                           f"drop the metric, or mark it optional (metric.{self.name}.optional=true) for an "
                           "empty cell with this reason.")

    def check_available(self) -> None:
        """Raise a HarnessError saying what is missing when this metric cannot run (default: it can).

        Called once when the metric is built, before generation; load the model here (and keep
        it) when loading is what can fail.
        """

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float] | None:
        raise NotImplementedError

    def compute(self) -> list[MetricResult]:
        raise NotImplementedError

    def results(self) -> list[MetricResult]:
        """:meth:`compute`, each row naming this metric's config entry (``metric_entry``): what the runner reads."""
        results = self.compute()
        for result in results:
            result.extra.setdefault(ENTRY_COLUMN, self.entry or self.name)
        return results

    def fresh(self) -> Metric:
        """A copy with its own empty state that shares everything this metric loaded (models,
        judges, reference statistics): one built metric scores the method and each baseline.
        ``reset`` must (re)bind every piece of per-run state, as every metric's does."""
        clone = copy.copy(self)
        clone.reset()
        return clone

    def save_figures(self, run_dir: Path, rows: Any, records: list[PromptRecord], samples: Any) -> list[Path]:
        """The one figure hook: draw this metric's figures into ``run_dir`` from its ``rows`` (a data
        frame of the run's rows) and the run's ``records``/``samples`` (read lazily from the store).
        Called once per run with ``figures=true``, after the rows are written. Default: none."""
        return []


class SkippedMetric(Metric):
    """Stands in for an optional metric that cannot run: one NaN aggregate row with the reason."""

    def __init__(self, name: str, reason: str, kind: str = "quality") -> None:
        self.name = name  # type: ignore[misc]  (an instance attribute shadows the ClassVar)
        self.kind = kind  # type: ignore[misc]
        self.reason = reason

    def reset(self) -> None:
        pass

    def process(self, record: PromptRecord, sample: Sample) -> None:
        return None

    def compute(self) -> list[MetricResult]:
        return [skipped_result(self.name, self.reason, self.kind)]


def build_metrics(metric_cfg: dict[str, Any] | None) -> list[Metric]:
    """Build every ``metric:`` entry (name -> options or null) once, checking its options and
    availability (see the module docstring); an optional entry that cannot run becomes a
    :class:`SkippedMetric`."""
    metrics: list[Metric] = []
    for name, entry in (metric_cfg or {}).items():
        built = METRICS.build(name, entry, check=lambda metric: metric.check_available())
        metric = built.instance
        if metric is None:
            metric_class = METRICS.get(name)
            metric = SkippedMetric(getattr(metric_class, "name", "") or name, built.skipped_reason or "",
                                   getattr(metric_class, "kind", "quality"))
        metric.optional = built.optional
        metric.entry = name
        metric.reset()
        metrics.append(metric)
    return metrics
