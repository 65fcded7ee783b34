"""Toy-world datasets with the same interface as the COCO-Gen / Unreal-Gen builders.

- ``toy_gen`` / ``toy_unreal``: prompt sets (captions of held-out scenes; ``toy_unreal`` scenes
  hold a (colour, shape) pair never seen in training). Each record's meta lists the nouns (the
  shape words), the asked objects as ``[colour, shape]`` pairs (colour None where the caption
  names none), and the scene it describes.
- ``toy_scenes``: rendered scenes with exact label maps, the "real images" of methods that
  segment or invert a given image (EmerDiff, DAAM on an image).

Every toy dataset has two disjoint evaluation splits, chosen with ``dataset.split``: ``dev``
(for every choice: thresholds, K, layers, timesteps, checkpoints) and ``test`` (looked at once
per setting). ``dataset.seed`` draws which scenes of the split are used (a seeded permutation of
the split's index range, ``harness.toy.splits.eval_indices``); ``dataset.size`` how many.

Scene ``i`` of a world (``toy_gen`` / ``toy_unreal``) is a pure function of (world, i, object
count), so a record needs no stored image: it names its scene and the renderer draws it.
"""

from __future__ import annotations

from typing import Any

from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import ConfigError

# The toy world owns its label classes and the rendering of labelled scenes; its records name the
# renderer as "harness.data.toy_sets:render_toy_scene", so the name stays importable from here.
from harness.toy.splits import render_toy_scene  # noqa: F401
from harness.toy.world import SCENE_CLASSES

DEFAULT_SIZE = 64

#: The scene distributions a toy dataset can draw from (harness/toy/splits.py).
WORLDS = ("toy_gen", "toy_unreal")


def _scenes(dataset_cfg: Any, world: str, known: tuple[str, ...] = ("objects",)) -> list[tuple[int, Any]]:
    from harness.toy.splits import dataset_indices, scene_for_index

    params = dict(dataset_cfg.params or {})
    unknown = set(params) - set(known)
    if unknown:
        raise ConfigError(f"dataset.params {sorted(unknown)} unknown for a toy dataset; known: {', '.join(known)} "
                          "(objects: 1, 2, 3 or null).")
    objects = params.get("objects")
    if objects is not None and int(objects) not in (1, 2, 3):
        raise ConfigError(f"dataset.params.objects must be 1, 2, 3 or null (mixed), not {objects!r}.")
    _, indices = dataset_indices(dataset_cfg, DEFAULT_SIZE)
    return [(index, scene_for_index(world, index, objects)) for index in indices]


def build_toy_prompts(dataset_cfg: Any, split: str) -> PromptSet:
    """Captions of ``dataset.size`` scenes of world ``split`` in ``dataset.split`` (object count: params.objects)."""
    from harness.toy.world import caption

    objects = (dataset_cfg.params or {}).get("objects")
    records = []
    for index, scene in _scenes(dataset_cfg, split):
        text = caption(scene).text
        nouns = list(dict.fromkeys(obj.shape for obj in scene.objects))
        records.append(PromptRecord(
            id=f"{split}-{objects or 'mix'}-{index:07d}",
            prompt=text,
            seed=index,
            # Asked objects: the colour only where the caption says it (None: any colour is right).
            meta={"nouns": nouns, "objects": [[obj.colour if obj.say_colour else None, obj.shape]
                                              for obj in scene.objects],
                  "scene": {"split": split, "index": index, "n_objects": objects}},
        ))
    return validate_prompt_set(
        PromptSet(split, records, builder=f"harness.data.toy_sets:{split}",
                  params={"split": str(dataset_cfg.split), "size": len(records), "seed": int(dataset_cfg.seed),
                          "objects": objects}),
        f"dataset={split}",
    )


def build_toy_gen(dataset_cfg: Any) -> PromptSet:
    """``dataset=toy_gen``: held-out scenes of the training distribution."""
    return build_toy_prompts(dataset_cfg, "toy_gen")


def build_toy_unreal(dataset_cfg: Any) -> PromptSet:
    """``dataset=toy_unreal``: scenes with (colour, shape) pairs withheld from training."""
    return build_toy_prompts(dataset_cfg, "toy_unreal")


def build_toy_scenes(dataset_cfg: Any) -> PromptSet:
    """``dataset=toy_scenes``: rendered scenes of world ``params.world`` (default toy_gen) with exact labels."""
    from harness.toy.world import caption

    split = (dataset_cfg.params or {}).get("world", "toy_gen")
    if split not in WORLDS:
        raise ConfigError(f"dataset.params.world must be one of {', '.join(WORLDS)}, not {split!r}.")
    objects = (dataset_cfg.params or {}).get("objects")
    records = []
    for index, scene in _scenes(dataset_cfg, split, known=("objects", "world")):
        records.append(PromptRecord(
            id=f"scene-{split}-{objects or 'mix'}-{index:07d}",
            prompt=caption(scene).text,
            seed=index,
            meta={"renderer": "toy_scene",  # registered in harness.registry.RENDERERS
                  "renderer_args": {"split": split, "index": index, "n_objects": objects},
                  "num_classes": len(SCENE_CLASSES), "class_names": list(SCENE_CLASSES)},
        ))
    return validate_prompt_set(
        PromptSet("toy_scenes", records, builder="harness.data.toy_sets:toy_scenes",
                  params={"world": split, "split": str(dataset_cfg.split), "size": len(records),
                          "seed": int(dataset_cfg.seed), "objects": objects}),
        "dataset=toy_scenes",
    )
