"""``harness report``: one static HTML page over runs and sweeps.

The page (Jinja2 templates in ``harness/report/templates/``, one per section, autoescaped) holds

* per experiment, the comparison table of ``harness table`` (:func:`harness.report.table.pivot`)
  with published rows marked, each metric's declared definition on hover and in footnotes, and
  confidence intervals drawn as bars;
* the sweep plots the rows allow (a metric against every numeric hyperparameter that varies
  within a method, or against the method in a sweep), drawn by :func:`harness.report.plots.plot_metric_vs`;
* a gallery per experiment: per sample the image, its per-word heat-map overlays (DAAM), its
  segmentation beside the ground truth (EmerDiff and baselines), and every method's variant side by
  side (PAG sweeps); sortable by a per-sample metric and filtered by method, dataset and word.
  Images are written as PNG files into ``<name>_files/`` beside the page and the gallery renders
  one page of cards at a time from embedded JSON, so a 5,000-sample run opens quickly;
* provenance per run: config, git sha, library versions and the command that reproduces it.

Samples are found through the ``sample_key`` column of per-sample rows (the sample's content key)
in the run's sample store (``store.root`` of its saved config, or ``--store``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from harness.errors import DataError, HarnessError
from harness.store.rows import IDENTITY_COLUMNS, ROWS_FILE

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).with_name("templates")
HEATMAP_PREFIX = "heatmap:"
#: Cards per gallery page (the browser only builds one page of cards at a time).
DEFAULT_PAGE_SIZE = 24
#: Longest side of the images written for the gallery.
DEFAULT_THUMBNAIL = 256
MAX_SWEEP_PLOTS = 8
#: Marks a folder of report images as ours (so a rebuild may replace it, and nothing else).
FOLDER_MARKER = ".harness-report"
#: In the head of every page harness report writes: an existing --out without it is not replaced.
PAGE_MARKER = '<meta name="generator" content="harness report">'


@dataclass
class Run:
    """One run folder: its rows and what is saved beside them."""

    directory: Path
    rows: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""
    overrides: list[str] = field(default_factory=list)
    multirun: bool = False
    records: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        values = self.rows["experiment"].dropna().astype(str).unique()
        return values[0] if len(values) else self.directory.name


def load_runs(paths: list[str]) -> list[Run]:
    """Every run (a folder holding ``rows.parquet``) under ``paths``, with its config and prompts."""
    from omegaconf import OmegaConf

    from harness.data.prompts import PromptSet
    from harness.report.table import find_row_files
    from harness.store.rows import read_rows

    runs = []
    for rows_file in find_row_files(paths):
        directory = rows_file.parent
        rows = read_rows(rows_file)  # checked against the run's manifest
        run = Run(directory=directory, rows=rows)
        hydra_dir = directory / ".hydra"
        if (hydra_dir / "config.yaml").is_file():
            run.config_text = (hydra_dir / "config.yaml").read_text()
            run.config = OmegaConf.to_container(OmegaConf.load(hydra_dir / "config.yaml"), resolve=False)
        if (hydra_dir / "overrides.yaml").is_file():
            run.overrides = [str(o) for o in (OmegaConf.load(hydra_dir / "overrides.yaml") or [])]
        if (hydra_dir / "hydra.yaml").is_file():
            hydra_cfg = OmegaConf.load(hydra_dir / "hydra.yaml")
            run.multirun = str(OmegaConf.select(hydra_cfg, "hydra.mode", default="")).endswith("MULTIRUN")
        if (directory / "prompts.json").is_file():
            try:
                run.records = {r.id: r for r in PromptSet.load(directory / "prompts.json").records}
            except HarnessError as error:
                log.warning("report: %s", error)
        runs.append(run)
    return runs


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def _published_rows(aggregates: pd.DataFrame, with_baselines: bool) -> pd.DataFrame:
    from harness.report.table import load_baselines

    if not with_baselines:
        return aggregates
    baselines = load_baselines()
    if baselines.empty:
        return aggregates
    wanted = baselines["dataset"].isin(aggregates["dataset"].unique()) & baselines["metric"].isin(aggregates["metric"].unique())
    return pd.concat([aggregates, baselines[wanted]], ignore_index=True)


def table_model(rows: pd.DataFrame) -> dict[str, Any] | None:
    """The comparison table of ``rows`` (aggregates and published numbers) for the template:
    index columns, metric columns (with definitions) and cells with their CI bar geometry."""
    from harness.report.table import pivot

    try:
        text = pivot(rows, include_cost=True)
    except DataError:
        return None

    def numeric_table(column: str) -> pd.DataFrame:
        # The formatted table is the master: pivot_table leaves out all-NaN rows and columns of a
        # numeric pivot (a skipped baseline's NaN rows, metrics without intervals), so align by label.
        numbers = rows.copy()
        numbers["value"] = pd.to_numeric(numbers[column], errors="coerce") if column in numbers else np.nan
        if numbers["value"].isna().all():
            return pd.DataFrame(np.nan, index=text.index, columns=text.columns)
        table = pivot(numbers, include_cost=True, formatted=False)
        return table.reindex(index=text.index, columns=text.columns)

    values, lows, highs = numeric_table("value"), numeric_table("ci_low"), numeric_table("ci_high")
    definitions: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for metric, group in rows.groupby("metric"):
        texts = [str(d) for d in group.get("definition", pd.Series(dtype=object)).dropna() if str(d).strip()]
        ours = [str(d) for d in group[group["source"] == "harness"].get("definition", pd.Series(dtype=object)).dropna()
                if str(d).strip()]
        definitions[str(metric)] = (ours or texts or [""])[0]
        kinds[str(metric)] = str(group["kind"].dropna().iloc[0]) if group["kind"].notna().any() else "quality"
    metrics = [str(m) for m in text.columns]
    # One scale per metric column: every value and interval end in that column.
    scales = {}
    for metric in metrics:
        numbers = pd.concat([pd.to_numeric(values[metric], errors="coerce"), lows[metric], highs[metric]]).dropna()
        numbers = numbers[np.isfinite(numbers.astype(float))]
        scales[metric] = (float(numbers.min()), float(numbers.max())) if len(numbers) else None
    families = threshold_families(metrics)
    in_family = {m for members in families.values() for _, m in members}
    first_of = {members[0][1]: name for name, members in families.items()}
    columns: list[dict[str, Any]] = []  # in the pivot's order; a family where its first member was
    for metric in metrics:
        if metric in first_of:
            columns.append({"name": first_of[metric], "members": families[first_of[metric]]})
        elif metric not in in_family:
            columns.append({"name": metric, "members": None})
    footnotes = []
    for number, column in enumerate(columns):
        first = column["members"][0][1] if column["members"] else column["name"]
        thresholds = ", ".join(f"{t:g}" for t, _ in column["members"]) if column["members"] else ""
        definition = definitions.get(first, "")
        if thresholds:
            definition = f"{definition} Drawn against the threshold ({thresholds})." if definition else \
                f"against the threshold ({thresholds})"
        footnotes.append({"number": number + 1, "metric": column["name"], "definition": definition,
                          "kind": kinds.get(first, ""), "family": bool(column["members"])})
    scaled = {metric: has_scale(kinds.get(metric, "quality"), values[metric], lows[metric]) for metric in metrics}
    table_rows = []
    index_names = list(text.index.names)
    for position, key in enumerate(text.index):
        key = key if isinstance(key, tuple) else (key,)
        identity = dict(zip(index_names, key))
        source = str(identity.get("source", ""))
        cells = []
        for column in columns:
            if column["members"]:
                cells.append(_curve_cell(column, [(t, _number(values.iloc[position][m])) for t, m in column["members"]],
                                         [scales[m] for _, m in column["members"]]))
                continue
            metric = column["name"]
            value = _number(values.iloc[position][metric])
            low, high = _number(lows.iloc[position][metric]), _number(highs.iloc[position][metric])
            cells.append({"metric": metric, "text": str(text.iloc[position][metric]), "value": value,
                          "low": low, "high": high,
                          "bar": _bar(value, low, high, scales[metric]) if scaled[metric] else None})
        table_rows.append({"published": source != "harness", "source": source,
                           "index": [_display(identity[name]) for name in index_names if name != "source"],
                           "cells": cells})
    return {"index_names": [n for n in index_names if n != "source"], "metrics": [c["name"] for c in columns],
            "footnotes": footnotes, "rows": table_rows}


#: ``miou@0.4`` or ``miou@0.4[NOUN]``: a metric at one threshold of a family.
_THRESHOLD = re.compile(r"^(?P<base>.+)@(?P<threshold>[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?P<item>\[.*\])?$")


def threshold_families(metrics: list[str]) -> dict[str, list[tuple[float, str]]]:
    """Columns of one metric at several thresholds (``miou@0.2`` ... ``miou@0.6``): family name
    (``miou@τ``, with any ``[item]`` kept) -> [(threshold, column)] by threshold; families of two or more."""
    found: dict[str, list[tuple[float, str]]] = {}
    for metric in metrics:
        match = _THRESHOLD.match(metric)
        if match:
            name = f"{match['base']}@τ{match['item'] or ''}"
            found.setdefault(name, []).append((float(match["threshold"]), metric))
    return {name: sorted(members) for name, members in found.items() if len(members) >= 2}


def has_scale(kind: str, values: pd.Series, lows: pd.Series) -> bool:
    """Whether a column's bars mean something: not a cost (time, memory), and not a count (every
    value a whole number and no interval anywhere in the column)."""
    if kind == "cost":
        return False
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return False
    counts = bool(np.all(np.isclose(numbers, np.round(numbers)))) and pd.to_numeric(lows, errors="coerce").isna().all()
    return not counts


def _curve_cell(column: dict[str, Any], points: list[tuple[float, float | None]],
                scales: list[tuple[float, float] | None]) -> dict[str, Any]:
    """A threshold family's cell: a small polyline (viewBox 100 x 30) of value against threshold, on
    one y scale for the whole column, and the best value with its threshold as text."""
    known = [(t, v) for t, v in points if v is not None]
    spans = [s for s in scales if s is not None]
    cell: dict[str, Any] = {"metric": column["name"], "curve": None, "value": None, "bar": None,
                            "text": "", "points": [{"threshold": f"{t:g}", "text": "" if v is None else f"{v:.4g}"}
                                                   for t, v in points]}
    if not known:
        return cell
    best_threshold, best = max(known, key=lambda p: p[1])
    cell["value"] = best
    cell["text"] = f"max {best:.4g} @{best_threshold:g}"
    low = min(s[0] for s in spans) if spans else min(v for _, v in known)
    high = max(s[1] for s in spans) if spans else max(v for _, v in known)
    thresholds = [t for t, _ in points]
    t_low, t_high = min(thresholds), max(thresholds)

    def x(t: float) -> float:
        return round(4 + 92 * (t - t_low) / (t_high - t_low), 2) if t_high > t_low else 50.0

    def y(v: float) -> float:
        return round(26 - 22 * (v - low) / (high - low), 2) if high > low else 15.0

    cell["curve"] = {"points": " ".join(f"{x(t)},{y(v)}" for t, v in known),
                     "dots": [{"x": x(t), "y": y(v), "title": f"@{t:g}: {v:.4g}"} for t, v in known]}
    return cell


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _display(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _bar(value: float | None, low: float | None, high: float | None, scale: tuple[float, float] | None):
    """Positions (percent of the cell's bar width) of the value and its interval, or None."""
    if value is None or scale is None:
        return None
    lo, hi = scale
    span = hi - lo
    if span <= 0:
        return None

    def place(x: float) -> float:
        return round(100.0 * (x - lo) / span, 2)

    bar = {"point": place(value)}
    if low is not None and high is not None and high > low:
        bar["low"], bar["high"] = place(low), place(high)
        bar["width"] = round(bar["high"] - bar["low"], 2)
    return bar


# --------------------------------------------------------------------------------------------
# Sweep plots
# --------------------------------------------------------------------------------------------

def sweep_plots(experiment: str, aggregates: pd.DataFrame, runs: list[Run], folder: Path, prefix: str) -> list[dict]:
    """Figures of each quality metric with a scale against each numeric hyperparameter that varies
    within a method (a sweep), one line per method; none for a plain comparison of methods (the
    table shows it); and, for runs of several guiders, quality vs alignment per guider. [{src, metric, x}]"""
    from harness.report.guidance_figure import guider_plots
    from harness.report.plots import plot_metric_vs

    ours = aggregates[aggregates["source"] == "harness"]
    if ours.empty:
        return []
    plots = guider_plots(experiment, ours, folder, prefix)  # per guider: quality vs alignment
    xs = []
    for column in sorted(c for c in ours.columns if c.startswith("hp.")):
        numeric = pd.to_numeric(ours[column], errors="coerce")
        swept = numeric.groupby(ours["method"]).nunique()
        if len(swept) and swept.max() > 1:
            xs.append(column)
    metrics = []
    for metric in ours["metric"].unique():
        subset = ours[ours["metric"] == metric]
        kind = "cost" if (subset["kind"].fillna("quality") == "cost").any() else "quality"
        if has_scale(kind, subset["value"], subset["ci_low"] if "ci_low" in subset else pd.Series(dtype=float)):
            metrics.append(metric)
    for x in xs:
        for metric in metrics:
            if len(plots) >= MAX_SWEEP_PLOTS:
                return plots
            subset = ours[(ours["metric"] == metric) & pd.to_numeric(ours[x], errors="coerce").notna()]
            # Only the methods swept along x: a method at a single x value is a point, not a line.
            swept = pd.to_numeric(subset[x], errors="coerce").groupby(subset["method"]).nunique()
            subset = subset[subset["method"].isin(swept[swept > 1].index)]
            if subset.empty:
                continue
            name = f"{prefix}_{_slug(metric)}_vs_{_slug(x.removeprefix('hp.'))}.png"
            try:
                plot_metric_vs(subset, x=x, metric=metric, out=folder / name, title=f"{experiment}: {metric}")
            except DataError as error:
                log.info("report: no plot of %s vs %s (%s)", metric, x, error)
                continue
            plots.append({"src": f"{folder.name}/{name}", "metric": metric, "x": x.removeprefix("hp.")})
    return plots


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text))[:60]


