"""Binary masks, threshold sweeps and overlay figures for DAAM-style heat maps.

A mask is the heat map min-max normalised to [0, 1], then ``> threshold`` (DAAM: 0.4). The
overlay figure shows the image and, per word, the map (upsampled to the image, bicubic)
over it: one PNG per prompt, written with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.metrics.overlap import iou

DEFAULT_THRESHOLD = 0.4
HEATMAP_PREFIX = "heatmap:"


def normalize_minmax(heat_map: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1]; a constant map becomes all zeros."""
    heat_map = np.asarray(heat_map, dtype=np.float64)
    low, high = float(heat_map.min()), float(heat_map.max())
    if high - low <= 0:
        return np.zeros_like(heat_map)
    return (heat_map - low) / (high - low)


def binary_mask(heat_map: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The DAAM mask: min-max normalise, then ``> threshold`` (bool array)."""
    return normalize_minmax(heat_map) > threshold


def threshold_sweep(heat_map: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Masks at every threshold: bool array (len(thresholds), H, W)."""
    normalized = normalize_minmax(heat_map)
    return np.stack([normalized > float(tau) for tau in thresholds])


def sweep_iou(heat_map: np.ndarray, truth: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """IoU of the mask with a same-size boolean ground truth at every threshold (empty union: 1)."""
    truth = np.asarray(truth, dtype=bool)
    masks = threshold_sweep(heat_map, thresholds)
    if masks.shape[1:] != truth.shape:
        raise ValueError(f"heat map {masks.shape[1:]} and ground truth {truth.shape} differ in size; resize first")
    return iou(masks, truth)


def upsample(heat_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic upsampling of a 2-D map to (height, width), as the reference's ``expand_image``."""
    import torch
    import torch.nn.functional as F

    tensor = torch.as_tensor(np.asarray(heat_map, dtype=np.float32))[None, None]
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor[0, 0].numpy()
    return F.interpolate(tensor, size=tuple(size), mode="bicubic", align_corners=False)[0, 0].numpy()


def sample_heat_maps(sample: Any) -> dict[str, np.ndarray]:
    """``{word: map}`` from a sample's ``heatmap:<word>`` arrays, in ``meta["words"]`` order when given."""
    arrays = sample.arrays
    words = list((sample.meta or {}).get("words") or [])
    keys = [HEATMAP_PREFIX + w for w in words if HEATMAP_PREFIX + w in arrays]
    keys += sorted(k for k in arrays if k.startswith(HEATMAP_PREFIX) and k not in keys)
    return {key[len(HEATMAP_PREFIX):]: np.asarray(arrays[key]) for key in keys}


def overlay_figure(image: np.ndarray, heat_maps: Mapping[str, np.ndarray], title: str = "",
                   threshold: float | None = DEFAULT_THRESHOLD, columns: int = 4) -> Any:
    """A matplotlib figure: the image, then one panel per word with its normalised map over the image.

    With ``threshold`` the mask outline at that threshold is drawn on each panel.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = 1 + len(heat_maps)
    columns = max(1, min(columns, panels))
    rows = -(-panels // columns)
    figure = Figure(figsize=(2.6 * columns, 2.8 * rows + (0.4 if title else 0)), dpi=100)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    height, width = image.shape[:2]
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    for axis, (word, heat) in zip(axes[1:], heat_maps.items()):
        normalized = normalize_minmax(upsample(heat, (height, width)))
        axis.imshow(image)
        axis.imshow(normalized, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        if threshold is not None and normalized.max() > threshold:
            axis.contour(normalized > threshold, levels=[0.5], colors="white", linewidths=0.8)
        axis.set_title(word, fontsize=9)
    for axis in axes:
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=9, wrap=True)
    figure.tight_layout()
    return figure


def _file_name(record_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", record_id)[:120] or "sample"


def save_overlays(run_dir: str | Path, records: Sequence[Any], samples: Mapping[str, Any] | Sequence[Any],
                  threshold: float | None = DEFAULT_THRESHOLD) -> list[Path]:
    """Write ``<run_dir>/figures/<record id>.png`` for every sample that has an image and heat maps.

    ``samples``: ``{record id: Sample}`` (what a run holds) or a list aligned with ``records``.
    Returns the files written.
    """
    folder = Path(run_dir) / "figures"
    pairs = [(r, samples.get(r.id)) for r in records] if isinstance(samples, Mapping) else list(zip(records, samples))
    written = []
    for record, sample in pairs:
        if sample is None or sample.image is None:
            continue
        heat_maps = sample_heat_maps(sample)
        if not heat_maps:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        figure = overlay_figure(sample.image, heat_maps, title=getattr(record, "prompt", ""), threshold=threshold)
        path = folder / f"{_file_name(str(record.id))}.png"
        figure.savefig(path)
        written.append(path)
    return written
