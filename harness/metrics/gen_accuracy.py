"""``gen_accuracy``: does the image show what the prompt asked for? Judged by an evaluator plug-in.

The judge is the toy world's evaluator (``harness.toy.evaluator``, through
:class:`harness.metrics.features.ToyEvaluatorAdapter`; or any module whose
``load_evaluator(device=...)`` returns an object with ``judge(image, record) -> float``). When
the module or its weights are missing the run stops before generating, with a message naming
what is missing; ``metric.gen_accuracy.optional=true`` turns that into a row with an empty value
and the reason (``skipped_reason``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, MissingWeightsError
from harness.metrics.base import Metric
from harness.metrics.features import DEFAULT_EVALUATOR_MODULE, evaluator_available, load_evaluator
from harness.stats import PROPORTION_CI_NAMES, mean_ci, proportion_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample


class GenAccuracy(Metric):
    """Fraction of images the evaluator judges right (1 = what was asked is there); 95% Wilson interval.

    A proportion gets a binomial interval (``interval: wilson`` or ``exact`` = Clopper-Pearson),
    which never leaves [0, 1]. A judge that returns fractional scores gets a Student-t interval
    clipped to [0, 1] instead, and the definition says so."""

    name = "gen_accuracy"

    def __init__(self, evaluator_module: str = DEFAULT_EVALUATOR_MODULE, device: str = "cpu",
                 weights: str | None = None, evaluator: Any | None = None, interval: str = "wilson") -> None:
        if interval not in PROPORTION_CI_NAMES:
            raise ConfigError(f"metric.{self.name}.interval must be one of {sorted(PROPORTION_CI_NAMES)}, got {interval!r}.")
        self.interval = interval
        self.evaluator_module = evaluator_module
        self.weights = weights
        self.device = device
        if evaluator is not None:  # given directly: the cached property is already answered
            self.__dict__["evaluator"] = evaluator

    @cached_property
    def evaluator(self) -> Any:
        """The judge, loaded once; a HarnessError saying what is missing when it cannot be loaded."""
        evaluator = load_evaluator(self.evaluator_module, self.device, self.weights)  # MissingWeightsError
        if evaluator is None:
            raise MissingWeightsError(f"gen_accuracy cannot run: the evaluator module {self.evaluator_module!r} does not "
                              "exist. Set metric.gen_accuracy.evaluator_module=<module with load_evaluator(device=...)>, "
                              "or mark the metric optional (metric.gen_accuracy.optional=true).")
        return evaluator

    def check_available(self) -> None:
        """Find the judge without loading it (a missing module or weight file stops the run here)."""
        if "evaluator" in self.__dict__:
            return
        if not evaluator_available(self.evaluator_module, self.weights):
            self.evaluator  # noqa: B018  (raises the message for a missing module)

    def reset(self) -> None:
        self.values: list[float] = []

    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float] | None:
        if sample.image is None:
            return None
        value = float(self.evaluator.judge(sample.image, record))
        self.values.append(value)
        return {self.name: value}

    def empty_reason(self) -> str:
        return "no sample had an image to judge"

    def compute(self) -> list[MetricResult]:
        if not self.values:
            return self.nothing_to_score(self.empty_reason())
        identity = self.evaluator.identity() if hasattr(self.evaluator, "identity") else self.evaluator_module
        if all(value in (0.0, 1.0) for value in self.values):
            successes = int(sum(self.values))
            mean = successes / len(self.values)
            low, high = proportion_ci(successes, len(self.values), method=self.interval)
            interval = f"95% {PROPORTION_CI_NAMES[self.interval]} binomial interval"
        else:
            mean, low, high = mean_ci(self.values, bounds=(0.0, 1.0))
            interval = "95% Student-t interval over images clipped to [0, 1] (fractional judgements)"
        return [MetricResult(self.name, mean, len(self.values), low, high,
                             definition=f"fraction of images judged to show what the prompt asked for, by {identity}; "
                                        f"{interval}")]
