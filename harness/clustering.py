"""k-means, once for the whole harness (scikit-learn's ``KMeans``), seeded and honest about K.

Used by EmerDiff (clustering low-resolution query features), its naive-upsampling and colour
baselines, and the DAAM k-means baselines. K is never lowered behind the caller's back: asking
for more clusters than there are distinct points is a :class:`DataError` naming the data (a caller
that lowers K on purpose does so itself with :func:`distinct_count` and reports the K it used).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import DataError


def distinct_count(points: np.ndarray) -> int:
    """The number of distinct rows of (N x D) ``points`` (the most clusters k-means can fill)."""
    return len(np.unique(np.asarray(points, dtype=np.float64), axis=0))


def fit_kmeans(points: np.ndarray, clusters: int, seed: int, restarts: int = 10, what: str = "k-means") -> Any:
    """A fitted ``sklearn.cluster.KMeans`` on (N x D) ``points``; DataError when K > distinct points."""
    from sklearn.cluster import KMeans

    points = np.asarray(points, dtype=np.float64)
    if int(clusters) < 1:
        raise DataError(f"{what}: the number of clusters must be >= 1, got {clusters}.")
    if int(clusters) > len(points):
        raise DataError(f"{what}: K={clusters} clusters but only {len(points)} points; use at most {len(points)} clusters.")
    distinct = distinct_count(points)
    if int(clusters) > distinct:
        raise DataError(f"{what}: K={clusters} clusters but the data has only {distinct} distinct points "
                        f"(of {len(points)}); k-means would leave empty clusters. Use at most {distinct} clusters.")
    return KMeans(n_clusters=int(clusters), n_init=int(restarts), random_state=int(seed) % (2**32)).fit(points)


def kmeans_labels(points: np.ndarray, clusters: int, seed: int, restarts: int = 10, fit_points: int | None = None,
                  what: str = "k-means") -> np.ndarray:
    """Cluster labels (int64, length N) of (N x D) ``points``.

    With ``fit_points`` < N the centres are fitted on a seeded subsample of that many points and
    every point is assigned to its nearest centre; otherwise the labels are the fit's own.
    """
    points = np.asarray(points, dtype=np.float64)
    if fit_points is not None and len(points) > fit_points:
        rng = np.random.default_rng(seed)
        model = fit_kmeans(points[rng.choice(len(points), size=fit_points, replace=False)], clusters, seed,
                           restarts, what)
        return model.predict(points).astype(np.int64)
    return fit_kmeans(points, clusters, seed, restarts, what).labels_.astype(np.int64)