# --------------------------------------------------------------------------------------------
# Gallery
# --------------------------------------------------------------------------------------------

class _Images:
    """Writes the gallery's PNGs (once per content key) into the report's folder."""

    def __init__(self, folder: Path, thumbnail: int) -> None:
        self.folder = folder
        self.thumbnail = thumbnail
        self.written: set[str] = set()

    def write(self, name: str, image: np.ndarray | Image.Image) -> str:
        if name not in self.written:
            pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
            pil = pil.convert("RGB")
            pil.thumbnail((self.thumbnail, self.thumbnail))
            pil.save(self.folder / name, format="PNG")
            self.written.add(name)
        return f"{self.folder.name}/{name}"


def _overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """A heat map (min-max normalised, bilinearly resized) blended over the image with a colour map."""
    import matplotlib

    heat = np.asarray(heat, dtype=np.float32)
    heat = np.nan_to_num(heat)
    low, high = float(heat.min()), float(heat.max())
    normalised = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    resized = Image.fromarray(normalised.astype(np.float32), mode="F").resize(
        (image.shape[1], image.shape[0]), Image.Resampling.BILINEAR)
    colours = matplotlib.colormaps["jet"](np.clip(np.asarray(resized), 0, 1))[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colours
    return Image.fromarray((np.clip(blended, 0, 1) * 255).astype(np.uint8))


def _palette() -> np.ndarray:
    """The gallery's class colours (matplotlib's tab20, as uint8 RGB)."""
    import matplotlib

    return (np.asarray(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)


def _hex(colour: np.ndarray) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in colour[:3])


def _label_colours(labels: np.ndarray, size: tuple[int, int] | None = None) -> Image.Image:
    """Integer labels as a colour image (tab20 colours cycled by id; negative ids black)."""
    labels = np.asarray(labels).astype(np.int64)
    palette = _palette()
    coloured = palette[np.mod(labels, len(palette))]
    coloured[labels < 0] = 0
    pil = Image.fromarray(coloured)
    if size is not None and pil.size != size:
        pil = pil.resize(size, Image.Resampling.NEAREST)
    return pil


def _label_legend(labels: np.ndarray) -> list[dict[str, str]]:
    """[{name, colour}] of the ids present in a label map, in :func:`_label_colours`' colours."""
    palette = _palette()
    present = sorted(int(v) for v in np.unique(np.asarray(labels).astype(np.int64)))
    return [{"name": "unlabelled" if v < 0 else f"class {v}",
             "colour": "#000000" if v < 0 else _hex(palette[v % len(palette)])} for v in present]


def word_masks_image(masks: dict[str, np.ndarray], colours: dict[str, int] | None = None,
                      size: tuple[int, int] | None = None) -> tuple[Image.Image, list[dict[str, str]]] | None:
    """The words' truth masks as one colour image and its legend [{name, colour}]; ``colours`` (word ->
    palette index, shared by a whole gallery and extended here) keeps a word's colour the same on every card."""
    colours = {} if colours is None else colours
    words = [w for w, m in masks.items() if np.asarray(m).any()]
    if not words:
        return None
    shape = np.asarray(masks[words[0]]).shape
    labels = np.full(shape, -1, dtype=np.int64)
    for word in words:
        colours.setdefault(word, len(colours))
        mask = np.asarray(masks[word]).astype(bool)
        if mask.shape == shape:
            labels[mask] = colours[word]
    palette = _palette()
    legend = [{"name": word, "colour": _hex(palette[colours[word] % len(palette)])} for word in words]
    return _label_colours(labels, size), legend


def _ground_truth_for(run: Run):
    """The word-mask ground truth a run's mIoU-style metric used (None when there is none)."""
    from harness.data.ground_truth import resolve_ground_truth

    metrics = run.config.get("metric") or {}
    if not isinstance(metrics, dict):
        return None
    for options in metrics.values():
        if isinstance(options, dict) and "ground_truth" in options:
            try:
                return resolve_ground_truth(options.get("ground_truth"))
            except HarnessError as error:
                log.info("report: ground truth of %s unavailable (%s)", run.directory, error)
                return None
    return None


def _store_for(run: Run, store_root: Path | None, cwd: Path):
    from harness.store.samples import SampleStore

    if store_root is not None:
        root = store_root
    else:
        configured = (run.config.get("store") or {}).get("root", "results/cache")
        root = Path(str(configured)).expanduser()
        if not root.is_absolute():
            root = cwd / root
    if not root.is_dir():
        return None
    return SampleStore(root, verify=False)


def gallery_model(experiment: str, runs: list[Run], images: _Images, store_root: Path | None, cwd: Path,
                  max_samples: int | None = None) -> dict[str, Any] | None:
    """The gallery's cards for one experiment (one card per dataset and sample id, one variant per
    run and method), with the images written; None when no per-sample row names a stored sample."""
    cards: dict[tuple[str, str], dict[str, Any]] = {}
    notes: list[str] = []
    labels = _run_labels(runs)
    colours: dict[str, int] = {}  # truth class (word) -> palette index, the same on every card
    for run_number, run in enumerate(runs):
        entries = _sample_entries(run)
        if not entries:
            if not run.rows[run.rows["level"] == "sample"].empty:
                notes.append(f"{run.directory}: no sample keys (sample_keys.json, or a sample_key column; runs made "
                             "before they existed): rerun it to see its samples here.")
            continue
        store = _store_for(run, store_root, cwd)
        if store is None:
            notes.append(f"{run.directory}: its sample store was not found (give --store DIR).")
            continue
        # Methods whose samples carry an image first, so predictions without one reuse its image.
        base_images: dict[str, np.ndarray] = {}
        ground_truth = _ground_truth_for(run)
        run_dataset = _display(run.rows["dataset"].dropna().iloc[0]) if run.rows["dataset"].notna().any() else ""
        for method, sample_id, key, group in entries:
            dataset = _display(group["dataset"].iloc[0]) if len(group) and "dataset" in group else run_dataset
            card_id = (dataset, str(sample_id))
            if card_id not in cards:
                if max_samples is not None and len(cards) >= max_samples:
                    continue
                record = run.records.get(str(sample_id))
                cards[card_id] = {"id": f"{card_id[0]}/{card_id[1]}", "dataset": card_id[0], "sample": card_id[1],
                                  "prompt": record.prompt if record is not None else "", "words": [], "variants": [],
                                  "image": None, "truth": None, "truth_legend": []}
            card = cards[card_id]
            sample = store.get(str(key))
            variant = _variant(run, run_number, str(method), str(sample_id), str(key), group, sample, images,
                               base_images, ground_truth, labels[run_number], want_truth=card["truth"] is None,
                               colours=colours)
            # The ground truth belongs to the sample: drawn once per card, from its first variant that has one.
            truth, truth_legend = variant.pop("truth"), variant.pop("truth_legend")
            if card["truth"] is None and truth is not None:
                card["truth"], card["truth_legend"] = truth, truth_legend
            card["variants"].append(variant)
            for word in variant["words"]:
                if word not in card["words"]:
                    card["words"].append(word)
    if not cards:
        return {"cards": [], "notes": notes} if notes else None
    for card in cards.values():
        # The image once per card when every predictor of the sample drew on the same one (file names are
        # pixel digests); where they differ (a PAG sweep generates one per setting) each variant shows its own.
        shown = {v["image"] for v in card["variants"] if v["image"] is not None}
        if len(shown) == 1:
            card["image"] = shown.pop()
            for variant in card["variants"]:
                variant["image"] = None
    all_cards = list(cards.values())
    metrics = sorted({m for c in all_cards for v in c["variants"] for m in v["metrics"]})
    return {
        "cards": all_cards,
        "metrics": metrics,
        "methods": sorted({v["method"] for c in all_cards for v in c["variants"]}),
        "datasets": sorted({c["dataset"] for c in all_cards}),
        "words": sorted({w for c in all_cards for w in c["words"]}),
        "notes": notes,
    }


def _sample_entries(run: Run) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(method, sample id, store key, its per-sample rows) of a run: the keys from ``sample_keys.json``
    (every sample, also where a metric gives no per-sample rows), else from the ``sample_key`` column;
    the run's own method first, records in prompt-set order."""
    samples = run.rows[run.rows["level"] == "sample"]
    groups = {(str(m), str(i)): g for (m, i), g in samples.groupby(["method", "sample_id"], sort=False)}
    keys: dict[tuple[str, str], str] = {}
    keys_file = run.directory / "sample_keys.json"
    if keys_file.is_file():
        try:
            document = json.loads(keys_file.read_text())
            keys = {(str(m), str(i)): str(k) for m, mapping in document.items() for i, k in mapping.items()}
        except (json.JSONDecodeError, AttributeError) as error:
            log.warning("report: %s is unreadable (%s); using the rows' sample_key column.", keys_file, error)
    if not keys and "sample_key" in samples.columns:
        for (method, sample_id), group in groups.items():
            present = group["sample_key"].dropna()
            if len(present):
                keys[(method, sample_id)] = str(present.iloc[0])
    main_method = _main_method(run)
    order = {record_id: position for position, record_id in enumerate(run.records)}
    ranked = sorted(keys, key=lambda k: (k[0] != main_method, k[0], order.get(k[1], len(order)), k[1]))
    empty = samples.iloc[0:0]
    return [(method, sample_id, keys[(method, sample_id)], groups.get((method, sample_id), empty))
            for method, sample_id in ranked]


def _main_method(run: Run) -> str:
    method = (run.config.get("method") or {}).get("name") if isinstance(run.config.get("method"), dict) else None
    return str(method) if method else str(run.rows["method"].dropna().iloc[0])


def _run_labels(runs: list[Run]) -> list[str]:
    """What tells runs of one method on one dataset apart: the hp.* (and model, split, seed) values
    that differ between them (e.g. ``pag_scale=3.0``), else the run folder's name; empty where the
    method and dataset alone do."""
    if len(runs) < 2:
        return [""] * len(runs)
    settings = []
    for run in runs:
        aggregates = run.rows[run.rows["level"] == "aggregate"]
        first = (aggregates if not aggregates.empty else run.rows).iloc[0]
        settings.append({c: _display(first[c]) for c in run.rows.columns
                         if c.startswith("hp.") or c in ("model", "split", "seed")})
    # Runs share a card when they share a dataset; the method and dataset already tell the rest apart.
    groups = [(_main_method(run), _display(run.rows["dataset"].dropna().iloc[0]) if run.rows["dataset"].notna().any()
               else "") for run in runs]
    labels = []
    for run, group, values in zip(runs, groups, settings):
        peers = [s for g, s in zip(groups, settings) if g == group]
        if len(peers) < 2:  # method and dataset tell this run apart
            labels.append("")
            continue
        columns = sorted({c for s in peers for c in s})
        varying = [c for c in columns if len({s.get(c, "") for s in peers}) > 1]
        shown = ", ".join(f"{c.removeprefix('hp.')}={values.get(c, '')}" for c in varying[:3])
        labels.append(shown or run.directory.name)
    return labels


def _variant(run: Run, run_number: int, method: str, sample_id: str, key: str, group: pd.DataFrame, sample,
             images: _Images, base_images: dict[str, np.ndarray], ground_truth, run_label: str = "",
             want_truth: bool = True, colours: dict[str, int] | None = None) -> dict[str, Any]:
    label = f"{method} ({run_label})" if run_label else method
    metrics = {}
    for metric, values in group.groupby("metric"):
        numbers = pd.to_numeric(values["value"], errors="coerce").dropna()
        if len(numbers):
            metrics[str(metric)] = round(float(numbers.mean()), 6)
    variant: dict[str, Any] = {"method": method, "label": label, "run": run_number, "metrics": metrics,
                               "image": None, "overlays": [], "segmentation": None, "truth": None,
                               "truth_legend": [], "words": [], "missing": sample is None}
    if sample is None:
        return variant
    stem = key[:24]
    image = sample.image
    if image is not None:
        base_images[sample_id] = image
        # Named by its pixels: the same image under several methods' keys is one file, shown once.
        digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:24]
        variant["image"] = images.write(f"img_{digest}.png", image)
    base = image if image is not None else base_images.get(sample_id)
    for name in sorted(sample.arrays):
        if not name.startswith(HEATMAP_PREFIX):
            continue
        word = name[len(HEATMAP_PREFIX):]
        index = len(variant["overlays"])
        heat = np.asarray(sample.arrays[name])
        picture = _overlay(base, heat) if base is not None else _label_colours((heat > heat.mean()).astype(int))
        variant["overlays"].append({"word": word, "src": images.write(f"{stem}_h{index}.png", picture)})
        variant["words"].append(word)
    if "labels" in sample.arrays:
        size = (base.shape[1], base.shape[0]) if base is not None else None
        variant["segmentation"] = images.write(f"{stem}_seg.png", _label_colours(sample.arrays["labels"], size))
        record = run.records.get(sample_id)
        if record is not None and want_truth:
            from harness.data.image_sets import load_record_labels

            try:
                truth = load_record_labels(record)
                variant["truth"] = images.write(f"{stem}_gt.png", _label_colours(truth, size))
                variant["truth_legend"] = _label_legend(truth)
            except (HarnessError, OSError, ValueError) as error:
                log.debug("report: no label ground truth for %s (%s)", sample_id, error)
    elif variant["overlays"] and ground_truth is not None and want_truth:
        record = run.records.get(sample_id)
        if record is not None:
            try:
                drawn = word_masks_image(ground_truth.masks(record, sample), colours)
            except Exception as error:  # any ground-truth source may fail on one record; the page still builds
                log.debug("report: no word-mask ground truth for %s (%s)", sample_id, error)
                drawn = None
            if drawn is not None:
                variant["truth"] = images.write(f"{stem}_gt.png", drawn[0])
                variant["truth_legend"] = drawn[1]
    return variant


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------

