"""Splits of the toy world: train, toy_gen (held-out seeds) and toy_unreal (unseen combinations).

- `train`: objects use every (colour, shape) pair except the withheld ones.
- `toy_gen`: the same distribution as `train`, drawn from a different seed stream, so its
  scenes are held out; every object's colour is spoken (the quality bars are about colours).
- `toy_unreal`: every scene holds at least one object whose (colour, shape) pair never occurs
  in training (the analog of DAAM's Unreal-Gen); colours are always spoken.
- `judge_train`: every (colour, shape) pair, withheld ones included: training data for the
  evaluator, annotator and segmenter, which must recognise toy_unreal objects too.

Scene `i` of a split is a pure function of (split, i): `scene_for_index(split, i)`.
"""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.toy.world import OBJECT_COLOURS, SHAPES, Scene, sample_scene_with

#: (colour, shape) pairs that never appear in training: one per shape, a diagonal of the grid.
WITHHELD_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "heart"),
    ("blue", "triangle"),
    ("yellow", "square"),
    ("purple", "circle"),
)
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in OBJECT_COLOURS for s in SHAPES)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in WITHHELD_PAIRS)

SPLITS: tuple[str, ...] = ("train", "toy_gen", "toy_unreal", "judge_train")
# Independent seed streams: numpy's SeedSequence keeps [stream, index] seeds apart.
_SPLIT_STREAM = {"train": 1000, "toy_gen": 2000, "toy_unreal": 3000, "judge_train": 4000}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise HarnessError(f"unknown toy split {split!r}; choose one of {', '.join(SPLITS)}")


def sample_scene(rng: np.random.Generator, split: str, n_objects: int | None = None) -> Scene:
    """Sample a scene of `split` ("train", "toy_gen" or "toy_unreal") from `rng`."""
    _check_split(split)
    if split == "train":
        return sample_scene_with(rng, list(TRAIN_PAIRS), n_objects=n_objects)
    if split == "judge_train":
        return sample_scene_with(rng, list(ALL_PAIRS), n_objects=n_objects)
    if split == "toy_gen":
        return sample_scene_with(rng, list(TRAIN_PAIRS), n_objects=n_objects, p_say_colour=1.0)
    return sample_scene_with(
        rng, list(TRAIN_PAIRS), n_objects=n_objects, required_pairs=list(WITHHELD_PAIRS), p_say_colour=1.0
    )


def scene_rng(split: str, index: int, n_objects: int | None = None) -> np.random.Generator:
    """The generator that draws scene `index` of `split` (one stream per object count)."""
    _check_split(split)
    return np.random.default_rng([_SPLIT_STREAM[split], n_objects or 0, index])


def scene_for_index(split: str, index: int, n_objects: int | None = None) -> Scene:
    """Scene number `index` of `split`; the same arguments always give the same scene."""
    return sample_scene(scene_rng(split, index, n_objects), split, n_objects=n_objects)
