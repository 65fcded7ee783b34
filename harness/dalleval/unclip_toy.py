"""``dataset=unclip_toy``: toy images for the unCLIP experiments.

Record ``i`` is a one-object ``toy_gen`` scene of the evaluation split ``dataset.split`` (``dev`` /
``test``; ``2 * dataset.size`` indices drawn with ``dataset.seed``, ``harness.toy.splits.eval_indices``),
rendered (``meta.renderer``), its partner image for interpolation (the scene of index
``size + i`` of the same draw, ``meta.renderer_b_args``), and a
text diff that changes its colour: ``caption_from`` = the scene's caption, ``caption_to`` = the
same caption with the next object colour (red -> green -> blue -> ...).
"""

from __future__ import annotations

from typing import Any

from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set


def build_unclip_toy(dataset_cfg: Any) -> PromptSet:
    """``dataset.size`` records (default 8) from scene index ``dataset.seed``."""
    from dataclasses import replace

    from harness.toy.splits import scene_for_index
    from harness.toy.world import OBJECT_COLOURS, caption

    colours = list(OBJECT_COLOURS)
    from harness.toy.splits import eval_indices

    size = int(dataset_cfg.size if dataset_cfg.size is not None else 8)
    indices = eval_indices(dataset_cfg.split, 2 * size, int(dataset_cfg.seed))
    records = []
    for index, partner in zip(indices[:size], indices[size:]):
        scene = scene_for_index("toy_gen", index, 1)
        obj = replace(scene.objects[0], say_colour=True, say_size=False)
        scene = replace(scene, objects=(obj,), say_background=False)
        other = colours[(colours.index(obj.colour) + 1) % len(colours)]
        records.append(PromptRecord(
            id=f"unclip_toy-{index:07d}", prompt=caption(scene).text, seed=index,
            meta={"renderer": "toy_scene",  # registered in harness.registry.RENDERERS
                  "renderer_args": {"split": "toy_gen", "index": index, "n_objects": 1},
                  "renderer_b_args": {"split": "toy_gen", "index": partner, "n_objects": 1},
                  "caption_from": caption(scene).text,
                  "caption_to": caption(replace(scene, objects=(replace(obj, colour=other),))).text}))
    return validate_prompt_set(PromptSet("unclip_toy", records, builder="harness.dalleval.unclip_toy:build_unclip_toy",
                                         params={"size": size, "split": dataset_cfg.split, "seed": int(dataset_cfg.seed)}), "dataset=unclip_toy")
