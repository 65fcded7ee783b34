"""Ratings as result rows (the columns of :mod:`harness.store.rows`), readable by ``harness table``.

Gold items (attention checks) never enter the figures; the task's exclusion rule decides which
raters they exclude. Every figure is given over all raters (``hp.raters = all``) and, when the
task declares an exclusion rule, over the raters it keeps (``hp.raters = kept``).

* ``mean_opinion_score``: per group value (``item`` and ``hp.<group key>`` = e.g. the part of
  speech, so ``harness table`` shows one line per value) and over all study items (``"(all)"``):
  each item's score is the mean of its raters' scores (skips left out), the figure is the mean
  over items, and the 95% interval a percentile bootstrap over items (scipy, seeded, 2,000
  resamples; none when a group has a single item). ``n`` = items.
* ``krippendorff_alpha``: Krippendorff's alpha for ordinal data over every study item rated by at
  least two raters, when there are at least two raters (``krippendorff`` package), with a 95%
  percentile bootstrap interval over those items. ``n`` = items with two or more ratings.
* ``ratings``, ``raters``, ``excluded_raters``: counts.

:func:`export_rows` also writes ``ratings.csv`` (every counting answer, with its gold outcome)
and ``raters.csv`` (per rater: answers, skips, gold answered and failed, excluded or kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import DataError
from harness.rating.task import (
    RATINGS_FILE,
    Task,
    excluded_raters,
    gold_failures,
    latest_ratings,
    load_task,
    read_ratings,
)
from harness.store.rows import MetricResult, build_rows, git_sha, library_versions, write_rows

#: The item (and hp.<group> value) of figures over every item.
ALL = "(all)"
BOOTSTRAP_RESAMPLES = 2000
ALPHA_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
MOS_DEFINITION = ("mean over items of the item's mean rater score (1-5, skips left out); "
                  "95% percentile bootstrap CI over items")
ALPHA_DEFINITION = ("Krippendorff's alpha, ordinal metric, over study items rated by >= 2 raters (skips are missing "
                    "values); 95% percentile bootstrap CI over items")


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


def alpha_bootstrap_ci(matrix: np.ndarray) -> tuple[float | None, float | None]:
    """95% percentile bootstrap interval of ordinal alpha, resampling items (columns) with replacement.

    By hand rather than scipy.stats.bootstrap: a resample whose ratings hold a single value has no
    defined alpha and is left out, which scipy's bootstrap cannot do. (None, None) when fewer than
    two items or fewer than half of the resamples are defined.
    """
    items = matrix.shape[1]
    if items < 2:
        return None, None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = []
    with np.errstate(all="ignore"):
        for _ in range(ALPHA_RESAMPLES):
            resample = matrix[:, rng.integers(0, items, items)]
            try:
                value = ordinal_alpha(resample)
            except ValueError:  # krippendorff refuses a resample with a single value
                continue
            if np.isfinite(value):
                values.append(value)
    if len(values) < ALPHA_RESAMPLES // 2:
        return None, None
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def checked_entries(task: Task, path: Path) -> list[dict[str, Any]]:
    """The ratings file's lines, refused (DataError) when any was given under another study design."""
    entries = read_ratings(path)
    design = task.design_hash
    other = [e for e in entries if e.get("design") not in (None, design)]
    if other:
        raise DataError(f"{len(other)} rating(s) in {path} were given under another study design: task.json's gold "
                        "items or exclusion rule changed after the study began. The rule must be fixed before the "
                        "study; restore task.json as it was, or start a new ratings file (--ratings).")
    return entries


def rating_rows(task_path: str | Path, ratings_path: str | Path | None = None) -> pd.DataFrame:
    """The result rows of a task's ratings (aggregates only)."""
    task = load_task(task_path)
    path = Path(ratings_path) if ratings_path is not None else task.folder / RATINGS_FILE
    entries = checked_entries(task, path)
    raters, matrix = score_matrix(task, entries)
    excluded = excluded_raters(task, latest_ratings(entries))
    study = [i for i, item in enumerate(task.items) if item.gold is None]
    results: list[MetricResult] = []
    group_keys = sorted({key for item in task.items for key in item.group})
    overall = {f"hp.{key}": ALL for key in group_keys}
    subsets = [("all", list(range(len(raters))))]
    if task.exclusion:
        subsets.append(("kept", [r for r, rater in enumerate(raters) if rater not in excluded]))
    for subset, rows_of_raters in subsets:
        results += _figures(task, matrix[rows_of_raters][:, study], [task.items[i] for i in study], group_keys,
                            {"hp.raters": subset})
    results.append(MetricResult("excluded_raters", len(excluded), len(raters), kind="quality",
                                definition=f"raters excluded by the task's rule {task.exclusion or '(none declared)'}",
                                extra={"item": ALL, **overall, "hp.raters": "all"}))
    identity = {"experiment": f"rating:{task.name}", "model": "", "dataset": task.name, "split": "",
                "method": "human_rating", "seed": 0}
    provenance = {"git_sha": git_sha(), "config_hash": task.design_hash, "versions": library_versions(),
                  "run_dir": str(task.folder)}
    return build_rows(identity, {}, provenance, results, [])


