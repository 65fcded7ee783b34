"""The toy world: vocabulary, scenes, an exact-mask renderer and a caption grammar.

A scene is 1-3 flat-coloured shapes on a plain background. Everything a caption can say is
decided when the scene is sampled (which adjectives are spoken, which spatial relation links
the objects, whether the background is named), so `caption(scene)` is a pure function and
the same seed always gives the same image, masks and text.

Masks are exact by construction: the renderer first draws a *label map* (0 = background,
i + 1 = object i) with 4x4 supersampling, takes the majority label of every pixel, and only
then paints the colours from the label map. The label map therefore partitions the image,
and every pixel has exactly one owner. Objects are placed so that their bounding circles do
not overlap, so no object hides another; should a caller build overlapping scenes by hand,
later objects are drawn on top and each mask holds the pixels where its object is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from harness.errors import HarnessError

IMAGE_SIZE = 32
SUPERSAMPLING = 4

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")
#: Semantic classes of labelled scenes (toy_scenes label maps): 0 = background, then one class per shape.
SCENE_CLASSES: tuple[str, ...] = ("background", *SHAPES)
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 210, 40),
    "purple": (145, 60, 185),
    "orange": (245, 135, 25),
}
# Background colours: three neutrals, plus any object colour that no object of the scene uses.
NEUTRAL_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}
ALL_COLOURS: dict[str, tuple[int, int, int]] = {**OBJECT_COLOURS, **NEUTRAL_COLOURS}
SIZES: tuple[str, ...] = ("small", "large")
# Bounding-circle radius of an object, as a fraction of the image side.
SIZE_RADIUS: dict[str, float] = {"small": 0.135, "large": 0.225}
# Spatial relations between two consecutive objects of a caption; "and" always holds.
RELATIONS: tuple[str, ...] = ("and", "to the left of", "to the right of", "above", "below")
# A relation is spoken only when it is unambiguous: centres differ by at least this fraction.
RELATION_MARGIN = 0.12

FUNCTION_WORDS: tuple[str, ...] = ("a", "an", "and", "to", "the", "left", "right", "of", "above", "below", "on")
BACKGROUND_WORD = "background"

#: Every word a toy caption can contain, in a fixed order (token ids follow this order).
VOCABULARY: tuple[str, ...] = (
    FUNCTION_WORDS + SIZES + tuple(OBJECT_COLOURS) + tuple(NEUTRAL_COLOURS) + SHAPES + (BACKGROUND_WORD,)
)

BACKGROUND_MASK_ID = 0


@dataclass(frozen=True)
class ToyObject:
    """One shape of a scene, and which of its adjectives the caption speaks."""

    shape: str
    colour: str
    size: str
    centre: tuple[float, float]  # (x, y) in pixels, image coordinates
    radius: float  # bounding-circle radius in pixels
    say_size: bool = True
    say_colour: bool = True


@dataclass(frozen=True)
class Scene:
    """A full scene description: objects (in caption order), background, caption choices."""

    objects: tuple[ToyObject, ...]
    background: str = "white"
    say_background: bool = False
    # relations[i] links objects[i] and objects[i + 1] in the caption ("and" or a preposition).
    relations: tuple[str, ...] = ()
    image_size: int = IMAGE_SIZE


@dataclass(frozen=True)
class CaptionWord:
    """A word of a caption with its ground truth.

    mask_id: the label-map value of what the word denotes (0 = background, i + 1 = object i),
        or None for words that denote nothing visible (determiners, conjunctions, prepositions).
    role: "det", "size", "colour", "noun", "conj", "prep", "bg_colour", "bg_noun".
    head: index of the word's syntactic head in the caption (None for the root).
    deprel: Universal-Dependencies-style relation to the head ("det", "amod", "cc", "conj",
        "case", "fixed", "nmod", "root").
    """

    text: str
    mask_id: int | None
    role: str
    head: int | None
    deprel: str
    object_index: int | None = None


@dataclass
class Caption:
    """A caption's text and its words, aligned one to one with `text.split()`."""

    text: str
    words: list[CaptionWord] = field(default_factory=list)

    def word_indices(self, role: str) -> list[int]:
        """Indices of the words with the given role."""
        return [i for i, w in enumerate(self.words) if w.role == role]


# ----------------------------------------------------------------------------- vocabulary


def check_prompt_words(text: str, vocabulary: tuple[str, ...] = VOCABULARY, model: str = "toy") -> list[str]:
    """Split a prompt into words and check that each one is in the toy vocabulary (world v1's
    unless another is given).

    Raises HarnessError naming the unknown words and listing the vocabulary.
    """
    words = text.lower().split()
    unknown = sorted({w for w in words if w not in vocabulary})
    if unknown:
        raise HarnessError(
            f"the {model} model knows only its own vocabulary; unknown word(s) {unknown} in prompt {text!r}. "
            f"Toy vocabulary: {' '.join(vocabulary)}"
        )
    return words


