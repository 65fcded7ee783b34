"""The baseline interface.

A baseline reads a finished sample (the image a method generated, or a given image) and
predicts the same arrays the method produces (e.g. ``heatmap:<word>`` maps or ``labels``), so
the same metrics score both. Predictions are cached like samples; rows name the baseline in
the ``method`` column.

A baseline that cannot run (its package or weights are missing) raises a HarnessError when it
is built, before generation, and the run stops with that message. With ``optional: true`` in
its config entry it is replaced by a :class:`SkippedBaseline` instead: its rows (one per metric)
have an empty value and the reason in ``skipped_reason``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pandas as pd

from harness.data.prompts import PromptRecord
from harness.errors import HarnessError
from harness.registry import BASELINES
from harness.store.rows import ENTRY_COLUMN, skipped_result
from harness.store.samples import Sample

log = logging.getLogger(__name__)


class Baseline:
    """Base class: subclasses set ``name``/``version`` and implement :meth:`predict`."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    #: why this baseline did not run (set on :class:`SkippedBaseline` only)
    skipped_reason: str | None = None

    def __init__(self, model: Any = None, **options: Any) -> None:
        self.model = model
        self.options = options

    def params(self) -> dict[str, Any]:
        """Hyperparameters (they enter the prediction's cache key and the hp.* columns)."""
        return dict(self.options)

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        raise NotImplementedError


class SkippedBaseline(Baseline):
    """Stands in for an optional baseline that cannot run; it predicts nothing."""

    def __init__(self, name: str, reason: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(None, **(options or {}))
        self.name = name  # type: ignore[misc]  (an instance attribute shadows the ClassVar)
        self.skipped_reason = reason

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        raise HarnessError(f"baseline {self.name} was skipped ({self.skipped_reason}); it has no predictions.")

    def skipped_rows(self, metrics: list, identity: dict[str, Any], hparams: dict[str, Any],
                     provenance: dict[str, Any]) -> pd.DataFrame:
        """One aggregate row per metric: value NaN, ``skipped_reason`` the reason."""
        from harness.store.rows import build_rows

        reason = f"baseline {self.name} skipped: {self.skipped_reason}"
        results = [skipped_result(metric.name, reason, metric.kind) for metric in metrics]
        for metric, result in zip(metrics, results, strict=True):
            result.extra[ENTRY_COLUMN] = getattr(metric, "entry", "") or metric.name
        return build_rows({**identity, "method": self.name}, hparams, provenance, results, [])


def build_baselines(baseline_cfg: dict[str, Any] | None, model: Any) -> list[Baseline]:
    """Instantiate ``baseline:`` entries (name -> options or null), checking their options.

    A baseline that cannot run raises its HarnessError here, unless its entry has
    ``optional: true``; then a :class:`SkippedBaseline` takes its place (logged, and visible in
    the rows through :meth:`SkippedBaseline.skipped_rows`).
    """
    baselines: list[Baseline] = []
    for name, entry in (baseline_cfg or {}).items():
        built = BASELINES.build(name, entry, model)
        baselines.append(built.instance if built.instance is not None
                         else SkippedBaseline(name, built.skipped_reason or "", built.options))
    return baselines
