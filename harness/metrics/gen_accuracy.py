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
from harness.errors import MissingWeightsError
from harness.metrics.base import Metric
from harness.metrics.features import DEFAULT_EVALUATOR_MODULE, load_evaluator
from harness.metrics.stats import mean_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample


class GenAccuracy(Metric):
    """Mean over images of the evaluator's judgement (1 = what was asked is there); 95% t-CI."""

    name = "gen_accuracy"

    def __init__(self, evaluator_module: str = DEFAULT_EVALUATOR_MODULE, device: str = "cpu",
                 weights: str | None = None, evaluator: Any | None = None) -> None:
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
        self.evaluator  # noqa: B018  (loads it, or raises what is missing)

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
        mean, low, high = mean_ci(self.values)
        identity = self.evaluator.identity() if hasattr(self.evaluator, "identity") else self.evaluator_module
        return [MetricResult(self.name, mean, len(self.values), low, high,
                             definition=f"fraction of images judged to show what the prompt asked for, by {identity}; 95% t-CI")]
