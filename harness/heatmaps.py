"""Heat maps, once for the whole harness: the DAAM mask, threshold sweeps and overlay figures.

Every caller that turns a word's heat map into a mask (the DAAM mIoU metrics, the DAAM analyses,
the toy probe, the figures) calls :func:`heatmap_to_mask`, so its edge cases are decided here:

- resizing to the ground truth (or image) size is **bilinear** (``align_corners=False``), which
  never over- or undershoots the map's range (bicubic does);
- the map is **min-max normalised** over the image, then thresholded **strictly** ``> threshold``
  (DAAM: :data:`DEFAULT_THRESHOLD` = 0.4, the one place this default lives);
- a **constant map** has no range to normalise: a positive one says "everywhere" and becomes
  all ones (a **full mask**: the ``whole_image`` baseline is exactly this), a zero (or negative)
  one says "nowhere" and becomes all zeros (an **empty mask**: a word that drew no attention).
  DAAM's maps are clamped at zero, so these are the only two cases a run meets.

The overlay figure shows the image and, per word, the normalised map over it and the mask's
outline: one PNG per prompt, written with matplotlib's Agg backend (no display needed).
This module is core (it imports only :mod:`harness.overlap`): methods, metrics and the CLI share it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.overlap import iou

#: DAAM's mask threshold (Tang et al., 2023); every metric, method and figure defaults to it.
DEFAULT_THRESHOLD = 0.4
#: A sample's arrays key for the heat map of one word: ``heatmap:<word>``.
HEATMAP_PREFIX = "heatmap:"


def normalize_minmax(heat_map: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] (float64); a constant map becomes all ones when positive, else all zeros
    (see the module docstring)."""
    heat_map = np.asarray(heat_map, dtype=np.float64)
    low, high = float(heat_map.min()), float(heat_map.max())
    if not high > low:
        return np.full(heat_map.shape, 1.0 if high > 0 else 0.0)
    return (heat_map - low) / (high - low)


def upsample(heat_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D map resized to ``size`` (H, W): bilinear, ``align_corners=False``, float64."""
    array = np.asarray(heat_map, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"a heat map must be 2-D, got shape {array.shape}")
    size = (int(size[0]), int(size[1]))
    if array.shape == size:
        return array
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(array)[None, None]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def heatmap_to_mask(heat_map: np.ndarray, size: tuple[int, int] | None = None,
                    threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """DAAM's binary mask of a word's map: resized to ``size`` (if given), min-max normalised,
    ``> threshold``. A constant map gives a full mask when positive, else an empty one."""
    array = np.asarray(heat_map, dtype=np.float64)
    shape = tuple(int(s) for s in size) if size is not None else array.shape
    if not array.max() > array.min():
        # decided on the map itself: resizing a constant map leaves rounding noise that
        # normalisation would blow up into a speckled mask
        return np.full(shape, bool(array.max() > 0))
    return normalize_minmax(upsample(array, shape)) > float(threshold)


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


def sample_heat_maps(sample: Any, lower: bool = False) -> dict[str, np.ndarray]:
    """``{word: map}`` from a sample's ``heatmap:<word>`` arrays, in ``meta["words"]`` order when given
    (``lower``: words in lower case, as metrics match them against nouns)."""
    arrays = sample.arrays
    words = list((sample.meta or {}).get("words") or [])
    keys = [HEATMAP_PREFIX + w for w in words if HEATMAP_PREFIX + w in arrays]
    keys += sorted(k for k in arrays if k.startswith(HEATMAP_PREFIX) and k not in keys)
    maps = {key[len(HEATMAP_PREFIX):]: np.asarray(arrays[key]) for key in keys}
    return {word.lower(): heat for word, heat in maps.items()} if lower else maps


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
        mask = heatmap_to_mask(normalized, threshold=threshold) if threshold is not None else None
        if mask is not None and mask.any():
            axis.contour(mask, levels=[0.5], colors="white", linewidths=0.8)
        axis.set_title(word, fontsize=9)
    for axis in axes:
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=9, wrap=True)
    figure.tight_layout()
    return figure


def figure_file_name(record_id: str) -> str:
    """A record id as a safe file name (figures are named after their record)."""
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
        path = folder / f"{figure_file_name(str(record.id))}.png"
        figure.savefig(path)
        written.append(path)
    return written