# ----------------------------------------------------------------------------- sampling


def _relation_holds(relation: str, first: ToyObject, second: ToyObject, image_size: int) -> bool:
    margin = RELATION_MARGIN * image_size
    (x1, y1), (x2, y2) = first.centre, second.centre
    if relation == "and":
        return True
    if relation == "to the left of":
        return x1 < x2 - margin
    if relation == "to the right of":
        return x1 > x2 + margin
    if relation == "above":
        return y1 < y2 - margin
    if relation == "below":
        return y1 > y2 + margin
    raise ValueError(f"unknown relation {relation!r}")


def sample_scene_with(
    rng: np.random.Generator,
    allowed_pairs: list[tuple[str, str]],
    n_objects: int | None = None,
    required_pairs: list[tuple[str, str]] | None = None,
    p_say_colour: float = 0.85,
    p_say_size: float = 0.5,
    p_say_background: float = 0.5,
    p_relation: float = 0.6,
    image_size: int = IMAGE_SIZE,
) -> Scene:
    """Sample a scene whose objects' (colour, shape) pairs come from `allowed_pairs`.

    If `required_pairs` is given, one object (at a random caption position) takes a pair drawn
    from it. Objects of one scene have distinct (colour, shape) pairs, so every object can be
    named unambiguously. All draws come from `rng`.
    """
    if n_objects is None:
        n_objects = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    pairs: list[tuple[str, str]] = []
    required_slot = int(rng.integers(n_objects)) if required_pairs else -1
    for slot in range(n_objects):
        pool = required_pairs if slot == required_slot else allowed_pairs
        while True:
            pair = pool[int(rng.integers(len(pool)))]
            if pair not in pairs:
                break
        pairs.append(pair)

    # Positions: rejection-sample centres whose bounding circles keep a one-pixel gap; if the
    # sizes cannot be packed after many tries, shrink the largest object and try again.
    sizes = [SIZES[int(rng.integers(2))] for _ in range(n_objects)]
    while True:
        radii = [SIZE_RADIUS[s] * image_size for s in sizes]
        centres: list[tuple[float, float]] = []
        for _attempt in range(200):
            centres = []
            for r in radii:
                lo, hi = r + 0.5, image_size - r - 0.5
                centres.append((float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))))
            if all(
                np.hypot(centres[i][0] - centres[j][0], centres[i][1] - centres[j][1]) >= radii[i] + radii[j] + 1
                for i in range(n_objects)
                for j in range(i)
            ):
                break
        else:
            sizes[int(np.argmax(radii))] = "small"
            continue
        break

    objects = tuple(
        ToyObject(
            shape=shape,
            colour=colour,
            size=size,
            centre=centre,
            radius=radius,
            say_size=bool(rng.random() < p_say_size),
            # a required (withheld) pair is always named: otherwise the prompt would not ask for it
            say_colour=bool(rng.random() < p_say_colour) or slot == required_slot,
        )
        for slot, ((colour, shape), size, centre, radius) in enumerate(zip(pairs, sizes, centres, radii))
    )

    relations = []
    for i in range(n_objects - 1):
        relation = "and"
        if rng.random() < p_relation:
            true_relations = [r for r in RELATIONS[1:] if _relation_holds(r, objects[i], objects[i + 1], image_size)]
            if true_relations:
                relation = true_relations[int(rng.integers(len(true_relations)))]
        relations.append(relation)

    used = {o.colour for o in objects}
    say_background = bool(rng.random() < p_say_background)
    if say_background:
        options = [c for c in ALL_COLOURS if c not in used]
        background = options[int(rng.integers(len(options)))]
    else:
        background = "white"
    return Scene(
        objects=objects,
        background=background,
        say_background=say_background,
        relations=tuple(relations),
        image_size=image_size,
    )


# ----------------------------------------------------------------------------- rendering


