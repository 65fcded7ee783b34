"""The baseline interface.

A baseline reads a finished sample (the image a method generated, or a given image) and
predicts the same arrays the method produces (e.g. ``heatmap:<word>`` maps or ``labels``), so
the same metrics score both. Predictions are cached like samples; rows name the baseline in
the ``method`` column.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, ClassVar

from harness.data.prompts import PromptRecord
from harness.errors import BaselineUnavailableError, ConfigError
from harness.registry import BASELINES
from harness.store.samples import Sample

log = logging.getLogger(__name__)


class Baseline:
    """Base class: subclasses set ``name``/``version`` and implement :meth:`predict`."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"

    def __init__(self, model: Any = None, **options: Any) -> None:
        self.model = model
        self.options = options

    def params(self) -> dict[str, Any]:
        """Hyperparameters (they enter the prediction's cache key and the hp.* columns)."""
        return dict(self.options)

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        raise NotImplementedError


def build_baselines(baseline_cfg: dict[str, Any] | None, model: Any) -> list[Baseline]:
    """Instantiate ``baseline:`` entries (name -> options or null), checking their options."""
    baselines = []
    for name, options in (baseline_cfg or {}).items():
        baseline_class = BASELINES.get(name)
        options = dict(options or {})
        try:
            inspect.signature(baseline_class).bind(model, **options)
        except TypeError:
            accepted = [p for p in inspect.signature(baseline_class).parameters
                        if p not in ("self", "model", "args", "kwargs", "options")]
            raise ConfigError(f"baseline.{name} got options {sorted(options)}; it accepts {accepted or 'none'}.") from None
        try:
            baselines.append(baseline_class(model, **options))
        except BaselineUnavailableError as error:
            # Optional baselines (e.g. detectron2's) are left out, not fatal: the rest still runs.
            log.warning("baseline %s skipped: %s", name, error)
    return baselines
