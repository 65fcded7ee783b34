"""Ratings as result rows (the columns of :mod:`harness.store.rows`), readable by ``harness table``.

* ``mean_opinion_score``: per group value (``item`` and ``hp.<group key>`` = e.g. the part of
  speech, so ``harness table`` shows one line per value) and over all items (``"(all)"``): each item's score is the mean of its raters' scores (skips left out), the
  figure is the mean over items, and the 95% interval a percentile bootstrap over items (scipy,
  seeded, 2,000 resamples; none when a group has a single item). ``n`` = items.
* ``krippendorff_alpha``: Krippendorff's alpha for ordinal data over every item rated by at
  least two raters, when there are at least two raters (``krippendorff`` package). ``n`` = items
  with two or more ratings.
* ``ratings``: the number of counting (rater, item) scores, and ``raters``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.rating.task import RATINGS_FILE, Task, latest_ratings, load_task, read_ratings
from harness.store.rows import MetricResult, build_rows, git_sha, library_versions, write_rows

#: The item (and hp.<group> value) of figures over every item.
ALL = "(all)"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MOS_DEFINITION = ("mean over items of the item's mean rater score (1-5, skips left out); "
                  "95% percentile bootstrap CI over items")
ALPHA_DEFINITION = "Krippendorff's alpha, ordinal metric, over items rated by >= 2 raters (skips are missing values)"


def score_matrix(task: Task, entries: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """(raters, matrix raters x items) of the counting scores, nan where missing or skipped."""
    latest = latest_ratings(entries)
    raters = sorted({rater for rater, _ in latest})
    matrix = np.full((len(raters), len(task.items)), np.nan)
    for (rater, item_id), entry in latest.items():
        if entry.get("score") is not None and item_id in task.index:
            matrix[raters.index(rater), task.index[item_id]] = float(entry["score"])
    return raters, matrix


def ordinal_alpha(matrix: np.ndarray) -> float:
    """Krippendorff's alpha (ordinal) of a raters x items matrix with nan for missing values."""
    import krippendorff

    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal",
                                    value_domain=[1, 2, 3, 4, 5]))


def bootstrap_mean_ci(values: np.ndarray) -> tuple[float | None, float | None]:
    """95% percentile bootstrap interval of the mean (None, None for fewer than two values or no spread)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.all(values == values[0]):
        return None, None
    result = stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=BOOTSTRAP_RESAMPLES,
                             method="percentile", random_state=np.random.default_rng(BOOTSTRAP_SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def rating_rows(task_path: str | Path, ratings_path: str | Path | None = None) -> pd.DataFrame:
    """The result rows of a task's ratings (aggregates only)."""
    task = load_task(task_path)
    path = Path(ratings_path) if ratings_path is not None else task.folder / RATINGS_FILE
    entries = read_ratings(path)
    raters, matrix = score_matrix(task, entries)
    item_means = np.full(len(task.items), np.nan)
    with np.errstate(all="ignore"):
        rated = ~np.all(np.isnan(matrix), axis=0) if len(raters) else np.zeros(len(task.items), bool)
        if rated.any():
            item_means[rated] = np.nanmean(matrix[:, rated], axis=0)
    results: list[MetricResult] = []
    group_keys = sorted({key for item in task.items for key in item.group})

    def mos(item_label: str, positions: list[int], extra: dict[str, Any]) -> None:
        values = item_means[positions]
        values = values[~np.isnan(values)]
        if len(values) == 0:
            return
        low, high = bootstrap_mean_ci(values)
        results.append(MetricResult("mean_opinion_score", float(values.mean()), len(values), low, high,
                                    definition=MOS_DEFINITION, extra={"item": item_label, **extra}))

    overall = {f"hp.{key}": ALL for key in group_keys}
    mos(ALL, list(range(len(task.items))), overall)
    for key in group_keys:
        values = sorted({item.group[key] for item in task.items if key in item.group})
        for value in values:
            positions = [i for i, item in enumerate(task.items) if item.group.get(key) == value]
            mos(value, positions, {f"hp.{key}": value})
    scored = int((~np.isnan(matrix)).sum())
    results.append(MetricResult("ratings", scored, scored, kind="quality",
                                definition="counting (rater, item) scores (skips left out)", extra={"item": ALL, **overall}))
    results.append(MetricResult("raters", len(raters), len(raters), definition="raters with at least one answer",
                                extra={"item": ALL, **overall}))
    if len(raters) >= 2:
        shared = (~np.isnan(matrix)).sum(axis=0) >= 2
        if shared.any():
            with np.errstate(all="ignore"):
                alpha = ordinal_alpha(matrix[:, shared])
            # Undefined (nan) when the shared ratings hold a single value: no expected disagreement.
            if np.isfinite(alpha):
                    results.append(MetricResult("krippendorff_alpha", alpha, int(shared.sum()),
                                            definition=ALPHA_DEFINITION, extra={"item": ALL, **overall}))
    identity = {"experiment": f"rating:{task.name}", "model": "", "dataset": task.name, "split": "",
                "method": "human_rating", "seed": 0}
    provenance = {"git_sha": git_sha(), "config_hash": "", "versions": library_versions(), "run_dir": str(task.folder)}
    return build_rows(identity, {}, provenance, results, [])


def export_rows(task_path: str | Path, ratings_path: str | Path | None = None) -> Path:
    """Write the ratings' ``rows.parquet`` and ``summary.csv`` into the task folder; returns the rows file."""
    task = load_task(task_path)
    rows_path, _ = write_rows(rating_rows(task_path, ratings_path), task.folder)
    return rows_path


def refresh_task_rows(paths: list[str]) -> None:
    """For ``harness table``: every given folder that is a rating task with ratings gets fresh rows."""
    for path in paths:
        folder = Path(path)
        if (folder / "task.json").is_file() and (folder / RATINGS_FILE).is_file():
            export_rows(folder)
