"""Load result rows of many runs and pivot them, published numbers beside ours."""

from __future__ import annotations

import glob
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness import REPO_ROOT
from harness.errors import DataError
from harness.store.rows import IDENTITY_COLUMNS, ROWS_FILE, read_rows

BASELINES_DIR = REPO_ROOT / "baselines"
ALWAYS_SHOWN = ["dataset", "model", "method"]


def find_row_files(paths: list[str]) -> list[Path]:
    """Every ``rows.parquet`` in the given run dirs, sweep dirs (searched recursively) or globs."""
    found: list[Path] = []
    for pattern in paths:
        matches = [Path(p) for p in glob.glob(pattern, recursive=True)] or [Path(pattern)]
        for match in matches:
            if match.is_file() and match.name == ROWS_FILE:
                found.append(match)
            elif match.is_dir():
                found.extend(sorted(match.rglob(ROWS_FILE)))
    unique = sorted(set(found))
    if not unique:
        raise DataError(f"No {ROWS_FILE} found under {', '.join(paths)}. Point at run or sweep directories.")
    return unique


def load_baselines(directory: Path | None = None) -> pd.DataFrame:
    """Published numbers: every ``baselines/*.csv`` (same columns as our rows, ``source=paper:...``)."""
    files = sorted((directory or BASELINES_DIR).glob("*.csv"))
    if not files:
        return pd.DataFrame()
    frames = [pd.read_csv(f) for f in files]
    return pd.concat(frames, ignore_index=True)


def load_rows(paths: list[str], with_baselines: bool = True) -> pd.DataFrame:
    """Aggregate rows of the runs under ``paths``, plus matching published numbers."""
    frames = []
    for path in find_row_files(paths):
        frame = read_rows(path)
        frames.append(frame[frame["level"] == "aggregate"])
    rows = pd.concat(frames, ignore_index=True)
    if with_baselines:
        baselines = load_baselines()
        if not baselines.empty:
            wanted = baselines["dataset"].isin(rows["dataset"].unique()) & baselines["metric"].isin(rows["metric"].unique())
            rows = pd.concat([rows, baselines[wanted]], ignore_index=True)
    return rows


def _format_value(row: pd.Series) -> str:
    value = row["value"]
    if pd.isna(value):
        return ""
    text = f"{value:.4g}"
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is not None and high is not None and not pd.isna(low) and not pd.isna(high):
        # a zero-width interval is marked, not shown as [x, x] nor hidden
        zero = math.isclose(low, high, rel_tol=1e-9, abs_tol=1e-12)
        text += f" [{low:.4g}, {high:.4g}]" if not zero else " [zero width]"
    return text


def pivot(rows: pd.DataFrame, metrics: list[str] | None = None, include_cost: bool = False,
          formatted: bool = True, hparams: bool = True) -> pd.DataFrame:
    """Rows -> one line per (source, identity, varying hyperparameters), one column per metric.

    ``hparams=False`` leaves the hp.* columns out (a single run's summary, where a method and its
    baselines have different hyperparameters anyway)."""
    data = rows.copy()
    if metrics:
        data = data[data["metric"].isin(metrics)]
    if not include_cost and "kind" in data.columns:
        data = data[data["kind"].fillna("quality") != "cost"]
    if data.empty:
        raise DataError("No rows left to tabulate (check --metrics).")
    # What was measured is always shown; other identity and hp.* columns only where they vary.
    index = ["source", *ALWAYS_SHOWN]
    candidates = [c for c in IDENTITY_COLUMNS if c not in ALWAYS_SHOWN]
    if hparams:
        candidates += sorted(c for c in data.columns if c.startswith("hp."))
    for column in candidates:
        if column not in data.columns:
            continue
        values = data[column].astype(str)
        # An hp.* column is shown where it varies within one method (a sweep), not merely
        # because methods and baselines have different hyperparameters.
        varies = values.groupby(data["method"]).nunique(dropna=False).max() if column.startswith("hp.") \
            else values.nunique(dropna=False)
        if varies > 1:
            index.append(column)
    for column in index:
        data[column] = data[column].astype(object).where(data[column].notna(), "")
    if "item" in data.columns:  # an aggregate per item (a POS tag, a relation) gets its own column: metric[item]
        per_item = data["item"].notna() & (data["item"].astype(str) != "") & (data["level"] == "aggregate")
        data.loc[per_item, "metric"] = data.loc[per_item, "metric"] + "[" + data.loc[per_item, "item"].astype(str) + "]"
    data["cell"] = data.apply(_format_value, axis=1) if formatted else data["value"]
    table = data.pivot_table(index=index, columns="metric", values="cell", aggfunc="first")
    table.columns.name = None
    if formatted:  # a metric a run did not measure is an empty cell, not "nan"
        table = table.fillna("")
    # Ours first, then each paper's line, grouped by the identity that follows.
    table = table.reset_index()
    table["_ours"] = table["source"] != "harness"
    table = table.sort_values(["_ours", *index[1:], "source"]).drop(columns="_ours")
    return table.set_index(index)


def render_table(rows: pd.DataFrame, fmt: str = "markdown", metrics: list[str] | None = None,
                 include_cost: bool = False, hparams: bool = True) -> str:
    """The pivot as Markdown (default), CSV or LaTeX text."""
    if fmt == "csv":
        return pivot(rows, metrics, include_cost, formatted=False, hparams=hparams).to_csv()
    table = pivot(rows, metrics, include_cost, hparams=hparams)
    if fmt == "latex":
        return table.to_latex(escape=True)
    return table.reset_index().to_markdown(index=False)


