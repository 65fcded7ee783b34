"""Intervals and small statistics shared by metrics and tables (the one home of interval code).

- proportions (accuracies): :func:`proportion_ci`, binomial (Wilson score; Clopper-Pearson on request);
- per-image means: :func:`mean_ci` (Student-t) clipped into the metric's range;
- means over items that share an image (pairs): :func:`grouped_mean_ci`, a bootstrap over images;
- dataset-level figures: :func:`bootstrap_ci` over images with the figure recomputed per resample;
- paired comparisons: :func:`paired_differences`, per-image differences with the same resamples
  for every pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None
            ) -> tuple[float, float | None, float | None]:
    """Mean with a two-sided Student-t confidence interval (None for fewer than two values),
    clipped into the metric's range ``bounds`` when given (an IoU's mean never leaves [0, 1])."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, None, None
    mean = float(array.mean())
    if array.size < 2:
        return mean, None, None
    sem = float(stats.sem(array))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, df=array.size - 1, loc=mean, scale=sem)
    return (mean, *clip_interval(float(low), float(high), bounds))


def bootstrap_ci(count: int, statistic: Callable[[np.ndarray], float], resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of a dataset-level ``statistic`` over ``count`` items (images).

    ``statistic`` receives an array of item indices (a resample, with repeats) and returns the
    figure recomputed on those items, so figures that are not means (sums of intersections over
    sums of unions, a matching over the summed confusion) get an interval too. Resampling is
    scipy's (``scipy.stats.bootstrap``), seeded, so the interval is reproducible. None, None for
    fewer than two items or ``resamples`` = 0.
    """
    if count < 2 or resamples <= 0:
        return None, None
    indices = np.arange(count)
    if math.isnan(statistic(indices)):  # nothing to score, nothing to resample
        return None, None
    result = stats.bootstrap((indices,), statistic, n_resamples=int(resamples), confidence_level=confidence,
                             method="percentile", vectorized=False, rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)


def bias_corrected_bootstrap_ci(count: int, statistic: Callable[[np.ndarray], float], resamples: int = 1000,
                                confidence: float = 0.95, seed: int = 0,
                                bounds: tuple[float, float] | None = None) -> tuple[float | None, float | None]:
    """Bootstrap interval over ``count`` items (images) for a biased plug-in ``statistic`` (MAD,
    total variation, entropy of a distribution estimated from few draws), that contains it.

    A resample of a small set looks more skewed than the set itself, so the percentile interval of
    such a figure sits beside its estimate (often wholly above it). The bootstrap's estimate of
    that bias, ``b = mean(resampled figures) - estimate``, is subtracted from both percentiles, so
    the interval is centred on the estimate as the resamples are centred on their mean; it is
    widened to the estimate in the rare case the mean lies outside its own percentiles, and
    clipped into ``bounds``. Seeded scipy resampling as :func:`bootstrap_ci`; None, None for fewer
    than two items.
    """
    if count < 2 or resamples <= 0:
        return None, None
    indices = np.arange(count)
    estimate = statistic(indices)
    if math.isnan(estimate):
        return None, None
    result = stats.bootstrap((indices,), statistic, n_resamples=int(resamples), confidence_level=confidence,
                             method="percentile", vectorized=False, rng=np.random.default_rng(seed))
    draws = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return None, None
    bias = float(draws.mean()) - float(estimate)
    low, high = float(result.confidence_interval.low) - bias, float(result.confidence_interval.high) - bias
    low, high = min(low, float(estimate)), max(high, float(estimate))
    return clip_interval(low, high, bounds)


def clip_interval(low: float | None, high: float | None, bounds: tuple[float, float] | None
                  ) -> tuple[float | None, float | None]:
    """An interval clipped into a metric's range ``bounds`` (None: unbounded)."""
    if bounds is None or low is None or high is None:
        return low, high
    lo, hi = bounds
    return float(min(max(low, lo), hi)), float(min(max(high, lo), hi))


def proportion_ci(successes: int, n: int, confidence: float = 0.95, method: str = "wilson"
                  ) -> tuple[float | None, float | None]:
    """Binomial interval of ``successes`` out of ``n``: Wilson score (default) or Clopper-Pearson ("exact").

    scipy's ``binomtest(...).proportion_ci`` (no hand-written formula); always inside [0, 1].
    None, None when ``n`` is 0.
    """
    if n <= 0:
        return None, None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    interval = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method=method)
    return float(interval.low), float(interval.high)


#: How :func:`proportion_ci` names its methods in metric definitions.
PROPORTION_CI_NAMES = {"wilson": "Wilson score", "exact": "Clopper-Pearson"}


def grouped_mean_ci(values: Sequence[float], groups: Sequence[object], resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0, bounds: tuple[float, float] | None = None
                    ) -> tuple[float, float | None, float | None]:
    """Mean over items (e.g. (image, noun) pairs) with a bootstrap interval that resamples groups (images).

    Items sharing a group (pairs of one image) are not independent, so the resampling unit is
    the group: a resample draws groups with replacement and takes the mean over all their
    items (the same estimator as the point figure). Percentile interval (:func:`bootstrap_ci`,
    scipy, seeded), clipped into ``bounds``.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, None, None
    if len(groups) != array.size:
        raise ValueError(f"{array.size} values but {len(groups)} group labels")
    _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    sums = np.bincount(inverse, weights=array)
    counts = np.bincount(inverse).astype(np.float64)
    mean = float(array.mean())
    low, high = bootstrap_ci(len(sums), lambda idx: float(sums[idx].sum() / counts[idx].sum()), resamples,
                             confidence, seed)
    return (mean, *clip_interval(low, high, bounds))


def paired_differences(per_image: dict[str, dict[str, float]], reference: str, resamples: int = 1000,
                       confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, float | int | None]]:
    """Paired difference of every predictor against ``reference`` over the images they share.

    ``per_image``: predictor -> {image id -> that image's value}. For each other predictor,
    the difference is the mean over the images both scored of (its value - the reference's),
    with a percentile bootstrap interval over those images. The resamples are the same for
    every predictor (one seeded draw of image indices over the reference's images; each pair
    uses the resampled images it shares), so intervals of different pairs are comparable.
    Returns predictor -> {difference, ci_low, ci_high, n} (n = shared images; 0 = nothing shared).
    """
    if reference not in per_image:
        raise ValueError(f"no values for the reference {reference!r}")
    images = sorted(per_image[reference])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(images), size=(int(resamples), len(images))) if images and resamples > 0 else None
    alpha = (1 - confidence) / 2
    out: dict[str, dict[str, float | int | None]] = {}
    for name, values in per_image.items():
        if name == reference:
            continue
        shared = np.array([image in values for image in images])
        n = int(shared.sum())
        if n == 0:
            out[name] = {"difference": None, "ci_low": None, "ci_high": None, "n": 0}
            continue
        diff = np.array([values[image] - per_image[reference][image] if image in values else 0.0 for image in images])
        low = high = None
        if draws is not None and n >= 2:
            weights = shared[draws]  # the reference's resample, restricted to the shared images
            sums = (diff[draws] * weights).sum(axis=1)
            counts = weights.sum(axis=1)
            means = sums[counts > 0] / counts[counts > 0]
            low, high = (float(q) for q in np.quantile(means, [alpha, 1 - alpha]))
        out[name] = {"difference": float(diff[shared].mean()), "ci_low": low, "ci_high": high, "n": n}
    return out
