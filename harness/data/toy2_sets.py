"""Toy world v2 datasets (``harness.toy.v2``), with the interface of the v1 builders (toy_sets.py).

- ``toy2_gen``: captions of held-out scenes, ``params.composition``: ``seen`` (the training
  distribution, held-out scenes) or ``unseen`` (every scene has a group whose colour-shape,
  texture-shape or count-shape composition no training scene contains, spoken in the caption).
  Colour and texture are always spoken. A record's meta lists the nouns as spoken, every group
  (shape, count, and colour/texture/size where spoken), the relations, the composition and the
  held-out kinds present, and the scene it describes.
- ``toy2_scenes``: rendered v2 scenes with exact semantic labels (0 background, 1 + i for shape
  ``SHAPES[i]``), the "real images" of methods that segment a given image (EmerDiff).

``dataset.split`` (dev | test), ``dataset.seed`` and ``dataset.size`` work as for v1: disjoint
scene-index ranges, a seeded sample, smaller sets prefixes of larger ones. Seen and unseen rows
of every test table come from the two compositions and are reported separately.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import ConfigError

DEFAULT_SIZE = 64
COMPOSITIONS = ("seen", "unseen")


def _composition(dataset_cfg: Any) -> str:
    params = dict(dataset_cfg.params or {})
    unknown = set(params) - {"composition"}
    if unknown:
        raise ConfigError(f"dataset.params {sorted(unknown)} unknown for a toy v2 dataset; known: composition "
                          f"({' | '.join(COMPOSITIONS)}).")
    composition = params.get("composition", "seen")
    if composition not in COMPOSITIONS:
        raise ConfigError(f"dataset.params.composition must be one of {', '.join(COMPOSITIONS)}, not {composition!r}.")
    return composition


def _scenes(dataset_cfg: Any, composition: str) -> list[tuple[int, Any]]:
    from harness.toy.splits import dataset_indices
    from harness.toy.v2.splits import scene_for_index

    _, indices = dataset_indices(dataset_cfg, DEFAULT_SIZE, what="toy v2 datasets")
    return [(index, scene_for_index(composition, index)) for index in indices]


def _prompt_set(name: str, records: list[PromptRecord], dataset_cfg: Any, composition: str) -> PromptSet:
    return validate_prompt_set(
        PromptSet(name, records, builder=f"harness.data.toy2_sets:{name}",
                  params={"composition": composition, "split": str(dataset_cfg.split), "size": len(records),
                          "seed": int(dataset_cfg.seed)}),
        f"dataset={name}",
    )


def scene_meta(scene: Any) -> dict[str, Any]:
    """What a v2 caption asks for, per group, as spoken (None where an attribute is unsaid)."""
    from harness.toy.v2.splits import scene_held_out_kinds
    from harness.toy.v2.world import caption

    cap = caption(scene)
    return {
        "nouns": [w.text for w in cap.words if w.role == "noun"],
        "groups": [{"shape": g.shape, "count": g.count, "colour": g.colour if g.say_colour else None,
                    "texture": g.texture if g.say_texture else None, "size": g.size if g.say_size else None}
                   for g in scene.groups],
        "relations": list(scene.relations),
        "held_out": scene_held_out_kinds(scene),
    }


def build_toy2_gen(dataset_cfg: Any) -> PromptSet:
    """``dataset=toy2_gen``: captions of held-out v2 scenes of composition ``params.composition``."""
    from harness.toy.v2.world import caption

    composition = _composition(dataset_cfg)
    records = [
        PromptRecord(id=f"toy2-{composition}-{index:07d}", prompt=caption(scene).text, seed=index,
                     meta={**scene_meta(scene), "composition": composition,
                           "scene": {"stream": composition, "index": index}})
        for index, scene in _scenes(dataset_cfg, composition)
    ]
    return _prompt_set("toy2_gen", records, dataset_cfg, composition)


def render_toy2_scene(stream: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 64x64x3, semantic labels int32: 0 background, 1 + SHAPES.index(shape))."""
    from harness.toy.v2.splits import scene_for_index
    from harness.toy.v2.world import render_scene, semantic_labels

    scene = scene_for_index(stream, index)
    image, instances = render_scene(scene)
    return image, semantic_labels(scene, instances)


def build_toy2_scenes(dataset_cfg: Any) -> PromptSet:
    """``dataset=toy2_scenes``: rendered v2 scenes with exact semantic labels."""
    from harness.toy.v2.world import SHAPES, caption

    composition = _composition(dataset_cfg)
    class_names = ["background", *SHAPES]
    records = [
        PromptRecord(id=f"scene2-{composition}-{index:07d}", prompt=caption(scene).text, seed=index,
                     meta={"renderer": "toy2_scene",  # registered in harness.registry.RENDERERS
                           "renderer_args": {"stream": composition, "index": index},
                           "num_classes": len(class_names), "class_names": class_names, "composition": composition})
        for index, scene in _scenes(dataset_cfg, composition)
    ]
    return _prompt_set("toy2_scenes", records, dataset_cfg, composition)
