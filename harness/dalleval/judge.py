"""Skill judgement over *seen objects*, shared by the toy judge and the detector judge.

A prompt's tags follow GenEval's layout (Ghosh et al., 2023; PaintSkills' skills): ``skill`` and
``include``, a list of asked objects ``{"class", "count", "color"?, "size"?, "position"?:
[relation, index]}``, where ``position`` says that this object stands in ``relation`` to the
object ``include[index]``. A reader (the toy scene reader, or a detector adapter) turns an
image into :class:`SeenObject` records; :func:`judge_skill` decides whether they satisfy the
tags. The rules, declared once here:

- ``object``: for every asked class, at least ``count`` seen objects of that class.
- ``colour_binding``: for every asked object, at least ``count`` seen objects of its class *and*
  its colour (so "a red circle and a blue square" rendered with swapped colours fails).
- ``spatial_relation``: every asked object is seen (class, and colour when named), and for an
  object with ``position = [relation, j]`` some seen pair (this object, object j) satisfies the
  relation on their centres: left/right compare x, above/below compare y, strictly, no margin.
- ``size``: some seen object of the asked class (and colour, when named) has the asked size.
- ``counting``: exactly ``count`` seen objects of each asked class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import DataError

SKILLS: tuple[str, ...] = ("object", "colour_binding", "spatial_relation", "size", "counting")
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
# GenEval writes "left of", "right of", "above", "below"; both spellings are accepted.
RELATION_ALIASES = {"left of": "to the left of", "right of": "to the right of"}


@dataclass(frozen=True)
class SeenObject:
    """One object a reader found in an image.

    centre: (x, y) as fractions of the image width and height (y grows downwards).
    colour / size: None where the reader cannot tell.
    """

    cls: str
    centre: tuple[float, float]
    colour: str | None = None
    size: str | None = None
    area: float = 0.0
    score: float = 1.0


def relation_holds(relation: str, first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether ``first`` stands ``relation`` to ``second`` (centres, image coordinates, strict)."""
    relation = RELATION_ALIASES.get(relation, relation)
    (x1, y1), (x2, y2) = first, second
    if relation == "to the left of":
        return x1 < x2
    if relation == "to the right of":
        return x1 > x2
    if relation == "above":
        return y1 < y2
    if relation == "below":
        return y1 > y2
    raise DataError(f"unknown spatial relation {relation!r}; known: {', '.join(RELATIONS)} (or 'left of', 'right of')")


def _matches(seen: SeenObject, asked: dict[str, Any], use_colour: bool) -> bool:
    if seen.cls != asked["class"]:
        return False
    return not (use_colour and asked.get("color") is not None and seen.colour != asked["color"])


def check_tags(skill: str, include: list[dict[str, Any]], where: str = "") -> None:
    """Refuse malformed tags with one clear message."""
    if skill not in SKILLS:
        raise DataError(f"{where}unknown skill {skill!r}; known: {', '.join(SKILLS)}")
    if not include or not all(isinstance(item, dict) and item.get("class") for item in include):
        raise DataError(f"{where}'include' must be a non-empty list of objects with a 'class'")
    for item in include:
        if item.get("position") is not None:
            relation, index = item["position"]
            relation_holds(relation, (0, 0), (0, 0))  # validates the name
            if not 0 <= int(index) < len(include):
                raise DataError(f"{where}position index {index} points outside 'include'")


def judge_skill(skill: str, include: list[dict[str, Any]], seen: list[SeenObject]) -> bool:
    """Whether the seen objects satisfy the prompt's tags under ``skill`` (rules: module docstring)."""
    if skill == "object":
        return all(sum(_matches(s, a, False) for s in seen) >= int(a.get("count", 1)) for a in include)
    if skill == "colour_binding":
        return all(sum(_matches(s, a, True) for s in seen) >= int(a.get("count", 1)) for a in include)
    if skill == "counting":
        return all(sum(_matches(s, a, False) for s in seen) == int(a.get("count", 1)) for a in include)
    if skill == "size":
        return all(any(_matches(s, a, True) and s.size == a["size"] for s in seen)
                   for a in include if a.get("size") is not None)
    if skill == "spatial_relation":
        candidates = [[s for s in seen if _matches(s, a, True)] for a in include]
        if not all(candidates):
            return False
        for k, asked in enumerate(include):
            if asked.get("position") is None:
                continue
            relation, j = asked["position"][0], int(asked["position"][1])
            if not any(relation_holds(relation, a.centre, b.centre)
                       for a in candidates[k] for b in candidates[j] if a is not b):
                return False
        return True
    raise DataError(f"unknown skill {skill!r}; known: {', '.join(SKILLS)}")