def print_summary(rows: pd.DataFrame) -> None:
    """Print a run's aggregates (quality and cost) as a Markdown table."""
    aggregates = rows[rows["level"] == "aggregate"]
    if aggregates.empty:
        print("(no aggregate metrics)")
        return
    print(render_table(aggregates, include_cost=True, hparams=False))


# -- paired comparisons ------------------------------------------------------------------------

def load_sample_rows(paths: list[str]) -> pd.DataFrame:
    """Per-sample quality rows (``level == "sample"``) of the runs under ``paths``."""
    frames = []
    for path in find_row_files(paths):
        frame = read_rows(path)
        frames.append(frame[frame["level"] == "sample"])
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not rows.empty and "kind" in rows.columns:
        rows = rows[rows["kind"].fillna("quality") != "cost"]
    return rows


def _predictor_labels(rows: pd.DataFrame) -> pd.Series:
    """``method``, plus the hp.* values that tell apart runs of one method (a sweep)."""
    labels = rows["method"].astype(str)
    hp_columns = sorted(c for c in rows.columns if c.startswith("hp."))
    for method, group in rows.groupby("method"):
        varying = [c for c in hp_columns if group[c].astype(str).nunique(dropna=False) > 1]
        if varying:
            suffix = group[varying].astype(str).apply(lambda r: " ".join(f"{c[3:]}={v}" for c, v in r.items()), axis=1)
            labels.loc[group.index] = f"{method} (" + suffix + ")"
    return labels


def compare_table(paths: list[str], reference: str, metrics: list[str] | None = None, resamples: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """Paired differences of every predictor against ``reference``, per (dataset, split, model, metric).

    For each metric with per-sample values, a predictor's value on an image is the mean of its
    rows for that sample (an image with several nouns: the mean over its nouns). The difference
    is the mean over the images both predictors scored of (predictor - reference), with a 95%
    percentile bootstrap interval over those images (:func:`harness.stats.paired_differences`:
    seeded, the same resamples for every predictor). Predictors scored on other samples get no
    difference and say so; metrics without per-sample values (dataset-level figures such as
    FID) are listed with that reason.
    """
    from harness.stats import paired_differences

    samples = load_sample_rows(paths)
    aggregates = load_rows(paths, with_baselines=False)
    if metrics:
        samples = samples[samples["metric"].isin(metrics)] if not samples.empty else samples
        aggregates = aggregates[aggregates["metric"].isin(metrics)]
    if "kind" in aggregates.columns:
        aggregates = aggregates[aggregates["kind"].fillna("quality") != "cost"]
    keys = ["dataset", "split", "model", "metric"]
    out: list[dict] = []
    if not samples.empty:
        samples = samples.assign(predictor=_predictor_labels(samples))
        known = set(samples["predictor"]) | set(samples["method"])
        if reference not in known:
            raise DataError(f"--compare {reference!r}: no per-sample rows of that method; methods with per-sample "
                            f"rows: {', '.join(sorted(known))}.")
        for key, group in samples.groupby(keys, dropna=False):
            per_image = {name: g.groupby("sample_id")["value"].mean().to_dict()
                         for name, g in group.groupby("predictor")}
            refs = [name for name in per_image if name == reference] or \
                [name for name in per_image if name.split(" (")[0] == reference]
            if not refs:
                continue
            if len(refs) > 1:
                raise DataError(f"--compare {reference!r} matches several runs of that method ({', '.join(refs)}); "
                                "name one of them exactly.")
            differences = paired_differences(per_image, refs[0], resamples=resamples, seed=seed)
            ref_values = per_image[refs[0]]
            for name, result in sorted(differences.items()):
                line = dict(zip(keys, key)) | {"predictor": name, "reference": refs[0], "n_images": result["n"]}
                if result["n"] == 0:
                    line["difference"] = "not paired: no shared samples (different prompt sets or images)"
                else:
                    shared = [image for image in ref_values if image in per_image[name]]
                    line["predictor_mean"] = float(np.mean([per_image[name][i] for i in shared]))
                    line["reference_mean"] = float(np.mean([ref_values[i] for i in shared]))
                    line["difference"] = _format_difference(result)
                out.append(line)
    scored = set(samples["metric"]) if not samples.empty else set()
    for metric in sorted(set(aggregates["metric"]) - scored):
        if "." in metric:  # counts beside a figure (absent nouns, missing maps)
            continue
        for (dataset, split, model), _ in aggregates[aggregates["metric"] == metric].groupby(
                ["dataset", "split", "model"], dropna=False):
            out.append({"dataset": dataset, "split": split, "model": model, "metric": metric,
                        "predictor": "(all)", "reference": reference, "n_images": 0,
                        "difference": "not paired: no per-sample values (a dataset-level or aggregate-only figure)"})
    if not out:
        raise DataError(f"Nothing to compare with {reference!r} under {', '.join(paths)}.")
    return pd.DataFrame(out)


def _format_difference(result: dict) -> str:
    text = f"{result['difference']:+.4g}"
    if result["ci_low"] is not None:
        text += f" [{result['ci_low']:+.4g}, {result['ci_high']:+.4g}]"
        if math.isclose(result["ci_low"], result["ci_high"], rel_tol=1e-9, abs_tol=1e-12):  # said, not [x, x]
            text += " (zero width: every resample gave the same difference)"
    return text


def render_compare(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """The paired-difference table as Markdown (default), CSV or LaTeX text."""
    columns = ["dataset", "split", "model", "metric", "predictor", "reference", "n_images",
               "predictor_mean", "reference_mean", "difference"]
    table = table.reindex(columns=columns)
    for column in ("predictor_mean", "reference_mean"):
        table[column] = table[column].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "latex":
        return table.to_latex(index=False, escape=True)
    return table.to_markdown(index=False)
