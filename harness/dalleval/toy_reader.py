"""Read a toy image into :class:`~harness.dalleval.judge.SeenObject` records: the exact toy judge.

The segmentation is the toy annotator's (``harness.toy.annotator.ToyAnnotator``: background
from the border, object cores far from it, regions grown to the mid-point colour), run without
a prompt, so every region is reported, not only those a prompt asks for. Per region:

- ``cls`` (the shape): the toy evaluator (``weights/toy/evaluator``) on the region shown alone on
  the background; the shape whose best (colour, shape) pair scores highest.
- ``colour``: the object colour (``harness.toy.world.OBJECT_COLOURS``) nearest, in RGB, to the
  median colour of the region's core.
- ``size``: ``small`` or ``large`` by the region's pixel area against a per-shape threshold,
  the geometric mean of the rendered areas of that shape at the two sizes (computed from the
  renderer, :func:`size_thresholds`).
- ``centre``: the region's centroid, as fractions of the image side.

Regions smaller than ``min_area`` pixels (a small rendered shape covers about 30-60) are specks,
not objects. The background colour is the palette colour (:data:`ALL_COLOURS`) nearest the
border median. On clean renders every step is exact except the evaluator's shape call (top-1
accuracy 1.000 on held-out single-object renders, weights/toy/MODEL_CARD.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from harness.dalleval.judge import SeenObject
from harness.errors import MissingWeightsError
from harness.toy.world import (
    ALL_COLOURS,
    IMAGE_SIZE,
    OBJECT_COLOURS,
    SHAPES,
    SIZE_RADIUS,
    Scene,
    ToyObject,
    render_labels,
)

POSITIONS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")


@lru_cache(maxsize=8)
def size_thresholds(image_size: int = IMAGE_SIZE) -> dict[str, float]:
    """shape -> pixel area separating small from large: geometric mean of the two rendered areas."""
    out = {}
    centre = (image_size / 2, image_size / 2)
    for shape in SHAPES:
        areas = []
        for size in ("small", "large"):
            obj = ToyObject(shape, "red", size, centre, SIZE_RADIUS[size] * image_size)
            areas.append(float((render_labels(Scene((obj,), image_size=image_size)) == 1).sum()))
        out[shape] = float(np.sqrt(areas[0] * areas[1]))
    return out


def nearest_colour(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    """The palette name nearest ``rgb`` (Euclidean in RGB)."""
    names = list(palette)
    table = np.array([palette[n] for n in names], dtype=float)
    return names[int(((table - np.asarray(rgb, dtype=float)) ** 2).sum(1).argmin())]


def position_of(centre: tuple[float, float]) -> str:
    """The image quadrant of a centre given as fractions of the side."""
    x, y = centre
    return f"{'top' if y < 0.5 else 'bottom'}-{'left' if x < 0.5 else 'right'}"


@dataclass
class ToyReading:
    """What the reader saw: the background colour and the objects."""

    background: str
    objects: list[SeenObject] = field(default_factory=list)
    regions: list[np.ndarray] = field(default_factory=list, repr=False)  #: boolean masks, in object order


class ToySceneReader:
    """Regions of a toy image -> seen objects (module docstring). Loads the evaluator once."""

    def __init__(self, evaluator: str = "weights/toy/evaluator", min_area: int = 12, core_distance: float = 70.0,
                 min_pixels: int = 4, reach: int = 3) -> None:
        from harness.toy.annotator import ToyAnnotator

        self.evaluator_path = evaluator
        self.min_area = int(min_area)
        self.annotator = ToyAnnotator(core_distance=core_distance, min_pixels=min_pixels, reach=reach, shape_judge=None)
        self._evaluator = None

    @staticmethod
    def check_available(evaluator: str = "weights/toy/evaluator", **_: Any) -> None:
        """The toy evaluator's weight file exists (checked without loading it)."""
        from harness import REPO_ROOT
        from harness.toy.evaluator import RETRAIN_COMMAND, WEIGHTS_FILE

        folder = Path(evaluator) if Path(evaluator).is_absolute() else REPO_ROOT / evaluator
        if not (folder / WEIGHTS_FILE).is_file():
            raise MissingWeightsError(f"toy evaluator weights not found at {folder / WEIGHTS_FILE}; train them with "
                                      f"`{RETRAIN_COMMAND}`")

    def identity(self) -> str:
        return f"toy scene reader (annotator regions >= {self.min_area} px, evaluator {self.evaluator_path})"

    @property
    def evaluator(self):
        if self._evaluator is None:
            from harness import REPO_ROOT
            from harness.toy.evaluator import load_evaluator

            path = Path(self.evaluator_path)
            self._evaluator = load_evaluator(path if path.is_absolute() else REPO_ROOT / path)
        return self._evaluator

    def regions(self, image: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """(background RGB, region masks, region core colours): the annotator's steps 1-3."""
        pixels = np.asarray(image).astype(np.float64)
        border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
        background = np.median(border, axis=0)
        distance = np.sqrt(((pixels - background) ** 2).sum(-1))
        cores, n_cores = ndimage.label(distance > self.annotator.core_distance)
        core_ids, colours = [], []
        for core in range(1, n_cores + 1):
            member = cores == core
            if member.sum() >= self.annotator.min_pixels:
                core_ids.append(core)
                colours.append(np.median(pixels[member], axis=0))
        regions = self.annotator.grow(pixels, background, cores, core_ids, colours)
        keep = [k for k, region in enumerate(regions) if region.sum() >= self.min_area]
        return background, [regions[k] for k in keep], [colours[k] for k in keep]

    def shapes(self, image: np.ndarray, background: np.ndarray, regions: list[np.ndarray]) -> list[str]:
        """The evaluator's shape for each region shown alone on the background."""
        if not regions:
            return []
        import torch

        from harness.toy.splits import ALL_PAIRS

        alone = np.repeat(np.asarray(image, dtype=np.float64)[None], len(regions), axis=0)
        for k, region in enumerate(regions):
            alone[k][~region] = background
        with torch.no_grad():
            x = torch.from_numpy(alone / 127.5 - 1).permute(0, 3, 1, 2).float()
            pairs = torch.sigmoid(self.evaluator(x)).numpy()
        scores = np.zeros((len(regions), len(SHAPES)))
        for column, (_, shape) in enumerate(ALL_PAIRS):
            j = SHAPES.index(shape)
            scores[:, j] = np.maximum(scores[:, j], pairs[:, column])
        return [SHAPES[int(k)] for k in scores.argmax(1)]

    def read(self, image: np.ndarray) -> ToyReading:
        """Every object of ``image`` (H, W, 3 uint8) with its shape, colour, size and centre."""
        image = np.asarray(image)
        height, width = image.shape[:2]
        background, regions, colours = self.regions(image)
        shapes = self.shapes(image, background, regions)
        thresholds = size_thresholds(height) if height == width else size_thresholds(IMAGE_SIZE)
        scale = (height * width) / (IMAGE_SIZE * IMAGE_SIZE) if height != width else 1.0
        objects = []
        for region, colour, shape in zip(regions, colours, shapes):
            ys, xs = np.nonzero(region)
            area = float(region.sum())
            objects.append(SeenObject(
                cls=shape, centre=(float((xs.mean() + 0.5) / width), float((ys.mean() + 0.5) / height)),
                colour=nearest_colour(colour, OBJECT_COLOURS),
                size="small" if area / scale < thresholds[shape] else "large", area=area))
        return ToyReading(nearest_colour(background, ALL_COLOURS), objects, regions)
