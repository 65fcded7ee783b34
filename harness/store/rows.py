"""Tidy result rows: one row per (run, sample or aggregate, metric).

Identity columns say what was measured (experiment, model, dataset, split, method, seed),
``metric``/``value`` (with ``ci_low``/``ci_high`` and ``n`` where they apply) say the result,
``hp.*`` columns hold hyperparameters, and provenance columns (git sha, config hash, library
versions) say how to reproduce it. Published numbers in ``baselines/`` use the same columns
with ``source = paper:<id>:<table>``; our rows have ``source = harness``.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from harness import REPO_ROOT, __version__

IDENTITY_COLUMNS = ["experiment", "model", "dataset", "split", "method", "seed"]
RESULT_COLUMNS = ["metric", "value", "ci_low", "ci_high", "n"]
#: level: "aggregate" (one per run and metric) or "sample" (one per sample and metric);
#: kind: "quality" (deterministic given the config) or "cost" (time, memory: machine-dependent).
ROW_COLUMNS = [*IDENTITY_COLUMNS, "level", "sample_id", "item", *RESULT_COLUMNS, "kind", "definition", "source"]
PROVENANCE_COLUMNS = ["git_sha", "config_hash", "versions", "run_dir"]
#: Per-sample rows also say how the scored sample itself was made (it may come from the cache,
#: made by older code): from the sample's ``meta["provenance"]`` (:mod:`harness.store.identity`).
SAMPLE_PROVENANCE_COLUMNS = {"sample_git_sha": "git_sha", "sample_versions": "versions", "sample_created": "created"}
ROWS_FILE = "rows.parquet"
SUMMARY_FILE = "summary.csv"
#: The rows column naming the ``metric:`` entry an aggregate row came from (a metric may write
#: rows under other names, e.g. ``bias.<attribute>.skew``).
ENTRY_COLUMN = "metric_entry"
#: Why an aggregate's value is empty (NaN): every empty cell carries one.
SKIPPED_REASON_COLUMN = "skipped_reason"
#: Says when an aggregate's interval has zero width (every value, or every resample, was the same).
CI_NOTE_COLUMN = "ci_note"
DEGENERATE_NOTE = "zero-width interval: every value (or resample) was the same; it says nothing about spread"
#: The run folder's manifest: the SHA-256 of rows.parquet and summary.csv, checked by every reader.
RUN_MANIFEST = "manifest.json"
VERSIONED_PACKAGES = ["torch", "diffusers", "transformers", "torchmetrics", "numpy"]


@dataclass
class MetricResult:
    """One aggregate figure of a metric."""

    metric: str
    value: float
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    kind: str = "quality"
    #: which definition the number follows (e.g. "mean over (image, noun) pairs of IoU")
    definition: str = ""
    #: extra hp.* or identity overrides for this row (e.g. a baseline's own method name)
    extra: dict[str, Any] = field(default_factory=dict)


def skipped_result(metric: str, reason: str, kind: str = "quality") -> MetricResult:
    """The aggregate row of something that was skipped: value NaN, n 0, the reason beside it."""
    return MetricResult(metric, math.nan, 0, kind=kind, definition=f"skipped: {reason}",
                        extra={SKIPPED_REASON_COLUMN: reason})


def git_sha(root: Path = REPO_ROOT) -> str:
    """The current commit, with ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def library_versions() -> str:
    """JSON of the versions of the libraries that decide the numbers."""
    versions = {"harness": __version__}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return json.dumps(versions, sort_keys=True)


