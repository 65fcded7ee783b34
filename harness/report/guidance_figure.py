"""The guidance figure: per guider, quality against alignment over its scale grid, one curve each.

Self-contained: takes aggregate result rows (any runs of ``method=guider``: a dev grid, a sweep)
and writes one PNG. Used by ``harness guidance-study`` and by ``harness report`` for any
experiment whose rows hold more than one guider (:func:`guider_plots`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import DataError

GUIDER_COLUMN = "hp.guider"
#: quality metrics (lower is better) and alignment metrics (higher is better), first found is used
QUALITY_METRICS = ("kid", "fd_dinov2", "cmmd", "fid")
ALIGNMENT_METRICS = ("gen_accuracy", "clip_score")


def guider_points(aggregates: pd.DataFrame, quality: str, alignment: str) -> pd.DataFrame:
    """One row per run: guider, the scale it varied (``scale``, ``scale_key``), quality, alignment."""
    if GUIDER_COLUMN not in aggregates.columns:
        raise DataError("no hp.guider column: these rows are not runs of method=guider")
    rows = aggregates[aggregates["metric"].isin([quality, alignment]) & aggregates[GUIDER_COLUMN].notna()]
    run_key = "run_dir" if "run_dir" in rows.columns else GUIDER_COLUMN
    hp_columns = [c for c in rows.columns if c.startswith("hp.") and c != GUIDER_COLUMN]
    wide = rows.pivot_table(index=[run_key, GUIDER_COLUMN], columns="metric", values="value", aggfunc="first")
    if quality not in wide.columns or alignment not in wide.columns:
        raise DataError(f"the rows need both {quality} and {alignment}")
    settings = rows.drop_duplicates(run_key).set_index(run_key)[hp_columns]
    points = []
    for (run, guider), values in wide.iterrows():
        points.append({"run": run, "guider": guider, "quality": values[quality], "alignment": values[alignment],
                       **settings.loc[run].to_dict()})
    frame = pd.DataFrame(points)
    frame["scale_key"], frame["scale"] = None, float("nan")
    for _guider, group in frame.groupby("guider"):
        varying = [c for c in hp_columns if pd.to_numeric(group[c], errors="coerce").notna().all()
                   and group[c].nunique() > 1]
        if varying:
            frame.loc[group.index, "scale_key"] = varying[0].removeprefix("hp.")
            frame.loc[group.index, "scale"] = pd.to_numeric(group[varying[0]])
    return frame.sort_values(["guider", "scale"])


def quality_vs_alignment(aggregates: pd.DataFrame, out: str | Path, quality: str | None = None,
                         alignment: str | None = None, title: str = "") -> Path:
    """Write the figure: x = alignment (higher better), y = quality (lower better), one curve per guider."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = set(aggregates["metric"])
    quality = quality or next((m for m in QUALITY_METRICS if m in present), None)
    alignment = alignment or next((m for m in ALIGNMENT_METRICS if m in present), None)
    if quality is None or alignment is None:
        raise DataError(f"needs a quality metric ({', '.join(QUALITY_METRICS)}) and an alignment metric "
                        f"({', '.join(ALIGNMENT_METRICS)}); the rows have {sorted(present)}")
    points = guider_points(aggregates, quality, alignment)
    figure, axis = plt.subplots(figsize=(7, 5))
    colours = plt.get_cmap("tab20").colors  # one colour per guider (there are more than ten)
    markers = "osD^v<>pP*Xh"
    for number, (guider, group) in enumerate(points.groupby("guider")):
        line = axis.plot(group["alignment"], group["quality"], marker=markers[number % len(markers)], label=guider,
                         color=colours[(2 * number) % 20 + (number // 10) % 2])[0]
        for _, point in group.iterrows():
            if pd.notna(point["scale"]):
                axis.annotate(f"{point['scale']:g}", (point["alignment"], point["quality"]), fontsize=7,
                              color=line.get_color(), xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel(f"{alignment} (higher is better)")
    axis.set_ylabel(f"{quality} (lower is better)")
    axis.set_title(title or f"{quality} vs {alignment} per guider (labels: scale)")
    axis.legend(fontsize=7, loc="best")
    axis.grid(alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def guider_plots(experiment: str, aggregates: pd.DataFrame, folder: Path, prefix: str) -> list[dict[str, Any]]:
    """The report hook: the figure when the rows hold more than one guider, else nothing."""
    if GUIDER_COLUMN not in aggregates.columns or aggregates[GUIDER_COLUMN].nunique() < 2:
        return []
    name = f"{prefix}_quality_vs_alignment.png"
    try:
        quality_vs_alignment(aggregates, folder / name, title=f"{experiment}: quality vs alignment per guider")
    except DataError:
        return []
    return [{"src": f"{folder.name}/{name}", "metric": "quality vs alignment", "x": "guider"}]