def _figures(task: Task, matrix: np.ndarray, items: list, group_keys: list[str],
             extra: dict[str, Any]) -> list[MetricResult]:
    """MOS per group and overall, counts and alpha of one raters x study-items matrix."""
    results: list[MetricResult] = []
    raters = matrix.shape[0]
    item_means = np.full(len(items), np.nan)
    with np.errstate(all="ignore"):
        rated = ~np.all(np.isnan(matrix), axis=0) if raters else np.zeros(len(items), bool)
        if rated.any():
            item_means[rated] = np.nanmean(matrix[:, rated], axis=0)

    def mos(item_label: str, positions: list[int], labels: dict[str, Any]) -> None:
        values = item_means[positions]
        values = values[~np.isnan(values)]
        if len(values) == 0:
            return
        low, high = bootstrap_mean_ci(values)
        results.append(MetricResult("mean_opinion_score", float(values.mean()), len(values), low, high,
                                    definition=MOS_DEFINITION, extra={"item": item_label, **labels, **extra}))

    overall = {f"hp.{key}": ALL for key in group_keys}
    mos(ALL, list(range(len(items))), overall)
    for key in group_keys:
        for value in sorted({item.group[key] for item in items if key in item.group}):
            positions = [i for i, item in enumerate(items) if item.group.get(key) == value]
            mos(value, positions, {f"hp.{key}": value})
    scored = int((~np.isnan(matrix)).sum())
    answering = int((~np.all(np.isnan(matrix), axis=1)).sum()) if raters else 0
    results.append(MetricResult("ratings", scored, scored, kind="quality",
                                definition="counting (rater, study item) scores (skips left out)",
                                extra={"item": ALL, **overall, **extra}))
    results.append(MetricResult("raters", answering, answering, definition="raters with at least one study score",
                                extra={"item": ALL, **overall, **extra}))
    if raters >= 2:
        shared = (~np.isnan(matrix)).sum(axis=0) >= 2
        if shared.any():
            with np.errstate(all="ignore"):
                try:
                    alpha = ordinal_alpha(matrix[:, shared])
                except ValueError:  # a single value among the shared ratings
                    alpha = float("nan")
            # Undefined (nan) when the shared ratings hold a single value: no expected disagreement.
            if np.isfinite(alpha):
                low, high = alpha_bootstrap_ci(matrix[:, shared])
                results.append(MetricResult("krippendorff_alpha", alpha, int(shared.sum()), low, high,
                                            definition=ALPHA_DEFINITION, extra={"item": ALL, **overall, **extra}))
    return results


def rater_table(task_path: str | Path, ratings_path: str | Path | None = None) -> pd.DataFrame:
    """Per rater: answered, scored and skipped items, gold answered and failed, and whether the rule excludes them."""
    task = load_task(task_path)
    path = Path(ratings_path) if ratings_path is not None else task.folder / RATINGS_FILE
    latest = latest_ratings(checked_entries(task, path))
    gold = gold_failures(task, latest)
    excluded = excluded_raters(task, latest)
    records = []
    for rater in sorted({rater for rater, _ in latest}):
        answers = [entry for (who, _), entry in latest.items() if who == rater]
        records.append({"rater": rater, "answered": len(answers),
                        "scored": sum(1 for e in answers if e.get("score") is not None),
                        "skipped": sum(1 for e in answers if e.get("score") is None),
                        "gold_answered": gold.get(rater, {}).get("answered", 0),
                        "gold_failed": gold.get(rater, {}).get("failed", 0),
                        "excluded": rater in excluded})
    return pd.DataFrame(records, columns=["rater", "answered", "scored", "skipped", "gold_answered", "gold_failed",
                                          "excluded"])


def ratings_table(task_path: str | Path, ratings_path: str | Path | None = None) -> pd.DataFrame:
    """Every counting answer: rater, item, score (empty for a skip), group, gold outcome, rater excluded."""
    task = load_task(task_path)
    path = Path(ratings_path) if ratings_path is not None else task.folder / RATINGS_FILE
    latest = latest_ratings(checked_entries(task, path))
    excluded = excluded_raters(task, latest)
    records = []
    for (rater, item_id), entry in sorted(latest.items()):
        if item_id not in task.index:
            continue
        item = task.items[task.index[item_id]]
        records.append({"rater": rater, "item_id": item_id, "score": entry.get("score"), "time": entry.get("time"),
                        **{f"group.{k}": v for k, v in item.group.items()},
                        "gold": item.gold is not None,
                        "gold_passed": None if item.gold is None else entry.get("score") in item.gold,
                        "rater_excluded": rater in excluded})
    return pd.DataFrame(records)


def export_rows(task_path: str | Path, ratings_path: str | Path | None = None) -> Path:
    """Write the ratings' ``rows.parquet``, ``summary.csv``, ``ratings.csv`` and ``raters.csv`` into the
    task folder; returns the rows file."""
    task = load_task(task_path)
    rows_path, _ = write_rows(rating_rows(task_path, ratings_path), task.folder)
    ratings_table(task_path, ratings_path).to_csv(task.folder / "ratings.csv", index=False)
    rater_table(task_path, ratings_path).to_csv(task.folder / "raters.csv", index=False)
    return rows_path


def refresh_task_rows(paths: list[str]) -> None:
    """For ``harness table``: every given folder that is a rating task with ratings gets fresh rows."""
    for path in paths:
        folder = Path(path)
        if (folder / "task.json").is_file() and (folder / RATINGS_FILE).is_file():
            export_rows(folder)