def _shape_outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Polygon vertices (pixel units) of a shape, or None for the circle (drawn as an ellipse)."""
    if shape == "circle":
        return None
    if shape == "square":
        h = r * 0.78  # a square inside the bounding circle, slightly larger than inscribed
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        # Equilateral, pointing up; shifted down so its bounding box is centred.
        angles = np.deg2rad([-90, 30, 150])
        dy = r * 0.25
        return [(cx + r * np.cos(a), cy + dy + r * np.sin(a)) for a in angles]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            a = np.deg2rad(-90 + 36 * k)
            points.append((cx + radius * np.cos(a), cy + 0.08 * r + radius * np.sin(a)))
        return points
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        scale = r / 16.5
        # The curve spans y in [-12, 17]; centre it vertically.
        return [(cx + scale * xi, cy + scale * (yi - 2.5)) for xi, yi in zip(x, y)]
    raise ValueError(f"unknown shape {shape!r}; shapes: {SHAPES}")


def render_labels(scene: Scene) -> np.ndarray:
    """The label map of a scene: uint8 HxW, 0 = background, i + 1 = object i (visible pixels)."""
    size, ss = scene.image_size, SUPERSAMPLING
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)

    def to_ss(x: float) -> float:
        # Pixel-centre convention: continuous coordinate x maps to supersampled x*ss - 0.5.
        return x * ss - 0.5

    for index, obj in enumerate(scene.objects):
        cx, cy = obj.centre
        outline = _shape_outline(obj.shape, cx, cy, obj.radius)
        if outline is None:
            box = [to_ss(cx - obj.radius), to_ss(cy - obj.radius), to_ss(cx + obj.radius), to_ss(cy + obj.radius)]
            draw.ellipse(box, fill=index + 1)
        else:
            draw.polygon([(to_ss(x), to_ss(y)) for x, y in outline], fill=index + 1)
    fine = np.asarray(canvas).reshape(size, ss, size, ss)
    counts = np.stack([(fine == k).sum(axis=(1, 3)) for k in range(len(scene.objects) + 1)])
    # Majority vote; ties go to the lower label (background before objects), deterministically.
    return counts.argmax(axis=0).astype(np.uint8)


def render_scene(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene.

    Returns (image, labels): image is uint8 HxWx3 RGB; labels is uint8 HxW with 0 for the
    background and i + 1 for object i. `labels == k` is the exact mask of mask id k.
    """
    labels = render_labels(scene)
    palette = np.array(
        [ALL_COLOURS[scene.background]] + [OBJECT_COLOURS[o.colour] for o in scene.objects], dtype=np.uint8
    )
    return palette[labels], labels


# ----------------------------------------------------------------------------- captions


def article(next_word: str) -> str:
    """The indefinite article before `next_word`."""
    return "an" if next_word[0] in "aeiou" else "a"


def caption(scene: Scene) -> Caption:
    """The caption of a scene, with each word's mask id, role and dependency arc.

    Grammar (brackets = optional, decided when the scene was sampled):
        object   := ("a" | "an") [size] [colour] shape
        caption  := object (relation object)* ["on a" colour "background"]
        relation := "and" | "to the left of" | "to the right of" | "above" | "below"
    Dependencies follow Universal Dependencies: det/amod attach to their noun; the first noun is
    the root; "and" is cc of the following noun, which is conj of the previous noun; a
    preposition's first word is case of the following noun (its other words are fixed to it),
    and that noun is nmod of the previous noun; "background" is nmod of the first noun.
    """
    words: list[CaptionWord] = []
    noun_positions: list[int] = []

    def add_object(index: int, obj: ToyObject, link: tuple[str, int | None]) -> None:
        start = len(words)
        n_modifiers = 1 + int(obj.say_size) + int(obj.say_colour)
        noun_at = start + n_modifiers
        mask_id = index + 1
        first_word = obj.size if obj.say_size else obj.colour if obj.say_colour else obj.shape
        words.append(CaptionWord(article(first_word), None, "det", noun_at, "det", index))
        if obj.say_size:
            words.append(CaptionWord(obj.size, mask_id, "size", noun_at, "amod", index))
        if obj.say_colour:
            words.append(CaptionWord(obj.colour, mask_id, "colour", noun_at, "amod", index))
        deprel, head = link
        words.append(CaptionWord(obj.shape, mask_id, "noun", head, deprel, index))
        noun_positions.append(noun_at)

    add_object(0, scene.objects[0], ("root", None))
    for i, relation in enumerate(scene.relations):
        previous_noun = noun_positions[-1]
        relation_words = relation.split()
        obj = scene.objects[i + 1]
        n_modifiers = 1 + int(obj.say_size) + int(obj.say_colour)
        next_noun = len(words) + len(relation_words) + n_modifiers
        if relation == "and":
            words.append(CaptionWord("and", None, "conj", next_noun, "cc"))
            add_object(i + 1, obj, ("conj", previous_noun))
        else:
            first = len(words)
            words.append(CaptionWord(relation_words[0], None, "prep", next_noun, "case"))
            for w in relation_words[1:]:
                words.append(CaptionWord(w, None, "prep", first, "fixed"))
            add_object(i + 1, obj, ("nmod", previous_noun))
    if scene.say_background:
        noun_at = len(words) + 3
        words.append(CaptionWord("on", None, "prep", noun_at, "case"))
        words.append(CaptionWord(article(scene.background), None, "det", noun_at, "det"))
        words.append(CaptionWord(scene.background, BACKGROUND_MASK_ID, "bg_colour", noun_at, "amod"))
        words.append(CaptionWord(BACKGROUND_WORD, BACKGROUND_MASK_ID, "bg_noun", noun_positions[0], "nmod"))
    return Caption(" ".join(w.text for w in words), words)


def word_masks(scene: Scene, labels: np.ndarray) -> list[np.ndarray | None]:
    """For each word of `caption(scene)`, its exact boolean mask, or None if it denotes nothing."""
    return [None if w.mask_id is None else labels == w.mask_id for w in caption(scene).words]
