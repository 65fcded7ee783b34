"""Trivial floors: the whole image, and a centred disc, for every word.

Any attribution method that does not beat these has not localised anything.
"""

from __future__ import annotations

import numpy as np

from harness.baselines.segmentation import WordMapBaseline, image_of, words_of
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.store.samples import Sample


class WholeImage(WordMapBaseline):
    """``whole_image``: every word's mask is the whole image (a constant map of ones).

    Its IoU with a ground-truth mask G is |G| / (H W).
    """

    name = "whole_image"
    version = "1"

    def __init__(self, model=None) -> None:
        super().__init__(model)

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        height, width = image_of(record, sample).shape[:2]
        return self.prediction(record, sample, {w: np.ones((height, width), np.float32) for w in words_of(record, sample)})


def centre_disc(height: int, width: int, radius: float) -> np.ndarray:
    """0/1 map of the ellipse centred in the image with semi-axes ``radius`` x (H, W).

    A pixel is inside when its centre ((y + 0.5) / H - 0.5, (x + 0.5) / W - 0.5) is within
    the unit ellipse scaled by ``radius``: a disc of radius ``radius`` x side on square images.
    """
    ys = (np.arange(height) + 0.5) / height - 0.5
    xs = (np.arange(width) + 0.5) / width - 0.5
    inside = (ys[:, None] ** 2 + xs[None, :] ** 2) <= radius ** 2
    return inside.astype(np.float32)


class CentreBlob(WordMapBaseline):
    """``centre_blob``: every word's mask is a centred disc (ellipse on non-square images).

    ``radius`` is a fraction of the image side (default 0.3: about 28% of the area).
    """

    name = "centre_blob"
    version = "1"

    def __init__(self, model=None, radius: float = 0.3) -> None:
        if not 0.0 < float(radius) <= 0.75:
            raise ConfigError(f"baseline.centre_blob.radius must be in (0, 0.75], got {radius}.")
        super().__init__(model, radius=float(radius))
        self.radius = float(radius)

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        height, width = image_of(record, sample).shape[:2]
        disc = centre_disc(height, width, self.radius)
        return self.prediction(record, sample, {w: disc.copy() for w in words_of(record, sample)})
