"""Pre-rendered arrays of toy scenes for training (images, exact labels, token ids, targets).

Rendering is cheap but not free (about a thousand scenes a second per core), and the
diffusion model sees each scene many times, so training renders a fixed pool once and caches
it as an .npz file. Scene `i` of the pool is `scene_for_index(split, i)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from harness.toy.splits import scene_for_index
from harness.toy.tokens import CONTEXT_LENGTH, encode
from harness.toy.world import ALL_COLOURS, OBJECT_COLOURS, SHAPES, SIZES, caption, render_scene

MAX_OBJECTS = 3
COLOUR_INDEX = {c: i for i, c in enumerate(OBJECT_COLOURS)}
BACKGROUND_INDEX = {c: i for i, c in enumerate(ALL_COLOURS)}
SHAPE_INDEX = {s: i for i, s in enumerate(SHAPES)}
SIZE_INDEX = {s: i for i, s in enumerate(SIZES)}


@dataclass
class ScenePool:
    """Arrays describing `len(self)` rendered scenes; object arrays use -1 for absent objects.

    Token positions count the start token, so `token_ids[n, noun_position[n, i]]` is the noun.
    `colour_said` / `size_said` say whether the caption spoke that adjective.
    """

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N, H, W) uint8
    token_ids: np.ndarray  # (N, CONTEXT_LENGTH) int64
    noun_position: np.ndarray  # (N, 3) int16
    colour_position: np.ndarray  # (N, 3) int16, -1 when not said
    shape: np.ndarray  # (N, 3) int8
    colour: np.ndarray  # (N, 3) int8
    size: np.ndarray  # (N, 3) int8
    colour_said: np.ndarray  # (N, 3) bool
    size_said: np.ndarray  # (N, 3) bool
    background: np.ndarray  # (N,) int8, index into ALL_COLOURS
    background_position: np.ndarray  # (N,) int16, position of the word "background" or -1
    captions: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.images)


def _render_range(args: tuple[str, int, int]) -> dict[str, np.ndarray]:
    split, start, stop = args
    n = stop - start
    out = {
        "images": None,
        "labels": None,
        "token_ids": np.zeros((n, CONTEXT_LENGTH), np.int64),
        "noun_position": np.full((n, MAX_OBJECTS), -1, np.int16),
        "colour_position": np.full((n, MAX_OBJECTS), -1, np.int16),
        "shape": np.full((n, MAX_OBJECTS), -1, np.int8),
        "colour": np.full((n, MAX_OBJECTS), -1, np.int8),
        "size": np.full((n, MAX_OBJECTS), -1, np.int8),
        "colour_said": np.zeros((n, MAX_OBJECTS), bool),
        "size_said": np.zeros((n, MAX_OBJECTS), bool),
        "background": np.zeros(n, np.int8),
        "background_position": np.full(n, -1, np.int16),
        "captions": [],
    }
    images, labels = [], []
    for row, index in enumerate(range(start, stop)):
        scene = scene_for_index(split, index)
        image, label = render_scene(scene)
        images.append(image)
        labels.append(label)
        cap = caption(scene)
        out["captions"].append(cap.text)
        out["token_ids"][row] = encode(cap.text)
        for position, word in enumerate(cap.words, start=1):
            if word.role == "noun":
                out["noun_position"][row, word.object_index] = position
            elif word.role == "colour":
                out["colour_position"][row, word.object_index] = position
            elif word.role == "bg_noun":
                out["background_position"][row] = position
        for i, obj in enumerate(scene.objects):
            out["shape"][row, i] = SHAPE_INDEX[obj.shape]
            out["colour"][row, i] = COLOUR_INDEX[obj.colour]
            out["size"][row, i] = SIZE_INDEX[obj.size]
            out["colour_said"][row, i] = obj.say_colour
            out["size_said"][row, i] = obj.say_size
        out["background"][row] = BACKGROUND_INDEX[scene.background]
    out["images"] = np.stack(images)
    out["labels"] = np.stack(labels)
    out["captions"] = np.array(out["captions"])
    return out


def render_pool(split: str, n: int, workers: int = 2, start: int = 0, render_range=None, pool_type=None):
    """Render scenes `start .. start + n - 1` of `split` (in `workers` processes).

    `render_range((split, start, stop)) -> dict of arrays` and `pool_type` default to world v1's;
    world v2 passes its own (`harness.toy.v2.data`)."""
    render_range = render_range or _render_range
    pool_type = pool_type or ScenePool
    chunk = 2000
    ranges = [(split, s, min(s + chunk, start + n)) for s in range(start, start + n, chunk)]
    if workers > 1 and len(ranges) > 1:
        with get_context("fork").Pool(workers) as pool:
            parts = pool.map(render_range, ranges)
    else:
        parts = [render_range(r) for r in ranges]
    return pool_type(**{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def load_or_render_pool(split: str, n: int, cache_dir: Path, workers: int = 2, render_range=None, pool_type=None,
                        prefix: str = ""):
    """The pool of the first `n` scenes of `split`, from `cache_dir` or freshly rendered there."""
    pool_type = pool_type or ScenePool
    path = Path(cache_dir) / f"{prefix}{split}_{n}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return pool_type(**{k: data[k] for k in data.files})
    pool = render_pool(split, n, workers=workers, render_range=render_range, pool_type=pool_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **pool.__dict__)
    tmp.replace(path)
    return pool