def config_hash(resolved_config: dict[str, Any]) -> str:
    """A short hash of the resolved experiment config (what, not where: output paths excluded)."""
    text = json.dumps(resolved_config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def flatten_hparams(params: dict[str, Any], prefix: str = "hp.") -> dict[str, Any]:
    """Nested hyperparameters as flat ``hp.a.b`` columns; lists become JSON text."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_hparams(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = value
    return flat


def build_rows(
    identity: dict[str, Any],
    hparams: dict[str, Any],
    provenance: dict[str, Any],
    aggregates: list[MetricResult],
    per_sample: list[dict[str, Any]],
) -> pd.DataFrame:
    """Assemble the run's rows.

    ``per_sample`` items are ``{"sample_id", "metric", "value", "item"?, "kind"?, "extra"?, "provenance"?}``
    (``item``: what inside the sample was scored, e.g. a noun; ``provenance``: the scored sample's
    ``meta["provenance"]``, which becomes the ``sample_*`` columns; aggregate rows leave them empty).
    """
    records = []
    for result in aggregates:
        row = {**identity, "level": "aggregate", "sample_id": None, "item": None,
               "metric": result.metric, "value": float(result.value),
               "ci_low": _float_or_none(result.ci_low), "ci_high": _float_or_none(result.ci_high),
               "n": int(result.n), "kind": result.kind, "definition": result.definition,
               "source": "harness"}
        if row["ci_low"] is not None and row["ci_high"] is not None and math.isclose(
                row["ci_low"], row["ci_high"], rel_tol=1e-9, abs_tol=1e-12):  # said, not shown as [x, x]
            row[CI_NOTE_COLUMN] = DEGENERATE_NOTE
        row.update(hparams)
        row.update(result.extra)
        if math.isnan(row["value"]) and not row.get(SKIPPED_REASON_COLUMN):  # an empty cell always says why
            row[SKIPPED_REASON_COLUMN] = (f"no value: {result.metric} had nothing to score" if not result.n else
                                          f"no finite value from {result.n} scored item(s)")
        records.append(row)
    for item in per_sample:
        row = {**identity, "level": "sample", "sample_id": str(item["sample_id"]), "item": item.get("item"),
               "metric": item["metric"], "value": float(item["value"]),
               "ci_low": None, "ci_high": None, "n": 1, "kind": item.get("kind", "quality"),
               "definition": "", "source": "harness"}
        made = item.get("provenance") or {}
        row.update({column: made.get(field) for column, field in SAMPLE_PROVENANCE_COLUMNS.items()})
        row.update(hparams)
        row.update(item.get("extra", {}))
        records.append(row)
    frame = pd.DataFrame.from_records(records)
    for column in [*ROW_COLUMNS, *SAMPLE_PROVENANCE_COLUMNS, CI_NOTE_COLUMN, SKIPPED_REASON_COLUMN]:
        if column not in frame.columns:
            frame[column] = None
    for column, value in provenance.items():
        frame[column] = value
    hp_columns = sorted(c for c in frame.columns if c.startswith("hp."))
    ordered = ROW_COLUMNS + hp_columns + [c for c in frame.columns if c not in ROW_COLUMNS and c not in hp_columns]
    return frame[ordered]


def write_rows(frame: pd.DataFrame, run_dir: Path) -> tuple[Path, Path]:
    """Write ``rows.parquet`` (all rows) and ``summary.csv`` (aggregates) into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows_path = run_dir / ROWS_FILE
    summary_path = run_dir / SUMMARY_FILE
    _atomic_write(rows_path, lambda p: _normalise_for_parquet(frame).to_parquet(p, index=False))
    summary = frame[frame["level"] == "aggregate"]
    _atomic_write(summary_path, lambda p: summary.to_csv(p, index=False))
    write_manifest(run_dir, [rows_path, summary_path])
    return rows_path, summary_path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(run_dir: Path, files: list[Path]) -> Path:
    """``manifest.json``: the SHA-256 of each of ``files`` (written last, atomically)."""
    document = {"format": 1, "files": {path.name: _sha256(path) for path in files}}
    path = run_dir / RUN_MANIFEST
    _atomic_write(path, lambda p: p.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n"))
    return path


def verify_run_file(path: str | Path) -> None:
    """Raise a DataError when ``path`` (rows.parquet or summary.csv of a run folder) does not match
    the checksum its folder's manifest records. A folder without a manifest (written before
    manifests existed) is not checked."""
    from harness.errors import DataError

    path = Path(path)
    manifest = path.parent / RUN_MANIFEST
    if not manifest.is_file():
        return
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{manifest} is damaged (not the manifest a run writes); rerun the run to write it "
                        "again (its samples are cached).") from None
    if path.name not in recorded:
        return
    if _sha256(path) != recorded[path.name]:
        raise DataError(f"{path} fails its checksum in {manifest}: it was edited or damaged after the run wrote "
                        "it. Rerun the run to write it again (its samples are cached, nothing is regenerated).")


def read_rows(path: str | Path) -> pd.DataFrame:
    """A run's ``rows.parquet``, verified against its folder's manifest; one DataError when it fails."""
    from harness.errors import DataError

    verify_run_file(path)
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path} cannot be read ({type(error).__name__}: {error}).") from None


def _normalise_for_parquet(frame: pd.DataFrame) -> pd.DataFrame:
    # hp.* columns can mix types across runs (None and float); parquet wants one type per column.
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            kinds = {type(v) for v in out[column] if v is not None and not (isinstance(v, float) and pd.isna(v))}
            if len(kinds) > 1:
                out[column] = out[column].map(lambda v: None if v is None else str(v))
    return out


def _atomic_write(path: Path, writer) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    writer(temporary)
    temporary.replace(path)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
