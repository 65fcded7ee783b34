"""Figures of the DAAM analyses, written under each run's ``figures/`` (matplotlib, Agg backend).

- ``pos_miou.png``: per-POS bar chart of ``daam_pos.miou`` with its 95% intervals (and the share
  of words with no visible referent beside it);
- ``relation_table.png`` / ``relation_table.md``: the visuosyntactic table in the reference
  notebook's layout (top relations by count; mIoU, mIoD, mIoH x100 and |mIoH - mIoD|, sorted by it);
- ``adjective_swaps.png``: a grid of adjective-swap pairs (original, swapped, per-pixel change,
  the unrelated-word control and its change).

The metrics and methods that draw them call these functions from their ``save_figures``, the
run's one figure hook (:meth:`harness.metrics.base.Metric.save_figures`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def _aggregates(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    frame = rows[(rows["level"] == "aggregate") & (rows["metric"] == metric) & rows["item"].notna()]
    return frame.set_index("item")


def pos_bar_chart(rows: pd.DataFrame, path: Path) -> Path | None:
    """Bar chart of DAAM's mIoU per part of speech with 95% intervals, tags ordered by word count."""
    miou = _aggregates(rows, "daam_pos.miou")
    referent = _aggregates(rows, "daam_pos.no_referent")
    if referent.empty:
        return None
    tags = list(referent.sort_values("n", ascending=False).index)
    figure = _figure(max(7.0, 0.9 * len(tags) + 3), 3.8)
    axis, share_axis = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    positions = np.arange(len(tags))
    values = [miou["value"].get(t, np.nan) for t in tags]
    low = [miou["ci_low"].get(t, np.nan) for t in tags]
    high = [miou["ci_high"].get(t, np.nan) for t in tags]
    errors = np.array([[v - lo if np.isfinite(lo) else 0 for v, lo in zip(values, low)],
                       [hi - v if np.isfinite(hi) else 0 for v, hi in zip(values, high)]])
    axis.bar(positions, np.nan_to_num(values), yerr=np.nan_to_num(errors), capsize=3, color="#4878a8")
    for x, tag in enumerate(tags):
        n = int(miou["n"].get(tag, 0)) if tag in miou.index else 0
        axis.text(x, 0.01, f"n={n}" if n else "no mask", ha="center", va="bottom", fontsize=6, rotation=90, color="white" if n else "black")
    axis.set_xticks(positions, tags, rotation=45, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("mIoU (95% CI)")
    axis.set_title("DAAM mIoU by POS", fontsize=9)
    shares = [referent["value"].get(t, np.nan) for t in tags]
    share_low = [referent["ci_low"].get(t, np.nan) for t in tags]
    share_high = [referent["ci_high"].get(t, np.nan) for t in tags]
    share_errors = np.array([[s - lo for s, lo in zip(shares, share_low)], [hi - s for s, hi in zip(shares, share_high)]])
    share_axis.bar(positions, shares, yerr=np.nan_to_num(share_errors), capsize=3, color="#a86848")
    share_axis.set_xticks(positions, tags, rotation=45, ha="right", fontsize=8)
    share_axis.set_ylim(0, 1)
    share_axis.set_title("no visible referent (share, Wilson 95%)", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def relation_frame(rows: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The notebook's table: top relations by count; mIoU, mIoD, mIoH (x100), |mIoH - mIoD|, sorted by it."""
    parts = {}
    for key, label in (("iou", "mIoU"), ("iod", "mIoD"), ("ioh", "mIoH")):
        frame = _aggregates(rows, f"daam_syntax.m{key}")
        parts[label] = frame["value"] * 100
        parts[f"{label} CI"] = frame.apply(
            lambda r: "" if pd.isna(r["ci_low"]) else f"{100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}", axis=1)
        parts["count"] = frame["n"]
        ceiling = _aggregates(rows, f"daam_syntax.gt_m{key}")
        if not ceiling.empty:
            parts[f"GT {label}"] = ceiling["value"] * 100
    table = pd.DataFrame(parts)
    if table.empty:
        return table
    table = table.sort_values("count", ascending=False, kind="stable").head(int(top))
    table["delta"] = (table["mIoH"] - table["mIoD"]).abs()
    table = table.sort_values("delta", kind="stable")
    table.index.name = "relation"
    order = ["count", "mIoU", "mIoD", "mIoH", "delta", "mIoU CI", "mIoD CI", "mIoH CI", "GT mIoU", "GT mIoD", "GT mIoH"]
    return table[[c for c in order if c in table.columns]]


def relation_table(rows: pd.DataFrame, folder: Path, top: int = 10) -> list[Path]:
    """``relation_table.md`` and ``relation_table.png`` (the table drawn) under ``folder``."""
    table = relation_frame(rows, top)
    if table.empty:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    shown = table.copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    shown["count"] = table["count"].astype(int).astype(str)
    markdown = folder / "relation_table.md"
    header = "| relation | " + " | ".join(shown.columns) + " |\n|" + "---|" * (len(shown.columns) + 1) + "\n"
    body = "".join(f"| {index} | " + " | ".join(str(v) for v in row) + " |\n" for index, row in shown.iterrows())
    markdown.write_text("Top relations by count, sorted by |mIoH - mIoD| (x100; the reference notebook's layout).\n\n"
                        + header + body, encoding="utf-8")
    figure = _figure(min(16.0, 1.2 * (len(shown.columns) + 1) + 1), 0.32 * (len(shown) + 2) + 0.6)
    axis = figure.subplots()
    axis.axis("off")
    cell_table = axis.table(cellText=shown.values.tolist(), rowLabels=list(shown.index), colLabels=list(shown.columns),
                            loc="center", cellLoc="right")
    cell_table.auto_set_font_size(False)
    cell_table.set_fontsize(7)
    axis.set_title("Visuosyntactic analysis: head-dependent set statistics (x100)", fontsize=9)
    figure.tight_layout()
    image = folder / "relation_table.png"
    figure.savefig(image)
    return [markdown, image]


def swap_grid(path: Path, records: list, samples: Mapping[str, Any], limit: int = 8) -> Path | None:
    """Rows of (original, adjective swapped, its change map, unrelated swap, its change map) for up to ``limit`` records."""
    from harness.analysis.measures import change_map

    shown = []
    for record in records:
        sample = samples.get(record.id) if hasattr(samples, "get") else samples[record.id]
        if sample is None or sample.image is None or "image:adjective" not in sample.arrays:
            continue
        shown.append((record, sample))
        if len(shown) == limit:
            break
    if not shown:
        return None
    columns = 5
    figure = _figure(2.0 * columns, 2.1 * len(shown) + 0.3)
    axes = figure.subplots(len(shown), columns, squeeze=False)
    for row, (record, sample) in enumerate(shown):
        swap = record.meta["swap"]
        original = np.asarray(sample.image)
        panels = [(original, record.prompt, None),
                  (sample.arrays["image:adjective"], f"{swap['word']} -> {swap['to']}", None),
                  (change_map(original, sample.arrays["image:adjective"]), "change (adjective)", "magma")]
        if "image:unrelated" in sample.arrays:
            unrelated = (swap.get("unrelated") or {})
            panels += [(sample.arrays["image:unrelated"], f"{unrelated.get('word')} -> {unrelated.get('to')}", None),
                       (change_map(original, sample.arrays["image:unrelated"]), "change (unrelated)", "magma")]
        for column in range(columns):
            axis = axes[row, column]
            axis.axis("off")
            if column < len(panels):
                image, title, cmap = panels[column]
                if cmap:
                    axis.imshow(image, cmap=cmap, vmin=0.0, vmax=float(np.sqrt(3)))
                else:
                    axis.imshow(image)
                axis.set_title(title, fontsize=6, wrap=True)
    figure.suptitle("Adjective swaps (same seed); change = per-pixel RGB L2, scale 0 to sqrt(3)", fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
