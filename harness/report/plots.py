"""Figures over result rows: a metric against a hyperparameter, one line per configuration.

``plot_metric_vs(rows, x="hp.pag_scale", metric="fid", out="fid_vs_pag_scale.png")`` draws the
aggregate rows of ``metric`` against column ``x`` (numeric or categorical), one line per
combination of the other columns that vary (method, guidance scale, layers, ...), with the
confidence interval as error bars where rows have one.

:class:`SweepReport` is a Hydra callback: listed under ``hydra.callbacks`` of an experiment, it
runs when a multirun ends and writes the sweep's figures and its table (``table.md``) into the
sweep folder, and prints the table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import DataError
from harness.store.rows import IDENTITY_COLUMNS

log = logging.getLogger(__name__)

#: Columns that never split lines (they differ per run without being settings).
_NOT_SETTINGS = {"seed", "sample_id", "item", "value", "ci_low", "ci_high", "n", "definition", "kind", "level",
                 "git_sha", "config_hash", "versions", "run_dir", "metric", "source"}


def _varying(frame: pd.DataFrame, exclude: set[str]) -> list[str]:
    candidates = [c for c in IDENTITY_COLUMNS if c not in exclude] + sorted(c for c in frame.columns if c.startswith("hp."))
    return [c for c in candidates if c not in exclude and c not in _NOT_SETTINGS and c in frame.columns
            and frame[c].astype(str).nunique(dropna=False) > 1]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value) in ("", "nan", "None")


def line_label(columns: list[str], values: tuple) -> str:
    """A line's legend entry: ``method=pag, layers=mid`` from the settings that split lines; a setting
    the line does not have (NaN: another method's hyperparameter) is left out, never shown as ``nan``."""
    return ", ".join(f"{c.removeprefix('hp.')}={v}" for c, v in zip(columns, values) if not _missing(v))


def plot_metric_vs(rows: pd.DataFrame, x: str = "hp.pag_scale", metric: str = "fid", out: str | Path = "fid.png",
                   title: str | None = None) -> Path:
    """Plot aggregate ``metric`` against column ``x`` (one line per other varying setting); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = rows[(rows["metric"] == metric)]
    if "level" in data.columns:
        data = data[data["level"].fillna("aggregate") == "aggregate"]
    if x not in data.columns:
        raise DataError(f"No column {x!r} in the rows of metric {metric!r}; columns: {', '.join(sorted(data.columns))}.")
    data = data[data[x].notna()].copy()
    if data.empty:
        raise DataError(f"No aggregate rows of metric {metric!r} with {x} set: nothing to plot.")
    numeric = pd.to_numeric(data[x], errors="coerce")
    categorical = numeric.isna().any()
    data["_x"] = data[x].astype(str) if categorical else numeric
    groups = _varying(data, {x, "_x"})
    figure, axis = plt.subplots(figsize=(5.5, 4))
    order = list(dict.fromkeys(data["_x"])) if categorical else None
    for label, group in (data.groupby(groups, dropna=False, sort=True) if groups else [((), data)]):
        group = group.sort_values("_x") if not categorical else group.set_index("_x").loc[
            [v for v in order if v in set(group["_x"])]].reset_index()
        xs = [order.index(v) for v in group["_x"]] if categorical else group["_x"]
        name = line_label(groups, label if isinstance(label, tuple) else (label,)) or metric
        errors = None
        if "ci_low" in group.columns and group["ci_low"].notna().all() and group["ci_high"].notna().all():
            errors = [group["value"] - group["ci_low"], group["ci_high"] - group["value"]]
        axis.errorbar(xs, group["value"], yerr=errors, marker="o", capsize=3, label=name)
    if categorical:
        axis.set_xticks(range(len(order)), order, rotation=30, ha="right")
    axis.set_xlabel(x.removeprefix("hp."))
    axis.set_ylabel(metric)
    axis.set_title(title or f"{metric} vs {x.removeprefix('hp.')}")
    if groups:  # outside the axes, so it never hides a line or a label
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    axis.grid(alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return out


def sweep_report(sweep_dir: str | Path, plots: list[dict[str, str]], print_table: bool = True) -> list[Path]:
    """Figures and ``table.md`` of one sweep folder (every rows.parquet below it)."""
    from harness.report.table import load_rows, render_table

    sweep_dir = Path(sweep_dir)
    rows = load_rows([str(sweep_dir)], with_baselines=False)
    written = []
    for spec in plots:
        x, metric = spec.get("x", "hp.pag_scale"), spec.get("metric", "fid")
        if metric not in set(rows["metric"]) or x not in rows.columns:
            log.warning("sweep report: no %s rows with %s in %s; figure skipped.", metric, x, sweep_dir)
            continue
        name = f"{metric}_vs_{x.removeprefix('hp.')}.png"
        written.append(plot_metric_vs(rows, x=x, metric=metric, out=sweep_dir / name))
    table = render_table(rows, include_cost=True)
    (sweep_dir / "table.md").write_text(table + "\n")
    if print_table:
        print(f"\n==> sweep {sweep_dir}\n{table}")
        for path in written:
            print(f"figure: {path}")
    return written


try:  # Hydra is a dependency of the harness; the callback base is only needed for typing
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[misc,assignment]


class SweepReport(_HydraCallback):
    """Hydra callback: after a multirun, :func:`sweep_report` on its sweep folder.

    In an experiment: ``hydra: {callbacks: {report: {_target_: harness.report.plots.SweepReport,
    plots: [{x: hp.pag_scale, metric: fid}]}}}``.
    """

    def __init__(self, plots: list[dict[str, str]] | None = None) -> None:
        self.plots = [dict(p) for p in (plots or [{"x": "hp.pag_scale", "metric": "fid"}])]

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            sweep_report(config.hydra.sweep.dir, self.plots)
        except DataError as error:  # a sweep whose jobs all failed has nothing to report
            log.warning("sweep report skipped: %s", error)
