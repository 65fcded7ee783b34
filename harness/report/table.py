"""Load result rows of many runs and pivot them, published numbers beside ours."""

from __future__ import annotations

import glob
from pathlib import Path

import pandas as pd

from harness import REPO_ROOT
from harness.errors import DataError
from harness.store.rows import IDENTITY_COLUMNS, ROWS_FILE

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
        frame = pd.read_parquet(path)
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
    if low is not None and high is not None and not pd.isna(low) and not pd.isna(high) and low != high:
        text += f" [{low:.4g}, {high:.4g}]"
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
