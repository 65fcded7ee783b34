"""Splits of the toy world: train, toy_gen (held-out seeds) and toy_unreal (unseen combinations).

- `train`: objects use every (colour, shape) pair except the withheld ones.
- `toy_gen`: the same distribution as `train`, drawn from a different seed stream, so its
  scenes are held out; every object's colour is spoken (the quality bars are about colours).
- `toy_unreal`: every scene holds at least one object whose (colour, shape) pair never occurs
  in training (the analog of DAAM's Unreal-Gen); colours are always spoken.
- `judge_train`: every (colour, shape) pair, withheld ones included: training data for the
  evaluator, annotator and segmenter, which must recognise toy_unreal objects too.

Scene `i` of a split is a pure function of (split, i): `scene_for_index(split, i)`.

Evaluation splits (`EVAL_SPLITS`): the held-out distributions (`toy_gen`, `toy_unreal`) are cut
into two disjoint ranges of scene indices, `dev` (every choice: the training probe, thresholds,
K, layers, timesteps) and `test` (looked at once per setting). Both ranges start far above every
index used before the splits existed, so nothing was ever chosen on a `test` scene:
- indices 0-499 (instrument checks: evaluator and annotator renders; the training probe, which
  read scenes 0-47 while the shipped checkpoint was chosen; evaluated runs with sizes up to 192);
- 5000-5095 (the development windows of `dataset.seed=5000`);
- the annotator's `seed * 100000 + i` windows (seeds 0-9 stay below 1,000,000);
- 0-1999 of `toy_gen` (the FID reference renders of `harness.toy.data:render_pool`).
`dev` is indices 1,000,000-1,099,999, `test` 2,000,000-2,099,999. A set of `size` scenes of a
split with seed `s` is the first `size` entries of a seeded permutation of the split's range
(`eval_indices`): a different seed gives a different sample, and a smaller set with the same
seed is a prefix of a larger one (cached samples are reused).
"""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.toy.world import OBJECT_COLOURS, SCENE_CLASSES, SHAPES, Scene, render_scene, sample_scene_with

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


#: Evaluation split -> (first scene index, number of indices). Disjoint, and disjoint from every
#: index used before the splits existed (see the module docstring).
EVAL_SPLITS: dict[str, tuple[int, int]] = {"dev": (1_000_000, 100_000), "test": (2_000_000, 100_000)}
#: Seed stream of the permutations that sample an evaluation split.
_EVAL_STREAM = 9000


def check_eval_split(split: str) -> None:
    if split not in EVAL_SPLITS:
        raise HarnessError(f"unknown evaluation split {split!r} of a toy dataset; choose one of "
                           f"{', '.join(EVAL_SPLITS)} (dataset.split=dev for choices, test for reporting)")


def dataset_indices(dataset_cfg, default_size: int, per_record: int = 1, what: str = "toy datasets") -> tuple[int, list[int]]:
    """``(size, indices)`` for a dataset config over the toy evaluation splits: ``dataset.size``
    (``default_size`` when unset) records, ``per_record`` scene indices each, drawn from
    ``dataset.split`` with ``dataset.seed``; a bad split, size or seed is a :class:`ConfigError`."""
    from harness.errors import ConfigError

    if dataset_cfg.split not in EVAL_SPLITS:
        raise ConfigError(f"dataset.split must be one of {', '.join(EVAL_SPLITS)} for {what}, not "
                          f"{dataset_cfg.split!r} (dev: for choosing settings; test: for reporting them).")
    size = int(dataset_cfg.size if dataset_cfg.size is not None else default_size)
    if size < 1:
        raise ConfigError(f"dataset.size must be >= 1, got {size}.")
    if int(dataset_cfg.seed) < 0:
        raise ConfigError(f"dataset.seed must be >= 0, got {dataset_cfg.seed}.")
    return size, eval_indices(dataset_cfg.split, size * per_record, int(dataset_cfg.seed))


def eval_indices(split: str, size: int, seed: int = 0) -> list[int]:
    """Scene indices of a `size`-scene sample of evaluation split `split` ("dev" or "test").

    The first `size` entries of a permutation of the split's index range drawn with `seed`:
    disjoint across splits, different across seeds, a prefix of the same seed's larger sets.
    """
    check_eval_split(split)
    start, length = EVAL_SPLITS[split]
    if not 0 <= int(size) <= length:
        raise HarnessError(f"a {split} set holds at most {length} scenes, not {size}")
    if int(seed) < 0:
        raise HarnessError(f"dataset.seed must be >= 0, got {seed}")
    order = np.random.default_rng([_EVAL_STREAM, int(seed)]).permutation(length)[: int(size)]
    return [start + int(i) for i in order]


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


def render_toy_scene(split: str, index: int, n_objects: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HxWx3, semantic labels int32 HxW: 0 background, 1.. per shape in SCENE_CLASSES)."""
    scene = scene_for_index(split, index, n_objects)
    image, instance = render_scene(scene)
    classes = np.array([0] + [SCENE_CLASSES.index(obj.shape) for obj in scene.objects], dtype=np.int32)
    return image, classes[instance]
