"""Region overlap, once for the whole harness: IoU of boolean masks and the pixel confusion matrix.

Every mIoU in the harness (DAAM's noun mIoU and its threshold sweep, the k-means baselines'
matching, the toy annotator and probe, EmerDiff's Hungarian mIoU, the toy segmenter's held-out
scores) is computed from these functions. numpy only (imported by light modules).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import DataError


def iou(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray | float:
    """|P ∩ G| / |P ∪ G| over the last two axes of boolean masks; 1.0 where both are empty.

    ``prediction`` may carry leading axes (e.g. one mask per threshold) that broadcast against
    ``truth``; a pair of 2-D masks gives a float.
    """
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if prediction.shape[-2:] != truth.shape[-2:]:
        raise ValueError(f"mask shapes differ: {prediction.shape[-2:]} vs {truth.shape[-2:]}; resize first")
    intersection = np.logical_and(prediction, truth).sum(axis=(-2, -1))
    union = np.logical_or(prediction, truth).sum(axis=(-2, -1))
    values = np.where(union > 0, intersection / np.maximum(union, 1), 1.0)
    return float(values) if values.ndim == 0 else values


def mask_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two boolean masks of one shape (1.0 when both are empty)."""
    if np.shape(prediction) != np.shape(truth):
        raise ValueError(f"mask shapes differ: {np.shape(prediction)} vs {np.shape(truth)}")
    return float(iou(prediction, truth))


def confusion_matrix(predicted: np.ndarray, target: np.ndarray, num_segments: int, num_classes: int) -> np.ndarray:
    """``M[k, c]`` = pixels predicted as segment ``k`` whose target is class ``c``, over pixels with ``target >= 0``.

    Target ids >= ``num_classes`` are a data error; predicted ids outside [0, num_segments) are refused.
    Transpose for the (true, predicted) orientation: the IoU of class i is
    ``M[i, i] / (M[i, :].sum() + M[:, i].sum() - M[i, i])`` either way.
    """
    predicted = np.asarray(predicted).astype(np.int64).ravel()
    target = np.asarray(target).astype(np.int64).ravel()
    if predicted.shape != target.shape:
        raise ValueError(f"prediction and target differ in size: {predicted.shape} vs {target.shape}")
    valid = target >= 0
    if np.any(target[valid] >= num_classes):
        raise DataError(f"ground truth has class id {int(target[valid].max())} >= num_classes={num_classes}")
    predicted, target = predicted[valid], target[valid]
    if predicted.size and (predicted.min() < 0 or predicted.max() >= num_segments):
        raise ValueError(f"predicted segment ids must be in [0, {num_segments}), got [{predicted.min()}, {predicted.max()}]")
    return np.bincount(predicted * num_classes + target, minlength=num_segments * num_classes).reshape(num_segments, num_classes)


def matched_counts(confusion: np.ndarray, assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class (TP, FP, FN) after the matching."""
    num_classes = confusion.shape[1]
    true_positive = np.zeros(num_classes, dtype=np.int64)
    predicted_as = np.zeros(num_classes, dtype=np.int64)
    for segment, cls in enumerate(assignment):
        if cls >= 0:
            true_positive[cls] += confusion[segment, cls]
            predicted_as[cls] += confusion[segment].sum()
    class_total = confusion.sum(axis=0)
    return true_positive, predicted_as - true_positive, class_total - true_positive


def scores_from_counts(true_positive: np.ndarray, false_positive: np.ndarray, false_negative: np.ndarray,
                       total_pixels: int) -> dict[str, Any]:
    """mIoU (nan-mean over classes with a union), per-class IoU and pixel accuracy."""
    union = true_positive + false_positive + false_negative
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)
    present = union > 0
    return {
        "miou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "iou": iou,
        "pixel_accuracy": float(true_positive.sum() / total_pixels) if total_pixels else float("nan"),
        "classes_scored": int(present.sum()),
    }


def hungarian_match(confusion: np.ndarray) -> np.ndarray:
    """``assignment[k]`` = class matched to segment k, or -1 (maximises the matched pixel count)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-np.asarray(confusion, dtype=np.float64))
    assignment = np.full(confusion.shape[0], -1, dtype=np.int64)
    assignment[rows] = cols
    return assignment


def pad_confusions(confusions: list[np.ndarray]) -> list[np.ndarray]:
    """The confusion matrices with zero rows added up to the largest number of segments."""
    width = max(c.shape[0] for c in confusions)
    return [np.pad(c, ((0, width - c.shape[0]), (0, 0))) for c in confusions]


def per_image_matched_counts(confusions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each image matched on its own confusion matrix: its (TP, FP, FN) per class, shape
    (images, 3, classes), and its pixel count (images,). The matrices are padded to one number of
    segments first, as the dataset-level matching does, so ties break the same way."""
    padded = pad_confusions(confusions)
    counts = np.stack([np.stack(matched_counts(c, hungarian_match(c))) for c in padded])
    return counts, np.array([int(c.sum()) for c in padded])
