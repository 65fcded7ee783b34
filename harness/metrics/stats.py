"""Small statistics shared by metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

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
