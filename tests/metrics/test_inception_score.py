"""IS: closed form on hand-made probability tables, seeded splits, the evaluator plug-in."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.metrics.features import EvaluatorFeatures
from harness.metrics.inception_score import InceptionScore, inception_score_from_logits
from harness.store.samples import Sample

TABLE = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1],
                  [0.05, 0.05, 0.9], [0.3, 0.6, 0.1]])


def closed_form(p: np.ndarray) -> float:
    """IS = exp(mean_i KL(p(y|x_i) || p(y))), p(y) the mean of the rows."""
    marginal = p.mean(axis=0)
    return float(np.exp((p * (np.log(p) - np.log(marginal))).sum(axis=1).mean()))


def test_one_split_equals_the_closed_form():
    mean, _ = inception_score_from_logits(np.log(TABLE), splits=1)
    assert mean == pytest.approx(closed_form(TABLE), rel=1e-10)
    # one-hot over k classes, equally used: IS = k
    assert inception_score_from_logits(np.log(np.eye(3) * (1 - 3e-12) + 1e-12), splits=1)[0] == pytest.approx(3.0, rel=1e-6)


def test_seeded_splits_equal_the_closed_form_on_the_seeded_permutation():
    seed = 3
    mean, std = inception_score_from_logits(np.log(TABLE), splits=2, seed=seed)
    order = torch.randperm(len(TABLE), generator=torch.Generator().manual_seed(seed)).numpy()
    per_split = [closed_form(part) for part in np.array_split(TABLE[order], 2)]
    assert mean == pytest.approx(np.mean(per_split), rel=1e-10)
    assert std == pytest.approx(np.std(per_split, ddof=1), rel=1e-10)
    assert inception_score_from_logits(np.log(TABLE), splits=2, seed=seed) == (mean, std)  # deterministic
    state = torch.get_rng_state()
    inception_score_from_logits(np.log(TABLE), splits=2, seed=seed)
    assert torch.equal(state, torch.get_rng_state())  # the caller's random state is untouched


class TableEvaluator:
    """A fake toy evaluator: class probabilities looked up by the image's first pixel value."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().flatten(1)[:, :4]

    def class_log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        index = images[:, 0, 0, 0].long() % len(TABLE)
        return torch.log(torch.as_tensor(TABLE[index.numpy()]))

    def judge(self, image: np.ndarray, record: PromptRecord) -> float:
        return float(image[0, 0, 0] % 2 == 0)

    def identity(self) -> str:
        return "table-evaluator-v1"


def test_metric_with_an_evaluator_plugin_equals_the_closed_form(monkeypatch):

    module = types.ModuleType("table_evaluator")
    module.load_evaluator = lambda device="cpu": TableEvaluator()
    monkeypatch.setitem(sys.modules, "table_evaluator", module)
    metric = InceptionScore(features="toy_evaluator", evaluator_module="table_evaluator", splits=1, batch_size=4)
    assert isinstance(metric.extractor, EvaluatorFeatures)
    metric.reset()
    for index in range(len(TABLE)):
        metric.process(PromptRecord(f"r{index}", "p", index), Sample(image=np.full((8, 8, 3), index, np.uint8)))
    [result] = metric.compute()
    assert result.value == pytest.approx(closed_form(TABLE), rel=1e-6)
    assert result.n == len(TABLE) and "table-evaluator-v1" in result.definition and "seed=0" in result.definition


def test_features_without_logits_are_refused():
    with pytest.raises(ConfigError, match="no class logits"):
        InceptionScore(features="inception_torchscript")
