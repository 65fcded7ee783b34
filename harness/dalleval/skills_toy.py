"""``dataset=skills_toy_gen`` / ``skills_toy_unreal``: one toy prompt set per visual-reasoning skill.

Each prompt is a caption of the toy grammar built from a held-out scene of the ``toy_gen`` or
``toy_unreal`` split (``harness.toy.splits``: the same distribution as training, or scenes that
hold a (colour, shape) pair never seen in training), and carries GenEval-style tags
(``meta["skill"]``, ``meta["include"]``; :mod:`harness.dalleval.judge`) saying what must be true
of the image:

- ``object``: "a <colour> <shape>" (one-object scenes); the shape must be present.
- ``colour_binding``: "a <colour> <shape> and a <colour> <shape>" (two-object scenes); each
  shape in its own colour, so swapped colours fail.
- ``spatial_relation``: "a <colour> <shape> <relation> a <colour> <shape>" (two-object scenes);
  relations cycle through left of / right of / above / below, independent of the scene's own
  layout (the model sees only the prompt).
- ``size``: "a <size> <colour> <shape>" (one-object scenes, the scene's own size).
- ``counting``: not built: the toy grammar has no numerals (the metric reports an empty cell).

Scenes: ``dataset.split`` (``dev`` for choices, ``test`` for reporting) and ``dataset.seed`` pick
``4 * dataset.size`` scene indices of that evaluation split (``harness.toy.splits.eval_indices``);
skill ``k`` (in :data:`TOY_SKILLS` order) takes every fourth, from the ``k``-th (a smaller size
with the same seed is a prefix, per skill).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import ConfigError

TOY_SKILLS: tuple[str, ...] = ("object", "colour_binding", "spatial_relation", "size")
TOY_STYLES: tuple[str, ...] = ("toy_gen", "toy_unreal")
SKILL_OBJECTS = {"object": 1, "colour_binding": 2, "spatial_relation": 2, "size": 1}
RELATION_CYCLE = ("to the left of", "to the right of", "above", "below")
NOT_APPLICABLE = {"counting": "not applicable: the toy grammar has no numerals, so no counting prompt can be written"}


def skill_record(style: str, skill: str, index: int, k: int) -> PromptRecord:
    """The ``k``-th prompt of ``skill`` from scene ``index`` of split ``style``."""
    from harness.toy.splits import scene_for_index
    from harness.toy.world import caption

    scene = scene_for_index(style, index, SKILL_OBJECTS[skill])
    objects = tuple(replace(o, say_colour=True, say_size=(skill == "size")) for o in scene.objects)
    relations: tuple[str, ...] = ()
    if skill == "colour_binding":
        relations = ("and",)
    elif skill == "spatial_relation":
        relations = (RELATION_CYCLE[k % len(RELATION_CYCLE)],)
    text = caption(replace(scene, objects=objects, relations=relations, say_background=False)).text
    include: list[dict[str, Any]] = []
    for i, obj in enumerate(objects):
        item: dict[str, Any] = {"class": obj.shape, "count": 1, "color": obj.colour}
        if skill == "size":
            item["size"] = obj.size
        if skill == "spatial_relation" and i == 0:
            item["position"] = [relations[0], 1]
        include.append(item)
    return PromptRecord(
        id=f"{style}-{skill}-{index:07d}", prompt=text, seed=index,
        meta={"skill": skill, "include": include, "style": style,
              "nouns": list(dict.fromkeys(o.shape for o in objects)),
              "scene": {"split": style, "index": index, "n_objects": SKILL_OBJECTS[skill]}})


def build_skills_toy(dataset_cfg: Any, style: str) -> PromptSet:
    """``dataset.size`` prompts per skill (``params.skills``, default all four) from ``style`` scenes."""
    params = dict(dataset_cfg.params or {})
    unknown = set(params) - {"skills"}
    if unknown:
        raise ConfigError(f"dataset.params {sorted(unknown)} unknown for skills_{style}; known: skills.")
    skills = list(params.get("skills") or TOY_SKILLS)
    for skill in skills:
        if skill not in TOY_SKILLS:
            hint = f" ({NOT_APPLICABLE[skill]})" if skill in NOT_APPLICABLE else ""
            raise ConfigError(f"dataset.params.skills: {skill!r} has no toy prompt set{hint}; "
                              f"toy skills: {', '.join(TOY_SKILLS)}.")
    from harness.toy.splits import dataset_indices

    size, indices = dataset_indices(dataset_cfg, 40, per_record=len(TOY_SKILLS), what=f"skills_{style}")
    per_skill = {skill: indices[k::len(TOY_SKILLS)] for k, skill in enumerate(TOY_SKILLS)}
    records = [skill_record(style, skill, per_skill[skill][k], k)
               for k in range(size) for skill in skills]  # interleaved: any head holds every skill
    return validate_prompt_set(
        PromptSet(f"skills_{style}", records, builder=f"harness.dalleval.skills_toy:{style}",
                  params={"size_per_skill": size, "split": dataset_cfg.split, "seed": int(dataset_cfg.seed),
                          "skills": skills}),
        f"dataset=skills_{style}")


def build_skills_toy_gen(dataset_cfg: Any) -> PromptSet:
    """``dataset=skills_toy_gen``: skill prompts from held-out training-distribution scenes."""
    return build_skills_toy(dataset_cfg, "toy_gen")


def build_skills_toy_unreal(dataset_cfg: Any) -> PromptSet:
    """``dataset=skills_toy_unreal``: skill prompts holding a (colour, shape) pair unseen in training."""
    return build_skills_toy(dataset_cfg, "toy_unreal")
