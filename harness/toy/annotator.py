"""Ground truth for *generated* toy images: segment the image and give each prompt word its mask.

DAAM is scored on the images a model generates, where the renderer's exact masks do not apply.
Toy scenes are flat colours on a plain background, so classical colour segmentation suffices
(written here because no library segments "flat shapes named by a caption"; the pieces are
scipy's connected components and the Hungarian assignment):

1. **Background colour**: the per-channel median of the image border.
2. **Object cores**: pixels whose colour is far from the background (``core_distance``), split
   into 4-connected components (``scipy.ndimage.label``); components smaller than
   ``min_pixels`` are speckle and dropped. Each core's colour is the median of its pixels.
3. **Pixel assignment**: every pixel goes to the nearest colour among the background and the
   cores' colours (the mid-point rule, which places blurred edges where a renderer would), but
   only to a core within ``reach`` pixels of it (a far-away pixel of a similar colour stays
   background). Each object's region is the assigned pixels connected to its core.
4. **Words**: the prompt is parsed with the toy grammar (:func:`parse_caption`), and regions are
   matched to the prompt's objects with the Hungarian algorithm (``scipy.optimize``) on a cost
   that prefers the named colour (when named), the named size, larger regions, the stated
   spatial relations and, when several objects compete, the shape the toy evaluator sees in
   each region shown alone (``shape_judge``; None turns it off). An object with no region left is *absent* (no mask; DAAM's
   protocol then does not score its noun).

Word masks: a noun, its size and colour adjectives -> its object's region (the union when
several objects share a word); "background" and the background colour word -> the background.

Validation: :func:`annotator_miou` scores the annotator on renders degraded like generations
(``harness.toy.evaluator.degrade``: blur, colour shift, contrast, noise) against the renderer's
exact masks: ``harness toy annotator --n 500``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from harness.errors import DataError
from harness.overlap import mask_iou
from harness.toy.world import (
    ALL_COLOURS,
    BACKGROUND_WORD,
    OBJECT_COLOURS,
    RELATIONS,
    SHAPES,
    SIZES,
    check_prompt_words,
)

UNASSIGNED = -1


@dataclass(frozen=True)
class PromptObject:
    """One object a toy prompt asks for."""

    shape: str
    colour: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class ParsedCaption:
    """A toy prompt parsed with the toy grammar (see ``harness.toy.world.caption``)."""

    objects: tuple[PromptObject, ...]
    relations: tuple[str, ...] = ()
    background: str | None = None  # the background colour the prompt names
    names_background: bool = False
    words: tuple[str, ...] = field(default=())


def parse_caption(text: str) -> ParsedCaption:
    """Parse ``object (relation object)* ["on a" colour "background"]`` into objects and relations.

    Raises DataError (naming the prompt) when the text does not follow the toy grammar, and
    HarnessError listing the vocabulary when it uses a word outside it.
    """
    words = check_prompt_words(text)
    objects: list[PromptObject] = []
    relations: list[str] = []
    background = None
    names_background = False
    i = 0

    def fail(reason: str) -> DataError:
        return DataError(f"toy prompt {text!r} does not follow the toy grammar ({reason}); "
                         "expected e.g. 'a small red circle to the left of a blue star on a yellow background'")

    def read_object(i: int) -> int:
        if i >= len(words) or words[i] not in ("a", "an"):
            raise fail(f"expected 'a' or 'an' at word {i + 1}")
        i += 1
        size = colour = None
        if i < len(words) and words[i] in SIZES:
            size, i = words[i], i + 1
        if i < len(words) and words[i] in OBJECT_COLOURS:
            colour, i = words[i], i + 1
        if i >= len(words) or words[i] not in SHAPES:
            raise fail(f"expected a shape ({', '.join(SHAPES)}) at word {i + 1}")
        objects.append(PromptObject(words[i], colour, size))
        return i + 1

    i = read_object(0)
    multiword = sorted(RELATIONS, key=lambda r: -len(r.split()))
    while i < len(words) and words[i] != "on":
        for relation in multiword:
            parts = relation.split()
            if words[i : i + len(parts)] == parts:
                relations.append(relation)
                i = read_object(i + len(parts))
                break
        else:
            raise fail(f"unexpected word {words[i]!r} at word {i + 1}")
    if i < len(words):
        tail = words[i:]
        if len(tail) != 4 or tail[1] not in ("a", "an") or tail[2] not in ALL_COLOURS or tail[3] != BACKGROUND_WORD:
            raise fail("the ending must be 'on a <colour> background'")
        background, names_background = tail[2], True
    return ParsedCaption(tuple(objects), tuple(relations), background, names_background, tuple(words))


@dataclass
class Annotation:
    """An annotated image: ``labels`` (0 background, i + 1 object i of the prompt, -1 unassigned)."""

    labels: np.ndarray
    parsed: ParsedCaption
    background_colour: np.ndarray
    region_colours: list[np.ndarray]

    def object_mask(self, index: int) -> np.ndarray | None:
        """The region of the prompt's object ``index``, or None when it is absent."""
        mask = self.labels == index + 1
        return mask if mask.any() else None

    def word_masks(self) -> dict[str, np.ndarray]:
        """word -> bool mask for every prompt word that denotes something visible and was found."""
        out: dict[str, np.ndarray] = {}

        def add(word: str, mask: np.ndarray) -> None:
            out[word] = out[word] | mask if word in out else mask

        for index, obj in enumerate(self.parsed.objects):
            mask = self.object_mask(index)
            if mask is None:
                continue
            for word in (obj.shape, obj.colour, obj.size):
                if word is not None:
                    add(word, mask)
        background = self.labels == 0
        if self.parsed.names_background and background.any():
            add(BACKGROUND_WORD, background)
            add(self.parsed.background, background)
        return out


