"""``toy_segmenter``: the toy world's supervised segmenter (``harness.toy.segmenter``) as a word segmenter.

The toy analog of the ``maskrcnn`` baseline: each word that names a shape (a class of
``harness.toy.world.SCENE_CLASSES`` other than background) gets the 0/1 map of the pixels
the segmenter labels with that shape; a shape it does not find, and any word that is not a
shape, get an all-zero map (a closed-vocabulary segmenter has nothing to say about them).
Images that are not 32x32 are segmented at 32x32 and the labels resized back (nearest).

Weights: ``weights`` (default ``weights/toy/segmenter``, relative paths from the repository
root) holds ``segmenter.safetensors``; without it the baseline raises a
:class:`~harness.errors.MissingWeightsError` naming the retrain command.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness import REPO_ROOT
from harness.baselines.segmentation import WordMapBaseline, image_of, words_of
from harness.data.prompts import PromptRecord
from harness.data.toy_sets import SCENE_CLASSES
from harness.store.samples import Sample

DEFAULT_WEIGHTS = "weights/toy/segmenter"


def shape_class(word: str) -> int | None:
    """The SCENE_CLASSES index a word names, or None (background and non-shape words)."""
    word = word.strip().lower()
    return SCENE_CLASSES.index(word) if word in SCENE_CLASSES[1:] else None


class ToySegmenter(WordMapBaseline):
    """Supervised baseline: the toy segmenter's per-pixel shape classes, one 0/1 map per shape word."""

    name = "toy_segmenter"
    version = "1"

    def __init__(self, model=None, weights: str = DEFAULT_WEIGHTS) -> None:
        super().__init__(model, weights=str(weights))
        from harness.toy.segmenter import load_segmenter

        directory = Path(weights).expanduser()
        if not directory.is_absolute():
            directory = REPO_ROOT / directory
        # Loaded when the baseline is built, so missing weights stop a run before it generates anything.
        self.network = load_segmenter(directory)

    def classes(self, image: np.ndarray) -> np.ndarray:
        """(H, W) class indices into SCENE_CLASSES for one uint8 RGB image."""
        from harness.toy.segmenter import segment

        return segment(self.network, np.asarray(image, dtype=np.uint8)[None, ..., :3])[0]

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        classes = self.classes(image_of(record, sample))
        maps = {}
        for word in words_of(record, sample):
            wanted = shape_class(word)
            maps[word] = (classes == wanted).astype(np.float32) if wanted is not None else np.zeros(classes.shape, np.float32)
        found = [SCENE_CLASSES[k] for k in np.unique(classes) if k > 0]
        return self.prediction(record, sample, maps, shapes_found=found)
