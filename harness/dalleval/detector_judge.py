"""The skill judge for real images: a detector adapter read into seen objects.

:class:`DetectorReader` runs torchvision's Mask R-CNN (ResNet-50-FPN, COCO; the adapter of
``harness.baselines.maskrcnn``, weights from a local file only) and keeps detections scoring at
least ``score_threshold`` (default 0.5, declared; counting uses the same threshold). Per kept
detection:

- ``cls``: its COCO category name (torchvision's list), the names GenEval's tags use;
- ``centre``: the centre of its box, as fractions of the image side (spatial relations);
- ``colour``: the colour name most of its masked pixels take (:func:`colour_name`, from HSV:
  achromatic pixels by value, chromatic ones by hue bins); pixels where the instance mask is
  >= 0.5, torchvision's convention;
- ``size``: None (real prompts carry no size tag).

``detector`` may be any object with ``detect(image) -> {"labels", "scores", "masks", "boxes"}``
and ``categories`` (a stand-in in tests); by default the Mask R-CNN adapter is built, which
stops with the usual missing-weights message when the checkpoint is absent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.dalleval.judge import SeenObject

#: Hue bins (degrees, start inclusive) of the chromatic colour names; red wraps around 0.
HUE_BINS: tuple[tuple[float, float, str], ...] = (
    (0, 15, "red"), (15, 40, "orange"), (40, 70, "yellow"), (70, 165, "green"), (165, 255, "blue"),
    (255, 290, "purple"), (290, 335, "pink"), (335, 360, "red"),
)
#: Below this saturation a pixel is achromatic: black (value < 0.25), white (> 0.75), else gray.
ACHROMATIC_SATURATION = 0.2
COLOUR_NAMES = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray")


def pixel_colour_names(pixels: np.ndarray) -> np.ndarray:
    """The colour name of each RGB pixel (N, 3) uint8 (rules: module docstring; brown = dark orange)."""
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(np.asarray(pixels, dtype=float).reshape(-1, 3) / 255.0)
    hue, saturation, value = hsv[:, 0] * 360.0, hsv[:, 1], hsv[:, 2]
    names = np.empty(len(hsv), dtype=object)
    for start, stop, name in HUE_BINS:
        names[(hue >= start) & (hue < stop)] = name
    names[(names == "orange") & (value < 0.6)] = "brown"
    achromatic = (saturation < ACHROMATIC_SATURATION) | (value < 0.15)
    names[achromatic] = np.where(value[achromatic] < 0.25, "black", np.where(value[achromatic] > 0.75, "white", "gray"))
    return names


def colour_name(image: np.ndarray, mask: np.ndarray) -> str | None:
    """The most frequent colour name over the masked pixels (None for an empty mask)."""
    pixels = np.asarray(image)[np.asarray(mask, dtype=bool)]
    if len(pixels) == 0:
        return None
    names, counts = np.unique(pixel_colour_names(pixels), return_counts=True)
    return str(names[int(counts.argmax())])


class DetectorReader:
    """Seen objects from a detector (module docstring)."""

    def __init__(self, detector: Any = None, weights: str | None = "default", score_threshold: float = 0.5,
                 min_size: int = 800, max_size: int = 1333, device: str | None = None) -> None:
        self.score_threshold = float(score_threshold)
        if detector is None:
            from harness.registry import BASELINES, load_once

            # the registered Mask R-CNN baseline, asked of the registry and loaded once per process
            options = {"weights": weights, "score_threshold": score_threshold, "min_size": min_size,
                       "max_size": max_size, "device": device}
            detector = load_once(("baseline", "maskrcnn", tuple(sorted(options.items()))),
                                 lambda: BASELINES.get("maskrcnn")(None, **options))
        self.detector = detector

    @staticmethod
    def check_available(detector: Any = None, weights: str | None = "default", **_: Any) -> None:
        """The Mask R-CNN weight file exists (asked of the registered baseline, nothing loaded)."""
        if detector is None:
            from harness.registry import BASELINES

            BASELINES.get("maskrcnn").check_available(weights)

    def identity(self) -> str:
        return f"{type(self.detector).__name__} detections scoring >= {self.score_threshold}, colour from masked pixels' hue"

    def read_objects(self, image: np.ndarray, record: Any = None) -> list[SeenObject]:
        image = np.asarray(image)
        height, width = image.shape[:2]
        detections = self.detector.detect(image)
        categories = self.detector.categories
        seen = []
        for k, (label, score) in enumerate(zip(detections["labels"], detections["scores"])):
            if score < self.score_threshold:
                continue
            mask = np.asarray(detections["masks"][k]) >= 0.5
            if "boxes" in detections:
                x0, y0, x1, y1 = (float(v) for v in detections["boxes"][k])
            else:  # the box of the mask
                ys, xs = np.nonzero(mask)
                x0, y0, x1, y1 = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, width, height)
            seen.append(SeenObject(cls=str(categories[int(label)]), centre=((x0 + x1) / 2 / width, (y0 + y1) / 2 / height),
                                   colour=colour_name(image, mask), area=float(mask.sum()), score=float(score)))
        return seen