def provenance_model(run: Run, cwd: Path) -> dict[str, Any]:
    rows = run.rows
    first = rows.iloc[0] if len(rows) else pd.Series(dtype=object)
    sha = str(first.get("git_sha", "unknown") or "unknown")
    try:
        versions = json.loads(str(first.get("versions") or "{}"))
    except json.JSONDecodeError:
        versions = {"raw": str(first.get("versions"))}
    overrides = list(run.overrides)
    if run.multirun:  # one job of a sweep: run it alone
        overrides.append("hydra.mode=RUN")
    command = None
    if (run.directory / ".hydra" / "overrides.yaml").is_file():
        command = "harness run " + " ".join(shlex.quote(o) for o in overrides)
        clean_sha = sha.removesuffix("-dirty")
        if clean_sha != "unknown":
            command = f"git checkout {shlex.quote(clean_sha)} && {command}"
    try:
        shown = str(run.directory.resolve().relative_to(cwd.resolve()))
    except ValueError:
        shown = str(run.directory)
    return {"directory": shown, "experiment": run.experiment,
            "methods": sorted(str(m) for m in rows["method"].dropna().unique()),
            "git_sha": sha, "dirty": sha.endswith("-dirty"),
            "config_hash": str(first.get("config_hash", "") or ""), "versions": versions,
            "command": command, "config_text": run.config_text,
            "identity": {c: _display(first.get(c)) for c in IDENTITY_COLUMNS if c in rows.columns}}


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

def environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env


def check_out(out: Path) -> None:
    """``--out`` names an HTML file that is absent or a page harness report wrote; anything else
    (a folder, another file) stops with one line and is left as it is."""
    if out.is_dir():
        raise HarnessError(f"--out {out} is a folder; give a file name ending in .html (e.g. {out / 'report.html'}).")
    if out.suffix.lower() not in (".html", ".htm"):
        raise HarnessError(f"--out {out}: give a file name ending in .html.")
    if out.exists():
        try:
            with open(out, encoding="utf-8", errors="replace") as handle:
                head = handle.read(4096)
        except OSError as error:
            raise HarnessError(f"--out {out} cannot be read ({error.strerror}); choose another --out.") from None
        if PAGE_MARKER not in head:
            raise HarnessError(f"--out {out} exists and was not written by harness report; it is left as it is. "
                               "Choose another --out (or remove the file yourself).")


def build_report(paths: list[str], out: str | Path = "report.html", store_root: str | Path | None = None,
                 with_baselines: bool = True, page_size: int = DEFAULT_PAGE_SIZE,
                 thumbnail: int = DEFAULT_THUMBNAIL, max_samples: int | None = None,
                 cwd: Path | None = None, title: str | None = None) -> Path:
    """Write the report of the runs under ``paths`` to ``out`` (and its images to ``<stem>_files/``)."""
    from harness import __version__

    began = time.perf_counter()
    cwd = Path.cwd() if cwd is None else Path(cwd)
    out = Path(out)
    check_out(out)
    runs = load_runs(paths)
    folder = out.parent / f"{out.stem}_files"
    if folder.exists() and not (folder / FOLDER_MARKER).is_file():
        raise HarnessError(f"{folder} exists and was not written by harness report; it would be replaced. "
                           "Choose another --out.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if folder.is_dir():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / FOLDER_MARKER).write_text("images of the report beside this folder; replaced when it is rebuilt\n")
    except OSError as error:
        raise HarnessError(f"The report folder {folder} cannot be written ({error.strerror}).") from None
    images = _Images(folder, thumbnail)
    store = Path(store_root) if store_root is not None else None
    by_experiment: dict[str, list[Run]] = {}
    for run in runs:
        by_experiment.setdefault(run.experiment, []).append(run)
    sections = []
    for number, (experiment, experiment_runs) in enumerate(by_experiment.items()):
        frames = [r.rows[r.rows["level"] == "aggregate"] for r in experiment_runs]
        aggregates = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        with_published = _published_rows(aggregates, with_baselines) if not aggregates.empty else aggregates
        sections.append({
            "anchor": f"exp{number}",
            "experiment": experiment,
            "runs": len(experiment_runs),
            "table": table_model(with_published) if not with_published.empty else None,
            "plots": sweep_plots(experiment, aggregates, experiment_runs, folder, f"e{number}")
            if not aggregates.empty else [],
            "gallery": gallery_model(experiment, experiment_runs, images, store, cwd, max_samples),
            "provenance": [provenance_model(r, cwd) for r in experiment_runs],
        })
    env = environment()
    page = env.get_template("report.html.j2").render(
        title=title or "Harness report", sections=sections, page_size=int(page_size),
        paths=[str(p) for p in paths], generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        harness_version=__version__, script=(TEMPLATE_DIR / "report.js").read_text(),
        style=(TEMPLATE_DIR / "report.css").read_text())
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(out)
    log.info("report: %d run(s), %d image file(s), %.1f s", len(runs), len(images.written), time.perf_counter() - began)
    return out


def main(args: list[str]) -> int:
    """``harness report PATH... --out report.html``."""
    import argparse

    parser = argparse.ArgumentParser(prog="harness report", description="One static HTML page over runs and sweeps.")
    parser.add_argument("paths", nargs="+", help="run directories, sweep directories or globs")
    parser.add_argument("--out", default="report.html", help="the page to write (images go to <stem>_files/ beside it)")
    parser.add_argument("--store", default=None, help="sample store (default: each run's store.root)")
    parser.add_argument("--no-baselines", action="store_true", help="do not join published numbers")
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="gallery cards per page")
    parser.add_argument("--thumbnail", type=int, default=DEFAULT_THUMBNAIL, help="longest side of gallery images (px)")
    parser.add_argument("--max-samples", type=int, default=None, help="at most this many gallery cards per experiment")
    options = parser.parse_args(args)
    if options.page_size < 1 or options.thumbnail < 16:
        raise HarnessError("--page-size must be >= 1 and --thumbnail >= 16.")
    began = time.perf_counter()
    out = build_report(options.paths, options.out, store_root=options.store, with_baselines=not options.no_baselines,
                       page_size=options.page_size, thumbnail=options.thumbnail, max_samples=options.max_samples)
    print(f"Report: {out.resolve()} ({time.perf_counter() - began:.1f} s)")
    return 0


__all__ = ["build_report", "load_runs", "table_model", "gallery_model", "main", "ROWS_FILE"]