class ToyAnnotator:
    """Segments generated toy images into the prompt's objects and background (module docstring).

    Plugs into the metrics as ``ground_truth: harness.toy.annotator:ToyAnnotator``: its
    :meth:`masks` reads the record's prompt and the sample's image.
    """

    def __init__(self, core_distance: float = 70.0, min_pixels: int = 4, reach: int = 3,
                 shape_judge: str | None = "weights/toy/evaluator", shape_weight: float = 1.0) -> None:
        self.core_distance = float(core_distance)
        self.min_pixels = int(min_pixels)
        self.reach = int(reach)
        self.shape_judge = shape_judge
        self.shape_weight = float(shape_weight)
        self._judge = None

    def _shape_probabilities(self, pixels: np.ndarray, background: np.ndarray,
                             regions: list[np.ndarray]) -> np.ndarray | None:
        """(regions, shapes): the evaluator's belief that each region, shown alone, is each shape."""
        if self.shape_judge is None:
            return None
        import torch

        from harness.toy.evaluator import load_evaluator

        if self._judge is None:
            from harness import REPO_ROOT

            path = Path(self.shape_judge)
            self._judge = load_evaluator(path if path.is_absolute() else REPO_ROOT / path)
        alone = np.repeat(pixels[None], len(regions), axis=0)
        for k, region in enumerate(regions):
            alone[k][~region] = background
        with torch.no_grad():
            x = torch.from_numpy(alone / 127.5 - 1).permute(0, 3, 1, 2).float()
            pairs = torch.sigmoid(self._judge(x)).numpy()
        from harness.toy.splits import ALL_PAIRS

        out = np.zeros((len(regions), len(SHAPES)))
        for column, (_, shape) in enumerate(ALL_PAIRS):
            out[:, SHAPES.index(shape)] = np.maximum(out[:, SHAPES.index(shape)], pairs[:, column])
        return out

    # -- the interface of harness.data.ground_truth.GroundTruth --------------------------------
    def masks(self, record: Any, sample: Any) -> dict[str, np.ndarray]:
        """word (lower case) -> bool mask of the sample's image, for the record's prompt."""
        if sample is None or getattr(sample, "image", None) is None:
            raise DataError(f"record {getattr(record, 'id', '?')!r}: the toy annotator needs the generated image")
        return self.annotate(np.asarray(sample.image), record.prompt).word_masks()

    # -- segmentation ---------------------------------------------------------------------------
    def annotate(self, image: np.ndarray, prompt: str) -> Annotation:
        """Segment ``image`` (H, W, 3 uint8) and assign its regions to ``prompt``'s objects."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"the toy annotator needs an RGB image (H, W, 3), got shape {image.shape}")
        parsed = parse_caption(prompt)
        pixels = image.astype(np.float64)
        border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
        background = np.median(border, axis=0)
        distance = np.sqrt(((pixels - background) ** 2).sum(-1))
        cores, n_cores = ndimage.label(distance > self.core_distance)
        colours, core_ids = [], []
        for core in range(1, n_cores + 1):
            member = cores == core
            if member.sum() >= self.min_pixels:
                core_ids.append(core)
                colours.append(np.median(pixels[member], axis=0))
        regions = self.grow(pixels, background, cores, core_ids, colours)
        labels = np.zeros(image.shape[:2], dtype=np.int32)
        if regions:
            shapes = None
            if len(parsed.objects) > 1 and len(regions) > 1:
                shapes = self._shape_probabilities(pixels, background, regions)
            assignment = self._assign(parsed, regions, colours, image.shape[:2], shapes, self.shape_weight)
            for region_index, object_index in assignment.items():
                labels[regions[region_index]] = object_index + 1
            for region_index, region in enumerate(regions):
                if region_index not in assignment:
                    labels[region] = UNASSIGNED
        return Annotation(labels, parsed, background, colours)

    def grow(self, pixels: np.ndarray, background: np.ndarray, cores: np.ndarray,
              core_ids: list[int], colours: list[np.ndarray]) -> list[np.ndarray]:
        """Each core's region: pixels nearer its colour than the background's, within reach, connected."""
        if not core_ids:
            return []
        palette = np.stack([background, *colours])
        nearest = ((pixels[:, :, None, :] - palette[None, None]) ** 2).sum(-1)
        structure = ndimage.generate_binary_structure(2, 1)
        allowed = np.ones(nearest.shape, dtype=bool)
        for k, core in enumerate(core_ids, start=1):
            allowed[:, :, k] = ndimage.binary_dilation(cores == core, structure, iterations=self.reach)
        nearest[~allowed] = np.inf
        owner = nearest.argmin(-1)
        regions = []
        for k, core in enumerate(core_ids, start=1):
            pieces, _ = ndimage.label(owner == k)
            keep = np.unique(pieces[(cores == core) & (pieces > 0)])
            regions.append(np.isin(pieces, keep[keep > 0]))
        return regions

    @staticmethod
    def _assign(parsed: ParsedCaption, regions: list[np.ndarray], colours: list[np.ndarray],
                shape: tuple[int, int], shapes: np.ndarray | None = None, shape_weight: float = 1.0) -> dict[int, int]:
        """region index -> object index, Hungarian on colour, size, area and relation costs."""
        height, width = shape
        areas = np.array([r.sum() for r in regions], dtype=float)
        centres = np.array([[np.nonzero(r)[1].mean() / width, np.nonzero(r)[0].mean() / height] for r in regions])
        n_regions, n_objects = len(regions), len(parsed.objects)
        cost = np.zeros((n_regions, n_objects))
        for j, obj in enumerate(parsed.objects):
            if shapes is not None:
                cost[:, j] += shape_weight * (1.0 - shapes[:, SHAPES.index(obj.shape)])
            if obj.colour is not None:
                target = np.array(OBJECT_COLOURS[obj.colour], dtype=float)
                cost[:, j] += np.array([np.sqrt(((c - target) ** 2).sum()) for c in colours]) / 100.0
            if obj.size is not None:
                # rendered areas: small ~ 30-60 px, large ~ 90-160 px at 32x32
                small = areas < 0.075 * height * width
                cost[:, j] += 0.5 * (small != (obj.size == "small"))
        cost -= (0.5 * areas / areas.max())[:, None]  # prefer substantial regions over specks
        if parsed.relations and n_regions <= 8:
            return ToyAnnotator._assign_with_relations(cost, centres, parsed.relations)
        rows, cols = linear_sum_assignment(cost)
        return {int(r): int(c) for r, c in zip(rows, cols)}

    @staticmethod
    def _assign_with_relations(cost: np.ndarray, centres: np.ndarray, relations: tuple[str, ...]) -> dict[int, int]:
        """Every injective region choice for the objects (few regions), penalising failed relations.

        With fewer regions than objects, the trailing objects stay unassigned (absent).
        """
        from itertools import permutations

        n_regions, n_objects = cost.shape
        used = min(n_regions, n_objects)
        best, best_cost = {}, np.inf
        for chosen in permutations(range(n_regions), used):
            for objects in permutations(range(n_objects), used):
                owner = dict(zip(objects, chosen))
                total = sum(cost[r, o] for o, r in owner.items())
                for k, relation in enumerate(relations):
                    if k in owner and k + 1 in owner:
                        (x1, y1), (x2, y2) = centres[owner[k]], centres[owner[k + 1]]
                        holds = {"and": True, "to the left of": x1 < x2, "to the right of": x1 > x2,
                                 "above": y1 < y2, "below": y1 > y2}[relation]
                        total += 0.0 if holds else 0.6
                if total < best_cost:
                    best, best_cost = {r: o for o, r in owner.items()}, total
        return best


def annotator_miou(n: int = 200, split: str = "toy_gen", seed: int = 0, degraded: bool = True,
                   annotator: ToyAnnotator | None = None) -> dict[str, float]:
    """The annotator against exact masks on ``n`` renders of ``split`` (degraded like generations).

    Score: mean IoU over (image, object) pairs between the object's exact mask and the region
    the annotator gives it (an object it misses scores 0); also the background's mean IoU.
    """
    import torch

    from harness.toy.autoencoder import images_to_tensor
    from harness.toy.evaluator import degrade
    from harness.toy.splits import scene_for_index
    from harness.toy.world import caption, render_scene

    annotator = annotator or ToyAnnotator()
    scenes = [scene_for_index(split, seed * 100_000 + i) for i in range(n)]
    rendered = [render_scene(s) for s in scenes]
    images = np.stack([image for image, _ in rendered])
    if degraded:
        tensor = degrade(images_to_tensor(images), torch.Generator().manual_seed(seed))
        images = ((tensor.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    object_ious, background_ious = [], []
    for scene, image, (_, truth) in zip(scenes, images, rendered):
        labels = annotator.annotate(image, caption(scene).text).labels
        for index in range(len(scene.objects)):
            object_ious.append(mask_iou(labels == index + 1, truth == index + 1))
        background_ious.append(mask_iou(labels == 0, truth == 0))
    return {"annotator_miou": float(np.mean(object_ious)), "n_objects": len(object_ious),
            "background_miou": float(np.mean(background_ious)), "n_images": n, "split": split,
            "degraded": degraded}


def main(argv: list[str] | None = None) -> int:
    """Print the annotator's mIoU on degraded and clean renders as JSON."""
    parser = argparse.ArgumentParser(prog="harness toy annotator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--split", default="toy_gen")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for degraded in (True, False):
        print(json.dumps(annotator_miou(args.n, args.split, args.seed, degraded)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
