"""``dataset=bias_toy``: toy prompts that leave attributes unsaid, the attributes the images show,
and the same attributes' distribution in the training data.

Prompts (``params``): ``"a <shape>"`` for each shape (colour, size, position and background unsaid)
and two-object prompts such as ``"a star above a square"`` (colours, sizes and background unsaid;
positions are constrained by the relation, so position is read on one-object prompts only).
Each prompt is generated ``dataset.size`` times; the record seeds are indices of the evaluation
split ``dataset.split`` (``dev`` / ``test``, ``harness.toy.splits.eval_indices`` with
``dataset.seed``), so dev and test images never share a seed.

Attributes (:data:`ATTRIBUTES`, categories in a fixed order) are read exactly from the image by
the toy scene reader (:class:`harness.dalleval.toy_reader.ToySceneReader`: the annotator's regions,
the evaluator's shape): each prompt object takes the largest unclaimed region of its shape; an
object with no such region is *undetected* and left out of the proportions (as DALL-EVAL leaves
out images whose attribute it cannot detect). The background is always read.

Training distribution (:func:`training_distribution`): the grammar's own sampler, by sampling
``n`` scenes of the ``train`` split (``harness.toy.splits``) with the prompt's object count and
counting the attribute of objects of the shape whose caption leaves that attribute unsaid
(colour: ``say_colour`` false; size: ``say_size`` false; background: ``say_background`` false;
position: every object, as captions never state absolute positions).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import ConfigError
from harness.toy.world import ALL_COLOURS, OBJECT_COLOURS, RELATIONS, SHAPES, SIZES, article

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(OBJECT_COLOURS),
    "size": SIZES,
    "position": ("top-left", "top-right", "bottom-left", "bottom-right"),
    "background": tuple(ALL_COLOURS),
}
DEFAULT_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("star", "above", "square"),
    ("heart", "to the left of", "circle"),
    ("triangle", "below", "star"),
    ("circle", "to the right of", "heart"),
)


def _phrase(shape: str) -> str:
    return f"{article(shape)} {shape}"


def build_bias_toy(dataset_cfg: Any) -> PromptSet:
    """``dataset.size`` images for each single-shape prompt and each two-object prompt."""
    params = dict(dataset_cfg.params or {})
    unknown = set(params) - {"shapes", "pairs"}
    if unknown:
        raise ConfigError(f"dataset.params {sorted(unknown)} unknown for bias_toy; known: shapes, pairs.")
    shapes = list(params.get("shapes") if params.get("shapes") is not None else SHAPES)
    pairs = [tuple(p) for p in (params.get("pairs") if params.get("pairs") is not None else DEFAULT_PAIRS)]
    for shape in shapes + [s for p in pairs for s in (p[0], p[2])]:
        if shape not in SHAPES:
            raise ConfigError(f"bias_toy: unknown shape {shape!r}; shapes: {', '.join(SHAPES)}.")
    for pair in pairs:
        if len(pair) != 3 or pair[1] not in RELATIONS:
            raise ConfigError(f"bias_toy: a pair is [shape, relation, shape] with a relation in {list(RELATIONS)}; got {list(pair)}.")
    prompts: list[tuple[str, list[str], list[str]]] = [
        (_phrase(s), [s], ["colour", "size", "position", "background"]) for s in shapes]
    prompts += [(f"{_phrase(a)} {relation} {_phrase(b)}", [a, b], ["colour", "size", "background"])
                for a, relation, b in pairs]
    from harness.toy.splits import dataset_indices

    size, seeds = dataset_indices(dataset_cfg, 24, per_record=len(prompts), what="bias_toy")
    records = []
    for repeat in range(size):  # interleaved, so that any head of the set holds every prompt
        for p, (text, objects, attributes) in enumerate(prompts):
            records.append(PromptRecord(
                id=f"bias_toy-{dataset_cfg.split}-p{p:02d}-{repeat:04d}", prompt=text,
                seed=seeds[repeat * len(prompts) + p],
                meta={"nouns": list(dict.fromkeys(objects)), "bias": {"objects": objects, "attributes": attributes}}))
    return validate_prompt_set(
        PromptSet("bias_toy", records, builder="harness.dalleval.bias_toy:build_bias_toy",
                  params={"images_per_prompt": size, "split": dataset_cfg.split, "seed": int(dataset_cfg.seed), "shapes": shapes, "pairs": [list(p) for p in pairs]}),
        "dataset=bias_toy")


class ToyAttributeReader:
    """Reads colour, size, position and background of a toy image's prompt objects (module docstring)."""

    def __init__(self, **reader_options: Any) -> None:
        from harness.dalleval.toy_reader import ToySceneReader

        self.reader = ToySceneReader(**reader_options)

    @staticmethod
    def check_available(**reader_options: Any) -> None:
        """The toy scene reader's files exist (checked without loading them)."""
        from harness.dalleval.toy_reader import ToySceneReader

        ToySceneReader.check_available(**reader_options)

    def identity(self) -> str:
        return self.reader.identity()

    def categories(self, attribute: str) -> tuple[str, ...]:
        if attribute not in ATTRIBUTES:
            raise ConfigError(f"toy attribute {attribute!r} unknown; known: {', '.join(ATTRIBUTES)}")
        return ATTRIBUTES[attribute]

    def read_attributes(self, image: np.ndarray, record: PromptRecord) -> list[dict[str, str | None]]:
        """One ``{attribute: category or None}`` per prompt object (``record.meta["bias"]["objects"]``)."""
        from harness.dalleval.toy_reader import position_of

        reading = self.reader.read(image)
        claimed: set[int] = set()
        out = []
        for shape in record.meta["bias"]["objects"]:
            candidates = [k for k, o in enumerate(reading.objects) if o.cls == shape and k not in claimed]
            values: dict[str, str | None] = {"colour": None, "size": None, "position": None}
            if candidates:
                k = max(candidates, key=lambda j: reading.objects[j].area)
                claimed.add(k)
                seen = reading.objects[k]
                values = {"colour": seen.colour, "size": seen.size, "position": position_of(seen.centre)}
            values["background"] = reading.background
            out.append(values)
        return out


