"""Shared parts of the word-segmentation baselines (DAAM's comparison set).

Every one of them returns, like the ``daam`` method, ``arrays["heatmap:<word>"]`` (float32 2-D)
for each word the method mapped (``sample.meta["words"]``, else the record's nouns) and
``meta["words"]``; a baseline that predicts binary masks stores them as 0/1 maps, so the metric's
min-max normalisation and threshold leave them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.baselines.base import Baseline
from harness.data.coco80 import coco80_class
from harness.data.prompts import PromptRecord
from harness.errors import DataError
from harness.store.samples import Sample


def words_of(record: PromptRecord, sample: Sample) -> list[str]:
    """The words to predict: the method's ``meta["words"]``, else the record's nouns."""
    words = sample.meta.get("words") if isinstance(sample.meta, dict) else None
    if not words:
        words = record.meta.get("nouns") if isinstance(record.meta, dict) else None
    if not words:
        raise DataError(f"Record {record.id!r}: the sample names no words (meta.words) and the record no nouns; "
                        "a segmentation baseline has nothing to predict.")
    return [str(word) for word in words]


def image_of(record: PromptRecord, sample: Sample) -> np.ndarray:
    if sample.image is None:
        raise DataError(f"Record {record.id!r}: the sample has no image for the baseline to segment.")
    return np.asarray(sample.image)


class WordMapBaseline(Baseline):
    """A baseline that predicts one map per word."""

    def prediction(self, record: PromptRecord, sample: Sample, maps: dict[str, np.ndarray],
                   **meta: Any) -> Sample:
        """The output sample: the input image, ``heatmap:<word>`` arrays, ``meta["words"]``."""
        words = list(maps)
        arrays = {f"heatmap:{word}": np.asarray(heat, dtype=np.float32) for word, heat in maps.items()}
        return Sample(image=sample.image, arrays=arrays,
                      meta={"words": words, "baseline": self.name, "record_id": record.id, **meta})


def detections_to_heatmaps(words: Sequence[str], class_names: Sequence[str], labels: np.ndarray,
                           scores: np.ndarray, masks: np.ndarray, score_threshold: float,
                           mask_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Per word, the union of the instance masks of its COCO class, as a 0/1 float32 map.

    ``labels`` index ``class_names`` (the detector's category list); ``masks`` are (N, H, W)
    soft masks (binarised ``> mask_threshold``); detections below ``score_threshold`` are dropped.
    A word that names no COCO class, or whose class was not detected, gets an all-zero map.
    """
    masks = np.asarray(masks)
    height, width = masks.shape[-2:]
    keep = np.asarray(scores) >= score_threshold
    out: dict[str, np.ndarray] = {}
    for word in words:
        heat = np.zeros((height, width), dtype=np.float32)
        wanted = coco80_class(word)
        if wanted is not None:
            for label, kept, mask in zip(labels, keep, masks, strict=True):
                if kept and class_names[int(label)] == wanted:
                    heat = np.maximum(heat, (mask > mask_threshold).astype(np.float32))
        out[word] = heat
    return out
