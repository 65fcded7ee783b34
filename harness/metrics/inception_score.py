"""``inception_score``: IS with seeded splits, on Inception logits or a classifier's probabilities.

torchmetrics' ``InceptionScore`` shuffles the images (``torch.randperm`` on the global RNG)
before cutting them into ``splits`` groups; we run its ``compute`` inside
``torch.random.fork_rng`` seeded with ``seed``, so the same images always give the same score and
the caller's random state is untouched. IS per split = exp(mean_i KL(p(y|x_i) || p(y))), reported
as the mean over splits (row ``inception_score``) and their standard deviation
(``inception_score_std``).

Class probabilities come from ``features=inception_fidelity`` (the standard 1008-way
``logits_unbiased`` of torch-fidelity's weights) or ``features=toy_evaluator`` (the toy
evaluator's class log-probabilities). The offline TorchScript Inception has no logits.
"""

from __future__ import annotations

import logging
import warnings
from functools import cached_property

import numpy as np
import torch

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.metrics.base import Metric
from harness.metrics.features import FeatureExtractor, InceptionFidelity, build_extractor, images_to_tensor
from harness.store.rows import MetricResult
from harness.store.samples import Sample

log = logging.getLogger(__name__)


class _Passthrough(torch.nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


def inception_score_from_logits(logits: np.ndarray | torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over splits of torchmetrics' IS for given logits (N, C), with seeded shuffling.

    Log-probabilities are valid logits (softmax(log p) = p), so a classifier's probabilities
    ``p`` are scored as ``inception_score_from_logits(np.log(p))``.
    """
    from torchmetrics.image.inception import InceptionScore as TorchmetricsIS

    with warnings.catch_warnings():  # "will save all extracted features": that is the point here
        warnings.simplefilter("ignore", UserWarning)
        metric = TorchmetricsIS(feature=_Passthrough(), splits=int(splits))
    metric.update(torch.as_tensor(np.asarray(logits), dtype=torch.float64))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # std of a single split
        torch.manual_seed(int(seed))
        mean, std = metric.compute()
    return float(mean), float(std)


class InceptionScore(Metric):
    """IS of the run's images (one aggregate row, plus its split standard deviation)."""

    name = "inception_score"

    def __init__(self, features: str = "inception_fidelity", weights_path: str | None = None,
                 antialias: bool = True, splits: int = 10, seed: int = 0, batch_size: int = 16,
                 device: str = "auto", evaluator_module: str = "harness.toy.evaluator") -> None:
        self.features_name = features
        self.extractor_options = {"weights_path": weights_path, "antialias": antialias, "device": device,
                                  "evaluator_module": evaluator_module}
        self.splits = int(splits)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.antialias = bool(antialias)
        if features == "inception_fidelity":  # a missing weight file stops the run before sampling
            InceptionFidelity.locate(weights_path)
        elif features == "toy_evaluator":
            self.extractor  # noqa: B018 - small: load it now so a missing evaluator fails before sampling
        elif features in ("inception_torchscript", "pixels"):
            raise ConfigError(f"metric.inception_score: features={features} has no class logits; use "
                              "inception_fidelity (torch-fidelity's weights file) or toy_evaluator.")

    @cached_property
    def extractor(self) -> FeatureExtractor:
        """Built on first use (a feature extractor may load weights)."""
        extractor = build_extractor(self.features_name, **self.extractor_options)
        if not extractor.has_logits:
            extractor.logits(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))  # raises the clear error
        return extractor

    def reset(self) -> None:
        self.pending: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []

    def process(self, record: PromptRecord, sample: Sample) -> None:
        if sample.image is None:
            return None
        if self.pending and sample.image.shape != self.pending[0].shape:
            self._flush()
        self.pending.append(sample.image)
        if len(self.pending) >= self.batch_size:
            self._flush()
        return None

    def _flush(self) -> None:
        if self.pending:
            self.logits.append(self.extractor.logits(images_to_tensor(self.pending)).double().numpy())
            self.pending = []

    def compute(self) -> list[MetricResult]:
        self._flush()
        if not self.logits:
            return self.nothing_to_score("no sample had an image")
        logits = np.concatenate(self.logits)
        splits = min(self.splits, len(logits))
        if splits < self.splits:
            log.warning("inception_score: %d images < %d splits; using %d split(s).", len(logits), self.splits, splits)
        mean, std = inception_score_from_logits(logits, splits, self.seed)
        definition = (f"IS [features={self.features_name} antialias={self.antialias} splits={splits} seed={self.seed}] "
                      f"(torchmetrics InceptionScore), mean over {splits} splits shuffled with seed {self.seed}; "
                      f"class probabilities from {self.extractor.identity()}, resize {self.extractor.resize_description()}")
        results = [MetricResult(self.name, mean, len(logits), definition=definition)]
        if splits > 1:
            results.append(MetricResult(f"{self.name}_std", std, len(logits),
                                        definition=f"standard deviation over splits of {definition}"))
        return results
