"""KID, PRDC, CMMD, FD-DINOv2 and FID's d/N columns: hand-computed values and missing weights."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from harness.errors import MissingWeightsError
from harness.metrics.feature_sets import cmmd_from_embeddings, kid_from_features, prdc_from_features

REFERENCE = {"real_source": "harness.toy.data:render_pool",
             "real_source_options": {"split": "toy_gen", "n": 12, "workers": 1}}


def real_images(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def unbiased_mmd_polynomial(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b/d + 1)^3, written out pair by pair."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_the_hand_computed_unbiased_mmd():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(6, 4)), rng.normal(loc=0.5, size=(6, 4))
    # a subset as large as the sets is the whole set (in another order): every subset gives the same
    mean, std = kid_from_features(real, fake, subsets=3, subset_size=6)
    assert mean == pytest.approx(unbiased_mmd_polynomial(real, fake), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_of_one_distribution_is_near_zero_and_subsets_are_seeded():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    shifted = rng.normal(loc=1.0, size=(200, 3))
    same = kid_from_features(real, fake, subsets=20, subset_size=50, seed=3)
    assert same == kid_from_features(real, fake, subsets=20, subset_size=50, seed=3)
    assert abs(same[0]) < 3 * same[1] + 1e-3
    assert kid_from_features(real, shifted, subsets=20, subset_size=50)[0] > 10 * abs(same[0])


def test_cmmd_equals_the_hand_computed_value():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]])
    sigma = 0.7

    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * sigma**2))

    expected = (np.mean([k(a, b) for a in x for b in x]) + np.mean([k(a, b) for a in y for b in y])
                - 2 * np.mean([k(a, b) for a in x for b in y])) * 1000
    assert cmmd_from_embeddings(x, y, sigma=sigma) == pytest.approx(expected, rel=1e-12)
    assert cmmd_from_embeddings(x, x) == pytest.approx(0.0, abs=1e-12)


def test_prdc_known_answers():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 3))
    same = prdc_from_features(real, real.copy(), nearest_k=3)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = prdc_from_features(real, real + 100.0, nearest_k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0 and far["coverage"] == 0.0 and far["density"] == 0.0


@pytest.mark.parametrize("metric, option", [("cmmd", "clip-vit-large-patch14-336"), ("fd_dinov2", "dinov2-large")])
def test_missing_weights_stop_before_generating(metric, option, tmp_path, monkeypatch):
    from harness.metrics.base import build_metrics

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    missing = tmp_path / "no_such_model"
    entry = {"weights_path": str(missing), **REFERENCE, "stats_cache": None}
    with pytest.raises(MissingWeightsError) as raised:
        build_metrics({metric: entry})
    message = str(raised.value)
    assert str(missing) in message and option in message and "save_pretrained" in message
    # optional: an empty cell with the reason instead
    [skipped] = build_metrics({metric: {**entry, "optional": True}})
    [row] = skipped.compute()
    assert math.isnan(row.value) and option in row.extra["skipped_reason"]


def test_metric_classes_score_pixels_against_the_reference_set():
    from harness.data.prompts import PromptRecord
    from harness.metrics.base import build_metrics
    from harness.store.samples import Sample

    source = {**REFERENCE, "stats_cache": None, "features": "pixels", "pixel_size": 2}
    metrics = build_metrics({"kid": {**source, "subsets": 4, "subset_size": 6}, "prdc": {**source, "nearest_k": 2},
                             "cmmd": source, "fid": {k: v for k, v in source.items() if k != "stats_cache"}
                             | {"stats_cache": None}})
    record = PromptRecord("r", "x", 0)
    for image in real_images(8, seed=1):
        for metric in metrics:
            metric.process(record, Sample(image=image, meta={}))
    rows = {row.metric: row for metric in metrics for row in metric.compute()}
    assert {"kid", "kid_std", "precision", "recall", "density", "coverage", "cmmd", "fid"} <= set(rows)
    fid = rows["fid"]
    assert fid.extra["feature_dim"] == 12 and fid.n == 8 and fid.extra["n_reference"] == 12
    assert fid.extra["below_2d"] and "compare methods by KID" in fid.definition
    assert rows["kid"].extra["feature_dim"] == 12 and rows["kid"].extra["kid_std"] >= 0
