"""Cohyponymy over WordNet (NLTK's reader, WordNet 3.0 installed offline: harness.analysis.wordnet_data).

Two words are **cohyponyms** when their chosen noun senses are distinct, neither is a
hypernym of the other, and they share a hypernym at most ``max_steps`` hypernym edges above
each (``max_steps=1``: siblings under one immediate hypernym). The rule and its default
(``max_steps=3``, the smallest that makes the paper's own example "a giraffe and a zebra"
cohyponyms: giraffe -> ruminant -> even-toed ungulate -> ungulate <- odd-toed ungulate <-
equine <- zebra) are declared in docs/daam_analyses.md; the paper does not state its rule.

Senses are chosen explicitly (a word's first WordNet sense is often not the object: "kite" is
first a bank cheque, "mouse" a rodent):

- :data:`TOY_SENSES`: the toy world's shapes as plane figures. circle.n.01 (an ellipse, a
  conic section), square.n.01 (rectangle -> parallelogram -> quadrilateral -> polygon),
  triangle.n.01 (polygon), star.n.05 and heart.n.07 (direct children of plane_figure.n.01).
- :data:`COCO_SENSES`: the 80 COCO classes; the first noun sense of the class name unless
  listed in ``COCO_SENSE_OVERRIDES``.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations
from typing import Any

from harness.errors import ConfigError

DEFAULT_MAX_STEPS = 3

TOY_SENSES: dict[str, str] = {
    "circle": "circle.n.01",
    "square": "square.n.01",
    "triangle": "triangle.n.01",
    "star": "star.n.05",
    "heart": "heart.n.07",
}

#: COCO classes whose first WordNet noun sense is not the object (or that have no entry under their name).
COCO_SENSE_OVERRIDES: dict[str, str] = {
    "stop sign": "street_sign.n.01",
    "sports ball": "ball.n.01",
    "kite": "kite.n.03",
    "wine glass": "wineglass.n.01",
    "banana": "banana.n.02",
    "broccoli": "broccoli.n.02",
    "carrot": "carrot.n.03",
    "hot dog": "hotdog.n.02",
    "cake": "cake.n.03",
    "potted plant": "pot_plant.n.01",
    "toilet": "toilet.n.02",
    "tv": "television_receiver.n.01",
    "mouse": "mouse.n.04",
    "keyboard": "computer_keyboard.n.01",
    "cell phone": "cellular_telephone.n.01",
    "microwave": "microwave.n.02",
    "toaster": "toaster.n.02",
    "book": "book.n.02",
}


@lru_cache(maxsize=1)
def wordnet() -> Any:
    from harness.analysis.wordnet_data import ensure_wordnet

    return ensure_wordnet()


def coco_senses() -> dict[str, str]:
    """COCO class -> WordNet synset name (first noun sense unless overridden)."""
    from harness.data.coco80 import coco80_classes

    senses = {}
    for name in coco80_classes():
        if name in COCO_SENSE_OVERRIDES:
            senses[name] = COCO_SENSE_OVERRIDES[name]
            continue
        synsets = wordnet().synsets(name.replace(" ", "_"), "n")
        if not synsets:
            raise ConfigError(f"COCO class {name!r} has no WordNet noun sense; add it to COCO_SENSE_OVERRIDES.")
        senses[name] = synsets[0].name()
    return senses


def hypernym_steps(synset: Any) -> dict[Any, int]:
    """Every hypernym (and instance hypernym) of ``synset`` with its fewest edges above it (itself: 0)."""
    steps = {synset: 0}
    frontier = [synset]
    while frontier:
        following = []
        for node in frontier:
            for parent in node.hypernyms() + node.instance_hypernyms():
                if parent not in steps:
                    steps[parent] = steps[node] + 1
                    following.append(parent)
        frontier = following
    return steps


def shared_hypernym(first: str, second: str) -> tuple[str | None, int, int]:
    """(hypernym, edges from first, edges from second) of the shared hypernym nearest to both (max edges, then sum)."""
    a, b = wordnet().synset(first), wordnet().synset(second)
    steps_a, steps_b = hypernym_steps(a), hypernym_steps(b)
    common = [node for node in steps_a if node in steps_b]
    if not common:
        return None, -1, -1
    best = min(common, key=lambda n: (max(steps_a[n], steps_b[n]), steps_a[n] + steps_b[n], n.name()))
    return best.name(), steps_a[best], steps_b[best]


def are_cohyponyms(first: str, second: str, max_steps: int = DEFAULT_MAX_STEPS) -> bool:
    """Whether two synsets (names like ``"dog.n.01"``) are cohyponyms under the module's rule."""
    if int(max_steps) < 1:
        raise ConfigError(f"max_steps must be >= 1, got {max_steps}.")
    if first == second:
        return False
    hypernym, steps_a, steps_b = shared_hypernym(first, second)
    if hypernym is None or 0 in (steps_a, steps_b):  # one is a hypernym of the other: not cohyponyms
        return False
    return steps_a <= max_steps and steps_b <= max_steps


def classify_pairs(senses: dict[str, str], max_steps: int = DEFAULT_MAX_STEPS) -> dict[tuple[str, str], bool]:
    """Every unordered pair of ``senses``' words (sorted) -> cohyponym or not."""
    return {(x, y): are_cohyponyms(senses[x], senses[y], max_steps) for x, y in combinations(sorted(senses), 2)}
