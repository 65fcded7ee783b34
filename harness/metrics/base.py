"""The metric interface (detectron2-style evaluators: reset / process / compute).

A metric that cannot run (its model or weights are missing) raises a :class:`HarnessError` from
:meth:`Metric.check_available`, which :func:`build_metrics` calls before any sample is
generated, so the run stops at once with that message. Unless the metric's config entry says
``optional: true``: then it is replaced by a :class:`SkippedMetric`, whose aggregate row has an
empty value (NaN) and the reason in ``skipped_reason``; nothing is left out silently.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any, ClassVar

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, HarnessError
from harness.registry import METRICS
from harness.store.rows import MetricResult
from harness.store.samples import Sample

log = logging.getLogger(__name__)

#: Keys of a metric's or baseline's config entry that the runner reads (not passed to the class).
OPTIONAL_KEY = "optional"
#: The rows column that says why an optional metric or baseline produced no value.
SKIPPED_COLUMN = "skipped_reason"
#: The rows column naming the ``metric:`` entry an aggregate row came from (a metric may write
#: rows under other names, e.g. ``bias.<attribute>.skew``).
ENTRY_COLUMN = "metric_entry"


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


def skipped_result(metric: str, reason: str, kind: str = "quality") -> MetricResult:
    """The aggregate row of something that was skipped: value NaN, n 0, the reason beside it."""
    return MetricResult(metric, math.nan, 0, kind=kind, definition=f"skipped: {reason}",
                        extra={SKIPPED_COLUMN: reason})


def split_options(kind: str, name: str, options: Any) -> tuple[dict[str, Any], bool]:
    """(the class's options, whether the entry is optional) of one ``metric:``/``baseline:`` entry."""
    options = dict(options or {})
    optional = options.pop(OPTIONAL_KEY, False)
    if not isinstance(optional, bool):
        raise ConfigError(f"{kind}.{name}.{OPTIONAL_KEY} must be true or false, got {optional!r}.")
    return options, optional


def check_options(kind: str, name: str, target: Any, options: dict[str, Any], *leading: Any) -> None:
    """A ConfigError listing the accepted options when ``target(*leading, **options)`` would not bind."""
    try:
        inspect.signature(target).bind(*leading, **options)
    except TypeError:
        accepted = [p for p in inspect.signature(target).parameters
                    if p not in ("self", "model", "args", "kwargs", "options")]
        raise ConfigError(f"{kind}.{name} got options {sorted(options)}; it accepts "
                          f"{accepted or 'none'} (and {OPTIONAL_KEY}: true|false).") from None


def _tag_results(metric: Metric, entry: str) -> None:
    """Make ``metric.compute()`` name ``entry`` in each result's ``metric_entry`` column."""
    compute = metric.compute

    def tagged() -> list[MetricResult]:
        results = compute()
        for result in results:
            result.extra.setdefault(ENTRY_COLUMN, entry)
        return results

    metric.compute = tagged  # type: ignore[method-assign]


def build_metrics(metric_cfg: dict[str, Any] | None) -> list[Metric]:
    """Instantiate the metrics of ``metric:`` (name -> options or null), checking options and availability.

    A metric that cannot run raises its HarnessError here, unless its entry has ``optional: true``;
    then a :class:`SkippedMetric` takes its place (logged, and visible in the rows).
    """
    metrics: list[Metric] = []
    for name, entry in (metric_cfg or {}).items():
        metric_class = METRICS.get(name)
        options, optional = split_options("metric", name, entry)
        check_options("metric", name, metric_class, options)
        try:
            metric = metric_class(**options)
            metric.check_available()
        except ConfigError:
            raise  # a wrong option is a mistake to fix, optional or not
        except HarnessError as error:
            if not optional:
                raise
            reason = str(error)
            log.warning("metric %s skipped (optional): %s", name, reason)
            metric = SkippedMetric(getattr(metric_class, "name", "") or name, reason,
                                   getattr(metric_class, "kind", "quality"))
        metric.optional = optional
        metric.entry = name
        metric.reset()
        _tag_results(metric, name)
        metrics.append(metric)
    return metrics
