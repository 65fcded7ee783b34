"""Splits of toy world v2: render streams, evaluation splits and held-out compositions.

Render streams (scene `i` of a stream is a pure function of (stream, i)):
- `train`: the diffusion model's training scenes. No scene contains a held-out composition
  (`HELD_OUT`), spoken or not.
- `seen`: the same distribution as `train` from another seed stream (held-out *scenes* of seen
  compositions). Colour and texture are always spoken.
- `unseen`: every scene has one group with a held-out composition, spoken in the caption
  (held-out *compositions*: no such phrase occurs in any training caption).
- `judge_train`, `features_train`, `segmenter_train`, `annotator_train`: every composition;
  four disjoint streams for the instruments (the judge, the feature extractor, the supervised
  segmenter baseline, the annotator), none of which is the diffusion model's.

Evaluation splits of `seen` and `unseen`: `dev` (indices 1,000,000-1,099,999: every choice) and
`test` (2,000,000-2,099,999: reported once per setting), sampled by `harness.toy.splits.eval_indices`
(the same permutation rule as v1).
"""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.toy.v2.world import (
    MAX_COUNT,
    MAX_INSTANCES,
    OBJECT_COLOURS,
    SHAPES,
    SIZES,
    TEXTURES,
    Description,
    Scene,
    build_scene,
)

#: Compositions no training scene contains: (kind, attribute value, shape).
HELD_OUT_COLOUR_SHAPE: tuple[tuple[str, str], ...] = (
    ("red", "star"), ("green", "ring"), ("blue", "triangle"), ("yellow", "cross"), ("purple", "circle"),
    ("orange", "crescent"),
)
HELD_OUT_TEXTURE_SHAPE: tuple[tuple[str, str], ...] = (
    ("striped", "circle"), ("checked", "crescent"), ("dotted", "square"), ("solid", "star"),
)
HELD_OUT_COUNT_SHAPE: tuple[tuple[int, str], ...] = ((3, "ring"), (4, "triangle"), (2, "cross"), (3, "square"))
HELD_OUT: dict[str, tuple] = {
    "colour_shape": HELD_OUT_COLOUR_SHAPE,
    "texture_shape": HELD_OUT_TEXTURE_SHAPE,
    "count_shape": HELD_OUT_COUNT_SHAPE,
}

STREAMS: tuple[str, ...] = ("train", "seen", "unseen", "judge_train", "features_train", "segmenter_train",
                           "annotator_train")
_STREAM_SEED = {"train": 21_000, "seen": 22_000, "unseen": 23_000, "judge_train": 24_000,
                "features_train": 25_000, "segmenter_train": 26_000, "annotator_train": 27_000}


def held_out_kinds(description: Description) -> list[str]:
    """The held-out composition kinds a group description falls in (empty: a seen one)."""
    kinds = []
    if (description.colour, description.shape) in HELD_OUT_COLOUR_SHAPE:
        kinds.append("colour_shape")
    if (description.texture, description.shape) in HELD_OUT_TEXTURE_SHAPE:
        kinds.append("texture_shape")
    if (description.count, description.shape) in HELD_OUT_COUNT_SHAPE:
        kinds.append("count_shape")
    return kinds


def scene_held_out_kinds(scene: Scene) -> list[str]:
    """Held-out kinds present anywhere in a scene; counts are per shape over the whole scene."""
    kinds: set[str] = set()
    per_shape: dict[str, int] = {}
    for group in scene.groups:
        per_shape[group.shape] = per_shape.get(group.shape, 0) + group.count
        kinds |= set(held_out_kinds(Description(group.shape, group.colour, group.texture, group.size, 1)))
    for shape, count in per_shape.items():
        if (count, shape) in HELD_OUT_COUNT_SHAPE:
            kinds.add("count_shape")
    return sorted(kinds)


def _random_description(rng: np.random.Generator, count: int) -> Description:
    return Description(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=OBJECT_COLOURS[int(rng.integers(len(OBJECT_COLOURS)))],
        texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
        size=SIZES[int(rng.integers(len(SIZES)))],
        count=count,
    )


def _sample_counts(rng: np.random.Generator) -> list[int]:
    n_groups = int(rng.choice([1, 2, 3], p=[0.4, 0.42, 0.18]))
    while True:
        counts = [int(rng.choice([1, 2, 3, 4], p=[0.64, 0.16, 0.12, 0.08])) for _ in range(n_groups)]
        if sum(counts) <= MAX_INSTANCES:
            return counts


def _held_out_description(rng: np.random.Generator) -> Description:
    kind = list(HELD_OUT)[int(rng.integers(len(HELD_OUT)))]
    pairs = HELD_OUT[kind]
    first, shape = pairs[int(rng.integers(len(pairs)))]
    d = _random_description(rng, 1)
    if kind == "colour_shape":
        return Description(shape, first, d.texture, d.size, int(rng.choice([1, 1, 2])))
    if kind == "texture_shape":
        return Description(shape, d.colour, first, d.size, int(rng.choice([1, 1, 2])))
    return Description(shape, d.colour, d.texture, "small" if first >= 3 else d.size, int(first))


def sample_scene(rng: np.random.Generator, stream: str) -> Scene:
    """Scene of `stream` drawn from `rng` (rejection sampling until placement and the stream's
    composition rule hold)."""
    if stream not in STREAMS:
        raise HarnessError(f"unknown toy v2 stream {stream!r}; choose one of {', '.join(STREAMS)}")
    while True:
        counts = _sample_counts(rng)
        descriptions = [_random_description(rng, c) for c in counts]
        shapes = [d.shape for d in descriptions]
        if len(set((d.shape, d.colour, d.texture) for d in descriptions)) < len(descriptions):
            continue  # two groups of one description would make the caption ambiguous
        if len(set(shapes)) < len(shapes):
            continue  # one group per shape keeps counts unambiguous ("two circles" means all circles)
        always: tuple[int, ...] = ()
        if stream == "unseen":
            slot = int(rng.integers(len(descriptions)))
            descriptions[slot] = _held_out_description(rng)
            if len(set(d.shape for d in descriptions)) < len(descriptions):
                continue
            if sum(d.count for d in descriptions) > MAX_INSTANCES:
                continue
            always = (slot,)
        say = {"p_say_colour": 1.0, "p_say_texture": 1.0} if stream in ("seen", "unseen") else {}
        scene = build_scene(rng, descriptions, always_say=always, **say)
        if scene is None:
            continue
        held = scene_held_out_kinds(scene)
        if stream in ("train", "seen") and held:
            continue
        if stream == "unseen" and not held:
            continue
        return scene


def scene_for_index(stream: str, index: int) -> Scene:
    """Scene number `index` of `stream`: the same arguments always give the same scene."""
    if stream not in STREAMS:
        raise HarnessError(f"unknown toy v2 stream {stream!r}; choose one of {', '.join(STREAMS)}")
    return sample_scene(np.random.default_rng([_STREAM_SEED[stream], int(index)]), stream)


__all__ = ["HELD_OUT", "MAX_COUNT", "STREAMS", "held_out_kinds", "sample_scene", "scene_for_index",
           "scene_held_out_kinds"]
