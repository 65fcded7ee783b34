"""Pure functions behind the DAAM analyses' metrics (hand-written: small set arithmetic on masks).

Set statistics of a head-dependent pair (the reference notebook's definitions, binary maps):
IoU = |H ∩ D| / |H ∪ D|, IoD = |H ∩ D| / |D|, IoH = |H ∩ D| / |H|; an empty denominator gives 0,
as the notebook's ``iou``/``ioa`` do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SetStatistics:
    iou: float
    iod: float
    ioh: float


def set_statistics(head: np.ndarray, dependent: np.ndarray) -> SetStatistics:
    """IoU, IoD and IoH of two boolean masks of one shape (0 where a denominator is empty)."""
    head = np.asarray(head, dtype=bool)
    dependent = np.asarray(dependent, dtype=bool)
    if head.shape != dependent.shape:
        raise ValueError(f"mask shapes differ: {head.shape} vs {dependent.shape}")
    intersection = float(np.logical_and(head, dependent).sum())
    union = float(np.logical_or(head, dependent).sum())
    size_head, size_dependent = float(head.sum()), float(dependent.sum())
    return SetStatistics(
        iou=intersection / union if union > 0 else 0.0,
        iod=intersection / size_dependent if size_dependent > 0 else 0.0,
        ioh=intersection / size_head if size_head > 0 else 0.0,
    )


def mass_outside(heat_map: np.ndarray, objects: np.ndarray) -> float:
    """Share of a (non-negative) map's total mass on pixels outside ``objects`` (bool, same shape).

    Negative values are clamped to 0 first; a map with no mass gives NaN (nothing to share out).
    """
    heat = np.clip(np.asarray(heat_map, dtype=np.float64), 0.0, None)
    if heat.shape != objects.shape:
        raise ValueError(f"map {heat.shape} and mask {objects.shape} differ in size")
    total = heat.sum()
    if total <= 0:
        return float("nan")
    return float(heat[~np.asarray(objects, dtype=bool)].sum() / total)


def spread_beyond(word_mask: np.ndarray, reference_mask: np.ndarray) -> float:
    """Share of ``word_mask``'s pixels outside ``reference_mask`` (1 - IoD with D = the word); 0 for an empty word mask."""
    word_mask = np.asarray(word_mask, dtype=bool)
    size = float(word_mask.sum())
    if size == 0:
        return 0.0
    return float(np.logical_and(word_mask, ~np.asarray(reference_mask, dtype=bool)).sum() / size)


@dataclass(frozen=True)
class RegionChange:
    inside: float  #: root-mean-square pixel change over the region (NaN when empty)
    outside: float  #: the same over the rest of the image (NaN when empty)


def change_map(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-pixel L2 norm of the RGB difference, with images scaled to [0, 1] (HxW float64)."""
    a = np.asarray(before, dtype=np.float64) / 255.0
    b = np.asarray(after, dtype=np.float64) / 255.0
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return np.sqrt(((a - b) ** 2).sum(axis=-1))


def region_change(before: np.ndarray, after: np.ndarray, region: np.ndarray) -> RegionChange:
    """Root-mean-square of the per-pixel change (:func:`change_map`) inside and outside ``region``.

    RMS over pixels, so a region's figure does not grow with its area: two regions changed
    equally per pixel give equal figures whatever their sizes.
    """
    change = change_map(before, after)
    region = np.asarray(region, dtype=bool)
    if region.shape != change.shape:
        raise ValueError(f"region {region.shape} and images {change.shape} differ in size")

    def rms(values: np.ndarray) -> float:
        return float(np.sqrt((values ** 2).mean())) if values.size else float("nan")

    return RegionChange(inside=rms(change[region]), outside=rms(change[~region]))


def masked_image(image: np.ndarray, keep: np.ndarray, fill: int = 128) -> np.ndarray:
    """``image`` with every pixel outside ``keep`` set to the grey ``fill`` (for region feature distances)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    out[~np.asarray(keep, dtype=bool)] = fill
    return out