@lru_cache(maxsize=64)
def _training_labels(n_objects: int, n_scenes: int, start: int) -> tuple[tuple[str, str, bool, bool, str, bool, str], ...]:
    """(shape, colour, say_colour, say_size, size, say_background, background, position) per train object."""
    from harness.dalleval.toy_reader import position_of
    from harness.toy.splits import scene_for_index

    rows = []
    for index in range(start, start + n_scenes):
        scene = scene_for_index("train", index, n_objects)
        for obj in scene.objects:
            centre = (obj.centre[0] / scene.image_size, obj.centre[1] / scene.image_size)
            rows.append((obj.shape, obj.colour, obj.say_colour, obj.say_size, obj.size, scene.say_background,
                         scene.background, position_of(centre)))
    return tuple(rows)


def training_distribution(attribute: str, shape: str, n_objects: int, n_scenes: int = 20000,
                          start: int = 0) -> tuple[np.ndarray, int]:
    """(proportions over ``ATTRIBUTES[attribute]``, number of objects counted) in ``n_scenes`` train scenes."""
    categories = ATTRIBUTES[attribute]
    counts = np.zeros(len(categories))
    for shp, colour, say_colour, say_size, size, say_background, background, position in _training_labels(
            n_objects, n_scenes, start):
        if shp != shape:
            continue
        if attribute == "colour" and not say_colour:
            counts[categories.index(colour)] += 1
        elif attribute == "size" and not say_size:
            counts[categories.index(size)] += 1
        elif attribute == "background" and not say_background:
            counts[categories.index(background)] += 1
        elif attribute == "position":
            counts[categories.index(position)] += 1
    total = int(counts.sum())
    return (counts / total if total else counts), total
