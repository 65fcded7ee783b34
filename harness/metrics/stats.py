"""Small statistics shared by metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean with a two-sided Student-t confidence interval (None for fewer than two values)."""
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
    return mean, float(low), float(high)


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
