"""Pre-rendered arrays of toy v2 scenes for training (images, exact labels, token ids, targets).

Scene `i` of a pool is `harness.toy.v2.splits.scene_for_index(stream, i)`. Group arrays have one
slot per group (at most `MAX_GROUPS`), -1 where a scene has fewer groups; an attribute's
`*_said` flag says whether the caption spoke it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.toy.data import load_or_render_pool
from harness.toy.tokens import CONTEXT_LENGTH
from harness.toy.v2.splits import scene_for_index
from harness.toy.v2.tokens import V2
from harness.toy.v2.world import (
    BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    SHAPES,
    SIZES,
    TEXTURES,
    caption,
    render_scene,
)

MAX_GROUPS = 3
#: Attribute -> its values; targets are indices into these tuples.
ATTRIBUTES: dict[str, tuple] = {
    "shape": SHAPES, "colour": OBJECT_COLOURS, "texture": TEXTURES, "size": SIZES, "count": (1, 2, 3, 4),
}
#: Attributes a caption may leave unsaid (the count and the shape are always said).
SPOKEN_OPTIONALLY = ("colour", "texture", "size")


@dataclass
class ScenePoolV2:
    images: np.ndarray  # (N, 64, 64, 3) uint8
    labels: np.ndarray  # (N, 64, 64) uint8: 0 background, g + 1 = every instance of group g
    instance_labels: np.ndarray  # (N, 64, 64) uint8: 0 background, k + 1 = instance k
    token_ids: np.ndarray  # (N, CONTEXT_LENGTH) int64
    noun_position: np.ndarray  # (N, G) int16 (positions count the start token)
    colour_position: np.ndarray  # (N, G) int16, -1 when not said
    texture_position: np.ndarray  # (N, G) int16, -1 when not said
    shape: np.ndarray  # (N, G) int8 index into SHAPES
    colour: np.ndarray
    texture: np.ndarray
    size: np.ndarray
    count: np.ndarray  # index into (1, 2, 3, 4)
    colour_said: np.ndarray  # (N, G) bool
    texture_said: np.ndarray
    size_said: np.ndarray
    background: np.ndarray  # (N,) int8 index into BACKGROUND_COLOURS
    background_position: np.ndarray  # (N,) int16, position of "background" or -1
    captions: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def render_range(args: tuple[str, int, int]) -> dict[str, np.ndarray]:
    stream, start, stop = args
    n = stop - start
    group_int = {k: np.full((n, MAX_GROUPS), -1, np.int8) for k in ATTRIBUTES}
    positions = {k: np.full((n, MAX_GROUPS), -1, np.int16) for k in ("noun_position", "colour_position", "texture_position")}
    said = {f"{k}_said": np.zeros((n, MAX_GROUPS), bool) for k in SPOKEN_OPTIONALLY}
    images, labels, instance_labels, captions = [], [], [], []
    token_ids = np.zeros((n, CONTEXT_LENGTH), np.int64)
    background = np.zeros(n, np.int8)
    background_position = np.full(n, -1, np.int16)
    for row, index in enumerate(range(start, stop)):
        scene = scene_for_index(stream, index)
        image, inst = render_scene(scene)
        group_of = np.zeros(int(inst.max()) + 1, np.uint8)
        for g in range(len(scene.groups)):
            group_of[list(scene.group_labels(g))] = g + 1
        images.append(image)
        instance_labels.append(inst)
        labels.append(group_of[inst])
        cap = caption(scene)
        captions.append(cap.text)
        token_ids[row] = V2.encode(cap.text)
        for position, word in enumerate(cap.words, start=1):
            key = {"noun": "noun_position", "colour": "colour_position", "texture": "texture_position"}.get(word.role)
            if key is not None:
                positions[key][row, word.group_index] = position
            elif word.role == "bg_noun":
                background_position[row] = position
        for g, group in enumerate(scene.groups):
            for k, values in ATTRIBUTES.items():
                group_int[k][row, g] = values.index(group.count if k == "count" else getattr(group, k))
            for k in SPOKEN_OPTIONALLY:
                said[f"{k}_said"][row, g] = getattr(group, f"say_{k}")
        background[row] = BACKGROUND_COLOURS.index(scene.background.colour)
    return {"images": np.stack(images), "labels": np.stack(labels), "instance_labels": np.stack(instance_labels),
            "token_ids": token_ids, **positions, **group_int, **said, "background": background,
            "background_position": background_position, "captions": np.array(captions)}


def load_or_render_pool_v2(stream: str, n: int, cache_dir: Path, workers: int = 2) -> ScenePoolV2:
    """The first `n` scenes of v2 stream `stream`, cached in `cache_dir` as `v2_<stream>_<n>.npz`."""
    return load_or_render_pool(stream, n, cache_dir, workers=workers, render_range=render_range,
                               pool_type=ScenePoolV2, prefix="v2_")
