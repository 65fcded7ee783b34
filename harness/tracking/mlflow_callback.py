"""Log each run's rows, config and figures to MLflow (off unless asked for).

Turn it on for a run or a sweep with the Hydra callback config ``conf/hydra/callbacks/mlflow.yaml``::

    harness run experiment=smoke hydra/callbacks=mlflow
    harness run experiment=smoke hydra/callbacks=mlflow hydra.callbacks.mlflow.tracking_uri=/data/mlruns

Each finished job becomes one MLflow run (in the MLflow experiment named after the harness
experiment): identity and ``hp.*`` columns as params, every aggregate row as a metric (``metric``,
with ``/method`` and ``/item`` where a run holds several, and ``.ci_low``/``.ci_high``), provenance
as tags, and ``rows.parquet``, ``summary.csv``, the saved Hydra config and the run's figures as
artifacts. A sweep's own figures and table are logged as one more run when the sweep ends.

MLflow is an optional extra (``pip install 'harness[tracking]'``, which installs ``mlflow-skinny``).
The default store is a local ``mlruns/`` folder; MLflow 3 keeps its file store in maintenance
mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``, which this module sets for file
URIs only (a database or server URI is used as given).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "mlruns"
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")

try:  # Hydra is a dependency; the callback base is only needed for typing
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[misc,assignment]


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise HarnessError("MLflow tracking was asked for but mlflow is not installed: "
                           "pip install 'harness[tracking]' (installs mlflow-skinny).") from None
    return mlflow


def tracking_uri(uri: str | None) -> str:
    """A local folder (relative paths from the current directory) as a ``file://`` URI; other URIs as given."""
    uri = uri or DEFAULT_TRACKING_URI
    if "://" in uri or uri.startswith(("sqlite:", "databricks")):
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return Path(uri).expanduser().resolve().as_uri()


def _key(*parts: Any) -> str:
    text = "/".join(str(p) for p in parts if p not in (None, "") and not (isinstance(p, float) and pd.isna(p)))
    return _KEY.sub("_", text)[:250]


def _params(rows: pd.DataFrame) -> dict[str, str]:
    params = {}
    for column in ["experiment", "model", "dataset", "split", "method", "seed", "config_hash",
                   *sorted(c for c in rows.columns if c.startswith("hp."))]:
        if column in rows.columns:
            values = rows[column].dropna().astype(str).unique()
            if len(values) == 1:
                params[_key(column)] = values[0][:500]
            elif len(values) > 1:
                params[_key(column)] = json.dumps(sorted(values))[:500]
    return params


def _metrics(aggregates: pd.DataFrame) -> dict[str, float]:
    several_methods = aggregates["method"].nunique() > 1
    metrics = {}
    for _, row in aggregates.iterrows():
        if pd.isna(row["value"]):
            continue
        item = row.get("item")
        name = _key(row["metric"], row["method"] if several_methods else None, item)
        metrics[name] = float(row["value"])
        for bound in ("ci_low", "ci_high"):
            if bound in row and not pd.isna(row[bound]):
                metrics[f"{name}.{bound}"] = float(row[bound])
    return metrics


def log_run(run_dir: str | Path, uri: str | None = None, experiment_name: str | None = None,
            log_figures: bool = True) -> str:
    """Log one run folder (``rows.parquet`` and what lies beside it) to MLflow; returns the MLflow run id."""
    mlflow = _mlflow()
    run_dir = Path(run_dir)
    rows_file = run_dir / "rows.parquet"
    if not rows_file.is_file():
        raise HarnessError(f"Nothing to track in {run_dir}: it has no rows.parquet.")
    rows = pd.read_parquet(rows_file)
    aggregates = rows[rows["level"] == "aggregate"]
    named = rows["experiment"].dropna()
    experiment = experiment_name or (str(named.iloc[0]) if len(named) else "harness")
    mlflow.set_tracking_uri(tracking_uri(uri))
    mlflow.set_experiment(experiment)
    first = rows.iloc[0]
    tags = {"harness.run_dir": str(run_dir.resolve()), "harness.git_sha": str(first.get("git_sha", "")),
            "harness.versions": str(first.get("versions", ""))[:5000]}
    with mlflow.start_run(run_name=run_dir.name) as active:
        mlflow.set_tags(tags)
        mlflow.log_params(_params(aggregates if not aggregates.empty else rows))
        metrics = _metrics(aggregates)
        if metrics:
            mlflow.log_metrics(metrics)
        for name in ("rows.parquet", "summary.csv", "prompts.json", "sample_keys.json"):
            if (run_dir / name).is_file():
                mlflow.log_artifact(str(run_dir / name))
        hydra_dir = run_dir / ".hydra"
        if hydra_dir.is_dir():
            mlflow.log_artifacts(str(hydra_dir), artifact_path="config")
        if log_figures:
            for figure in sorted(run_dir.glob("*.png")) + sorted((run_dir / "figures").glob("**/*.png")):
                relative = figure.parent.relative_to(run_dir)
                mlflow.log_artifact(str(figure), artifact_path=str(Path("figures") / relative))
        return active.info.run_id


def log_sweep(sweep_dir: str | Path, uri: str | None = None, experiment_name: str | None = None) -> str | None:
    """Log a sweep folder's own table and figures as one MLflow run (None when it has none)."""
    mlflow = _mlflow()
    sweep_dir = Path(sweep_dir)
    files = sorted(sweep_dir.glob("*.png")) + [p for p in (sweep_dir / "table.md", sweep_dir / "multirun.yaml") if p.is_file()]
    if not files:
        return None
    mlflow.set_tracking_uri(tracking_uri(uri))
    mlflow.set_experiment(experiment_name or sweep_dir.parent.name)
    with mlflow.start_run(run_name=f"sweep {sweep_dir.name}") as active:
        mlflow.set_tag("harness.sweep_dir", str(sweep_dir.resolve()))
        for path in files:
            mlflow.log_artifact(str(path))
        return active.info.run_id


class MlflowTracking(_HydraCallback):
    """Hydra callback: each finished job's run folder to MLflow, and a sweep's figures when it ends."""

    def __init__(self, tracking_uri: str = DEFAULT_TRACKING_URI, experiment_name: str | None = None,
                 log_figures: bool = True) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.log_figures = log_figures
        _mlflow()  # a missing extra stops the run before any work, with the install line

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        if not (run_dir / "rows.parquet").is_file():
            log.warning("MLflow: %s has no rows.parquet (the job failed?); nothing logged.", run_dir)
            return
        run_id = log_run(run_dir, self.tracking_uri, self.experiment_name, self.log_figures)
        log.info("MLflow: run %s logged to %s", run_id, tracking_uri(self.tracking_uri))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        run_id = log_sweep(config.hydra.sweep.dir, self.tracking_uri, self.experiment_name)
        if run_id:
            log.info("MLflow: sweep %s logged", config.hydra.sweep.dir)
