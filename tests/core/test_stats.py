"""Intervals that fit their quantity: exact small cases and independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.stats import grouped_mean_ci, mean_ci, paired_differences, proportion_ci


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval from its textbook formula (the independent reference)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(3, 8), (0, 8), (8, 8), (74, 87)])
def test_wilson_matches_the_formula_and_stays_in_0_1(k, n):
    low, high = proportion_ci(k, n)
    assert (low, high) == pytest.approx(_wilson(k, n))
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_clopper_pearson_zero_successes_is_the_exact_bound():
    # P(X = 0) = (1 - p)^n = 0.025 at the upper bound
    low, high = proportion_ci(0, 8, method="exact")
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 8))


def test_t_interval_of_a_small_proportion_sample_is_clipped_into_range():
    # the example: 3 of 8, whose Student-t interval was printed as [-0.058, 0.808]
    values = [0, 0, 0, 0, 0, 1, 1, 1]
    raw_mean, raw_low, raw_high = mean_ci(values)
    assert raw_low == pytest.approx(-0.0577, abs=1e-3) and raw_high == pytest.approx(0.8077, abs=1e-3)
    assert mean_ci(values, bounds=(0.0, 1.0)) == (0.375, 0.0, pytest.approx(raw_high))
    inside = [0.4, 0.5, 0.6, 0.5]
    assert mean_ci(inside, bounds=(0.0, 1.0)) == mean_ci(inside)  # inside the range: unchanged


def test_grouped_interval_resamples_images_not_pairs():
    per_image = [0.1, 0.9, 0.4, 0.6, 0.2, 0.8, 0.5, 0.3]
    images = [f"img{i}" for i in range(len(per_image))]
    once = grouped_mean_ci(per_image, images, seed=3)
    # three identical pairs per image: resampling pairs would narrow the interval, resampling
    # images gives exactly the same interval as one value per image
    thrice = grouped_mean_ci(np.repeat(per_image, 3), np.repeat(images, 3), seed=3)
    assert thrice == pytest.approx(once)
    pairs_as_units = grouped_mean_ci(np.repeat(per_image, 3), range(24), seed=3)
    assert pairs_as_units[2] - pairs_as_units[1] < 0.8 * (once[2] - once[1])


def test_paired_differences_exact_cases():
    ref = {"a": 0.5, "b": 0.7, "c": 0.9, "d": 0.2}
    shifted = {k: v + 0.1 for k, v in ref.items()}
    twin = dict(shifted)
    partial = {"a": 0.0, "b": 1.0}
    elsewhere = {"x": 0.3, "y": 0.4}
    out = paired_differences({"ref": ref, "shifted": shifted, "twin": twin, "partial": partial,
                              "elsewhere": elsewhere}, "ref", seed=0)
    # a constant per-image difference has a zero-width interval at that difference
    assert out["shifted"]["difference"] == pytest.approx(0.1)
    assert out["shifted"]["ci_low"] == pytest.approx(0.1) and out["shifted"]["ci_high"] == pytest.approx(0.1)
    assert out["shifted"]["n"] == 4
    # the same resamples for every pair: identical values give identical intervals
    assert out["twin"] == out["shifted"]
    # only shared images are compared
    assert out["partial"]["n"] == 2 and out["partial"]["difference"] == pytest.approx(((0 - .5) + (1 - .7)) / 2)
    assert out["partial"]["ci_low"] <= out["partial"]["difference"] <= out["partial"]["ci_high"]
    assert out["elsewhere"] == {"difference": None, "ci_low": None, "ci_high": None, "n": 0}


def test_paired_interval_is_the_bootstrap_of_the_mean_difference():
    rng = np.random.default_rng(1)
    base = rng.random(40)
    other = base + rng.normal(0.05, 0.1, 40)
    ref = {f"i{k}": v for k, v in enumerate(base)}
    out = paired_differences({"ref": ref, "other": {f"i{k}": v for k, v in enumerate(other)}}, "ref", seed=7)["other"]
    # independent reference: the same draws (numpy's integers over the reference's sorted images)
    images = sorted(ref)
    diff = np.array([other[int(i[1:])] - base[int(i[1:])] for i in images])
    draws = np.random.default_rng(7).integers(0, 40, size=(1000, 40))
    expected = np.quantile(diff[draws].mean(axis=1), [0.025, 0.975])
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(expected))
    assert out["difference"] == pytest.approx(diff.mean())


class _BrightJudge:
    """A judge whose answer depends on the image: right when the image is bright."""

    def judge(self, image, record):
        return float(np.asarray(image, dtype=np.float64).mean() > 127)


def test_gen_accuracy_reports_a_wilson_interval_inside_0_1():
    from harness.data.prompts import PromptRecord
    from harness.metrics.gen_accuracy import GenAccuracy
    from harness.store.samples import Sample

    metric = GenAccuracy(evaluator=_BrightJudge())
    metric.reset()
    for k in range(8):  # 3 bright images of 8: the 0.375 case
        image = np.full((4, 4, 3), 255 if k < 3 else 0, np.uint8)
        assert metric.process(PromptRecord(f"r{k}", "x", k, {}), Sample(image=image)) == {"gen_accuracy": float(k < 3)}
    (result,) = metric.compute()
    assert result.value == 0.375 and result.n == 8
    assert (result.ci_low, result.ci_high) == pytest.approx(_wilson(3, 8))
    assert result.ci_low > 0 and "Wilson" in result.definition


def test_bias_corrected_interval_contains_a_biased_plug_in_estimate():
    from harness.metrics.bias import mad
    from harness.stats import bias_corrected_bootstrap_ci, bootstrap_ci

    # 10 prompt groups of 3 images, one draw of a 3-way attribute each, every group exactly uniform:
    # the plug-in MAD (mean over groups) is 0, and a resample of so few images per group always
    # looks skewed, so the plain percentile interval lies wholly above the estimate
    groups = np.repeat(np.arange(10), 3)
    labels = np.tile([0, 1, 2], 10)

    def statistic(indices: np.ndarray) -> float:
        values = [mad(np.bincount(labels[indices][groups[indices] == g], minlength=3)
                      / max(1, int((groups[indices] == g).sum())))
                  for g in np.unique(groups[indices])]
        return float(np.mean(values))

    estimate = statistic(np.arange(len(labels)))
    low, high = bootstrap_ci(len(labels), statistic, resamples=2000)
    assert estimate < low, "the plain percentile interval excludes its own estimate (the reason for the fix)"
    low, high = bias_corrected_bootstrap_ci(len(labels), statistic, resamples=2000, bounds=(0.0, 1.0))
    assert 0.0 <= low <= estimate <= high <= 1.0
    # shifted by the bootstrap's bias estimate: the width is the percentile interval's (before clipping)
    plain = bootstrap_ci(len(labels), statistic, resamples=2000)
    assert high - low <= plain[1] - plain[0] + 1e-12


def test_per_word_figures_resample_images_not_pairs():
    from harness.metrics.daam_analyses import PerImage, _t_result

    # 6 images with 5 words each; the words of one image have one value (fully correlated)
    values = PerImage()
    for image, value in enumerate([0.1, 0.9, 0.2, 0.8, 0.3, 0.7]):
        for _ in range(5):
            values.add(value, f"img{image}")
    result = _t_result("daam_pos", values, "mean over (image, word) pairs; 95% t-CI")
    expected = grouped_mean_ci(list(values), values.images, bounds=(0.0, 1.0))
    assert (result.value, result.ci_low, result.ci_high) == pytest.approx(expected)
    assert "cluster bootstrap over images" in result.definition and "t-CI" not in result.definition
    # treating the 30 pairs as independent understates the spread: the t interval is narrower
    _, t_low, t_high = mean_ci(list(values), bounds=(0.0, 1.0))
    assert result.ci_high - result.ci_low > 1.5 * (t_high - t_low)


def test_times_are_never_negative_and_zero_width_intervals_are_marked():
    import pandas as pd

    from harness.metrics.cost import SecondsPerImage
    from harness.report.table import _format_value
    from harness.store.rows import CI_NOTE_COLUMN, MetricResult, build_rows

    metric = SecondsPerImage()
    metric.reset()
    metric.values = [0.1, 0.1, 0.1, 12.0]  # one slow first image: a t interval would reach below 0
    (seconds,) = [r for r in metric.compute() if r.metric == "seconds_per_image"]
    assert seconds.ci_low == 0.0 and seconds.ci_high > seconds.value
    rows = build_rows({"method": "m"}, {}, {}, [MetricResult("acc", 1.0, 5, 1.0, 1.0), seconds], [])
    assert rows[CI_NOTE_COLUMN].iloc[0].startswith("zero-width interval") and pd.isna(rows[CI_NOTE_COLUMN].iloc[1])
    assert _format_value(rows.iloc[0]) == "1 [zero width]"


def test_every_empty_aggregate_cell_says_why():
    from harness.store.rows import MetricResult, build_rows

    rows = build_rows({"method": "m"}, {}, {}, [MetricResult("fid", float("nan"), 0),
                                                 MetricResult("is", float("nan"), 12),
                                                 MetricResult("clip", float("nan"), 0, extra={"skipped_reason": "no CLIP"}),
                                                 MetricResult("acc", 0.5, 4)], [])
    assert list(rows["skipped_reason"].iloc[:3]) == ["no value: fid had nothing to score",
                                                     "no finite value from 12 scored item(s)", "no CLIP"]
    assert rows["skipped_reason"].isna().iloc[3]
