"""Toy world v2: scenes, an exact-mask renderer and a caption grammar.

A scene is one to three *groups* on a textured, shaded background. A group is one to four
*instances* of one description: a shape, a colour family, a fill texture and a size ("three
small striped blue circles"). Compared with v1 (flat colours on flat backgrounds, 32x32):

- 64x64 pixels; the toy autoencoder maps them to a 16x16 latent, so a latent cell is 4x4 px.
- Fills: solid, striped, checked, dotted, named by an adjective. Colour is a hue family: each
  instance gets its own shade (hue, saturation, value jitter) and a lighting gradient, and a
  textured fill mixes the shade with a darker or lighter tone of the same family, so a pixel's
  RGB does not name its object.
- Backgrounds: gradient, grain, stripes, checks or grid, in a shaded colour; named in the caption
  or not ("on a gray background").
- Shapes with parts thinner than a latent cell (ring, cross, crescent) beside solid ones.
- Occlusion: instances may overlap; later ones are drawn on top, each mask holds the visible
  pixels, and every instance keeps at least `MIN_VISIBLE_FRACTION` of its area visible.
- Counting: numerals one to four; each instance has its own label, and the numeral, the
  adjectives and the (plural) noun of a group denote the union of its instances.

Masks are exact by construction: every instance is drawn alone on a 4x-supersampled canvas,
the canvases are stacked in drawing order (later on top), each pixel takes the majority label
of its 16 sub-pixels (ties to the lower label), and only then are colours painted from the
label map. Every pixel has exactly one owner.

Everything random is decided when a scene is sampled, so `render_scene` and `caption` are
pure functions of the scene.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from harness.toy.world import Caption, article
from harness.toy.world import check_prompt_words as check_words

IMAGE_SIZE = 64
SUPERSAMPLING = 4
#: An instance keeps at least this fraction of its own pixels visible after occlusion.
MIN_VISIBLE_FRACTION = 0.5

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross", "crescent")
PLURALS: dict[str, str] = {s: s + "es" if s.endswith("ss") else s + "s" for s in SHAPES}
#: Shapes with parts thinner than one latent cell (4 px): image resolution matters at their edges.
THIN_SHAPES: tuple[str, ...] = ("ring", "cross", "crescent")
#: Colour families by hue (degrees). An instance's shade is drawn around its family's hue.
HUES: dict[str, float] = {"red": 0.0, "orange": 28.0, "yellow": 54.0, "green": 125.0, "blue": 220.0, "purple": 280.0}
OBJECT_COLOURS: tuple[str, ...] = tuple(HUES)
#: Background colours that are not object colours: (value, value jitter) of a grey.
NEUTRALS: dict[str, tuple[float, float]] = {"white": (0.93, 0.05), "gray": (0.55, 0.08), "black": (0.12, 0.06)}
BACKGROUND_COLOURS: tuple[str, ...] = tuple(NEUTRALS) + OBJECT_COLOURS
TEXTURES: tuple[str, ...] = ("solid", "striped", "checked", "dotted")
#: Background patterns; the caption never names them (a nuisance, as textures in real photos).
BACKGROUND_PATTERNS: tuple[str, ...] = ("gradient", "grain", "stripes", "checks", "grid")
SIZES: tuple[str, ...] = ("small", "large")
#: Bounding-circle radius of an instance as a fraction of the image side.
SIZE_RADIUS: dict[str, float] = {"small": 0.11, "large": 0.18}
NUMERALS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
MAX_COUNT = 4
MAX_INSTANCES = 6
RELATIONS: tuple[str, ...] = ("and", "to the left of", "to the right of", "above", "below")
RELATION_MARGIN = 0.12
BACKGROUND_WORD = "background"
FUNCTION_WORDS: tuple[str, ...] = ("a", "an", "and", "to", "the", "left", "right", "of", "above", "below", "on")

#: Every word a v2 caption can contain, in a fixed order (training token ids follow it).
VOCABULARY: tuple[str, ...] = (
    FUNCTION_WORDS + tuple(NUMERALS.values()) + SIZES + TEXTURES + OBJECT_COLOURS + tuple(NEUTRALS)
    + SHAPES + tuple(PLURALS.values()) + (BACKGROUND_WORD,)
)
NOUN_OF: dict[str, str] = {**{s: s for s in SHAPES}, **{p: s for s, p in PLURALS.items()}}
BACKGROUND_MASK_ID = 0


@dataclass(frozen=True)
class Instance:
    """One drawn object: where it is and how its pixels are shaded."""

    centre: tuple[float, float]  # (x, y) in pixels
    radius: float  # bounding-circle radius in pixels
    rotation: float  # radians, applied to the outline (and not to circles)
    shade: tuple[float, float, float]  # (hue in degrees, saturation, value) of the base tone
    light_angle: float  # direction of the lighting gradient, radians
    light_strength: float  # value changes by +-strength across the instance
    pattern_angle: float  # orientation of stripes / checks / dot grid, radians
    pattern_period: float  # pixels
    pattern_phase: tuple[float, float]
    second_tone_dark: bool  # textured fills mix the base tone with a darker (True) or lighter tone


@dataclass(frozen=True)
class Group:
    """Instances of one description, and which of its words the caption speaks."""

    shape: str
    colour: str
    texture: str
    size: str
    instances: tuple[Instance, ...]
    say_size: bool = False
    say_texture: bool = True
    say_colour: bool = True
    say_one: bool = False  # a single instance introduced by "one" instead of "a"/"an"

    @property
    def count(self) -> int:
        return len(self.instances)


@dataclass(frozen=True)
class Background:
    colour: str
    pattern: str = "gradient"
    shade: tuple[float, float, float] = (0.0, 0.0, 0.93)
    angle: float = 0.0
    period: float = 8.0
    contrast: float = 0.1
    seed: int = 0  # grain


@dataclass(frozen=True)
class Scene:
    groups: tuple[Group, ...]
    background: Background = field(default_factory=lambda: Background("white"))
    say_background: bool = False
    relations: tuple[str, ...] = ()  # relations[i] links groups i and i + 1
    image_size: int = IMAGE_SIZE

    @property
    def instances(self) -> list[tuple[int, Instance]]:
        """(group index, instance) in drawing order; instance k has label k + 1."""
        return [(g, inst) for g, group in enumerate(self.groups) for inst in group.instances]

    def group_labels(self, group: int) -> tuple[int, ...]:
        """Label values of the instances of group `group`."""
        start = sum(g.count for g in self.groups[:group])
        return tuple(range(start + 1, start + 1 + self.groups[group].count))


@dataclass(frozen=True)
class CaptionWord:
    """A word of a caption with its ground truth.

    mask_ids: the label values the word denotes (0 = background, k + 1 = instance k), empty for
        words that denote nothing visible (determiners "a"/"an", conjunctions, prepositions).
    role: "det", "numeral", "size", "texture", "colour", "noun", "conj", "prep", "bg_colour",
        "bg_noun".
    head / deprel: Universal-Dependencies-style arc (numerals are `nummod` of their noun).
    """

    text: str
    mask_ids: tuple[int, ...]
    role: str
    head: int | None
    deprel: str
    group_index: int | None = None


def check_prompt_words(text: str) -> list[str]:
    """Split a prompt into words, each of which must be in the v2 vocabulary."""
    return check_words(text, VOCABULARY, model="toy v2")


# ----------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Description:
    """What a group is: (shape, colour, texture, size, count)."""

    shape: str
    colour: str
    texture: str
    size: str
    count: int


def _sample_instance_style(rng: np.random.Generator, colour: str) -> dict:
    hue = (HUES[colour] + rng.uniform(-7, 7)) % 360
    return dict(
        rotation=float(rng.uniform(0, 2 * np.pi)),
        shade=(float(hue), float(rng.uniform(0.55, 0.95)), float(rng.uniform(0.5, 0.95))),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        light_strength=float(rng.uniform(0.15, 0.4)),
        pattern_angle=float(rng.uniform(0, np.pi)),
        pattern_period=float(rng.uniform(3.5, 5.5)),
        pattern_phase=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1))),
        second_tone_dark=bool(rng.random() < 0.5),
    )


def _relation_holds(relation: str, first: tuple[float, float], second: tuple[float, float], image_size: int) -> bool:
    margin = RELATION_MARGIN * image_size
    (x1, y1), (x2, y2) = first, second
    return {
        "and": True,
        "to the left of": x1 < x2 - margin,
        "to the right of": x1 > x2 + margin,
        "above": y1 < y2 - margin,
        "below": y1 > y2 + margin,
    }[relation]


def place_groups(
    rng: np.random.Generator, descriptions: list[Description], image_size: int = IMAGE_SIZE, max_tries: int = 400
) -> list[list[tuple[float, float]]] | None:
    """Centres for every instance, or None if none found: instances may overlap, but no centre
    lies inside another instance's bounding circle's inner 60%, so occlusion stays partial."""
    radii = [[SIZE_RADIUS[d.size] * image_size] * d.count for d in descriptions]
    flat_r = [r for rs in radii for r in rs]
    for _ in range(max_tries):
        centres = [(float(rng.uniform(r + 0.5, image_size - r - 0.5)), float(rng.uniform(r + 0.5, image_size - r - 0.5)))
                   for r in flat_r]
        ok = all(
            np.hypot(centres[i][0] - centres[j][0], centres[i][1] - centres[j][1]) >= 0.75 * (flat_r[i] + flat_r[j])
            for i in range(len(centres)) for j in range(i)
        )
        if ok:
            out, k = [], 0
            for rs in radii:
                out.append(centres[k:k + len(rs)])
                k += len(rs)
            return out
    return None


def build_scene(
    rng: np.random.Generator,
    descriptions: list[Description],
    p_say_colour: float = 0.85,
    p_say_texture: float = 0.6,
    p_say_size: float = 0.35,
    p_say_background: float = 0.4,
    p_relation: float = 0.6,
    always_say: tuple[int, ...] = (),
    image_size: int = IMAGE_SIZE,
) -> Scene | None:
    """A scene with the given group descriptions (styles, positions and spoken words drawn from
    `rng`), or None when the instances cannot be placed with enough of each visible."""
    centres = place_groups(rng, descriptions, image_size)
    if centres is None:
        return None
    groups = []
    for g, (d, cs) in enumerate(zip(descriptions, centres)):
        instances = tuple(
            Instance(centre=c, radius=SIZE_RADIUS[d.size] * image_size, **_sample_instance_style(rng, d.colour))
            for c in cs
        )
        forced = g in always_say
        groups.append(Group(
            shape=d.shape, colour=d.colour, texture=d.texture, size=d.size, instances=instances,
            say_size=bool(rng.random() < p_say_size),
            say_texture=bool(rng.random() < p_say_texture) or forced,
            say_colour=bool(rng.random() < p_say_colour) or forced,
            say_one=d.count == 1 and bool(rng.random() < 0.15),
        ))
    relations = []
    for i in range(len(groups) - 1):
        relation = "and"
        a, b = groups[i], groups[i + 1]
        if a.count == 1 and b.count == 1 and rng.random() < p_relation:
            true = [r for r in RELATIONS[1:] if _relation_holds(r, a.instances[0].centre, b.instances[0].centre, image_size)]
            if true:
                relation = true[int(rng.integers(len(true)))]
        relations.append(relation)
    used = {g.colour for g in groups}
    options = [c for c in BACKGROUND_COLOURS if c not in used]
    colour = options[int(rng.integers(len(options)))]
    if colour in NEUTRALS:
        value, jitter = NEUTRALS[colour]
        shade = (0.0, 0.0, float(np.clip(value + rng.uniform(-jitter, jitter), 0, 1)))
    else:
        shade = ((HUES[colour] + float(rng.uniform(-7, 7))) % 360, float(rng.uniform(0.25, 0.6)), float(rng.uniform(0.55, 0.9)))
    background = Background(
        colour=colour,
        pattern=BACKGROUND_PATTERNS[int(rng.integers(len(BACKGROUND_PATTERNS)))],
        shade=shade,
        angle=float(rng.uniform(0, np.pi)),
        period=float(rng.uniform(5, 12)),
        contrast=float(rng.uniform(0.12, 0.3)),
        seed=int(rng.integers(2**31)),
    )
    scene = Scene(groups=tuple(groups), background=background, say_background=bool(rng.random() < p_say_background),
                  relations=tuple(relations), image_size=image_size)
    if _bounding_circles_overlap(scene) and min(visible_fractions(scene)) < MIN_VISIBLE_FRACTION:
        return None
    return scene


def _bounding_circles_overlap(scene: Scene) -> bool:
    """Whether any two instances' bounding circles intersect (only then can one hide another)."""
    items = [inst for _, inst in scene.instances]
    return any(np.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]) < a.radius + b.radius
               for i, a in enumerate(items) for b in items[:i])


# ----------------------------------------------------------------------------- rendering


def _outline(shape: str, r: float) -> list[tuple[float, float]] | None:
    """Polygon vertices around (0, 0) in pixel units; None for shapes drawn from circles."""
    if shape in ("circle", "ring", "crescent"):
        return None
    if shape == "square":
        h = r * 0.74
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "triangle":
        angles = np.deg2rad([-90, 30, 150])
        return [(r * np.cos(a), r * 0.25 + r * np.sin(a)) for a in angles]
    if shape == "star":
        return [((r if k % 2 == 0 else r * 0.45) * np.cos(np.deg2rad(-90 + 36 * k)),
                 0.08 * r + (r if k % 2 == 0 else r * 0.45) * np.sin(np.deg2rad(-90 + 36 * k))) for k in range(10)]
    if shape == "cross":
        a = 0.16 * r  # arm half-width: arms 2.2-3.7 px wide, thinner than a 4 px latent cell
        b = r * 0.95
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    raise ValueError(f"unknown shape {shape!r}; shapes: {SHAPES}")


def instance_mask(shape: str, inst: Instance, image_size: int) -> np.ndarray:
    """Boolean supersampled mask ((size*ss)^2) of one instance drawn alone."""
    ss = SUPERSAMPLING
    canvas = Image.new("1", (image_size * ss, image_size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = inst.centre
    r = inst.radius

    def to_ss(x: float) -> float:
        return x * ss - 0.5  # pixel-centre convention, as v1

    def circle(x: float, y: float, radius: float, fill: int) -> None:
        draw.ellipse([to_ss(x - radius), to_ss(y - radius), to_ss(x + radius), to_ss(y + radius)], fill=fill)

    if shape == "circle":
        circle(cx, cy, r, 1)
    elif shape == "ring":
        width = max(1.6, 0.22 * r)  # 1.7-2.5 px: thinner than a latent cell
        circle(cx, cy, r, 1)
        circle(cx, cy, r - width, 0)
    elif shape == "crescent":
        circle(cx, cy, r, 1)
        ox, oy = 0.42 * r * np.cos(inst.rotation), 0.42 * r * np.sin(inst.rotation)
        circle(cx + ox, cy + oy, 0.86 * r, 0)
    else:
        c, s = np.cos(inst.rotation), np.sin(inst.rotation)
        if shape in ("triangle", "star"):  # upright-ish: rotate by at most 30 degrees
            a = (inst.rotation % (np.pi / 3)) - np.pi / 6
            c, s = np.cos(a), np.sin(a)
        points = [(to_ss(cx + c * x - s * y), to_ss(cy + s * x + c * y)) for x, y in _outline(shape, r)]
        draw.polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def _pixel_votes(fine: np.ndarray, n_labels: int, image_size: int) -> np.ndarray:
    """(H*W, n_labels) counts of each label among every pixel's supersampled sub-pixels."""
    ss = SUPERSAMPLING
    ys, xs = np.indices(fine.shape)
    pixel = (ys // ss) * image_size + xs // ss
    return np.bincount((pixel * n_labels + fine).ravel(), minlength=image_size * image_size * n_labels).reshape(-1, n_labels)


def render_labels(scene: Scene) -> np.ndarray:
    """uint8 HxW label map: 0 = background, k + 1 = instance k (its visible pixels)."""
    size, ss = scene.image_size, SUPERSAMPLING
    fine = np.zeros((size * ss, size * ss), np.int64)
    instances = scene.instances
    for k, (g, inst) in enumerate(instances):
        fine[instance_mask(scene.groups[g].shape, inst, size)] = k + 1
    # Majority vote; ties go to the lower label (background before objects), deterministically.
    return _pixel_votes(fine, len(instances) + 1, size).argmax(axis=1).reshape(size, size).astype(np.uint8)


def visible_fractions(scene: Scene) -> list[float]:
    """Per instance, its visible pixels over the pixels it covers when drawn alone."""
    labels = render_labels(scene)
    size, ss = scene.image_size, SUPERSAMPLING
    out = []
    for k, (g, inst) in enumerate(scene.instances):
        alone = _pixel_votes(instance_mask(scene.groups[g].shape, inst, size).astype(np.int64), 2, size)[:, 1] > ss * ss // 2
        out.append(float((labels == k + 1).sum()) / max(1, int(alone.sum())))
    return out


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (h in degrees) -> RGB in [0, 1] (colorsys is scalar only)."""
    h = (h % 360) / 60.0
    c = v * s
    x = c * (1 - np.abs(h % 2 - 1))
    zeros = np.zeros_like(h)
    sector = np.floor(h).astype(int) % 6
    r = np.choose(sector, [c, x, zeros, zeros, x, c])
    g = np.choose(sector, [x, c, c, x, zeros, zeros])
    b = np.choose(sector, [zeros, zeros, x, c, c, x])
    m = v - c
    return np.stack([r + m, g + m, b + m], axis=-1)


def _pattern(texture: str, xs: np.ndarray, ys: np.ndarray, angle: float, period: float, phase: tuple[float, float]) -> np.ndarray:
    """1 where a textured fill takes its second tone, else 0 (pixel-centre coordinates)."""
    u = (xs * np.cos(angle) + ys * np.sin(angle)) / period + phase[0]
    w = (-xs * np.sin(angle) + ys * np.cos(angle)) / period + phase[1]
    if texture == "solid":
        return np.zeros_like(xs)
    if texture == "striped":
        return (np.floor(u * 2) % 2).astype(float)
    if texture == "checked":
        return ((np.floor(u * 1.4) + np.floor(w * 1.4)) % 2).astype(float)
    if texture == "dotted":
        du, dw = u - np.round(u), w - np.round(w)
        return (np.hypot(du, dw) * period < 1.15).astype(float)
    raise ValueError(f"unknown texture {texture!r}; textures: {TEXTURES}")


def render_scene(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HxWx3, labels uint8 HxW); `labels == k` is the exact mask of label k."""
    labels = render_labels(scene)
    size = scene.image_size
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    bg = scene.background
    h, s, v = bg.shade
    value = np.full((size, size), v)
    u = (xs * np.cos(bg.angle) + ys * np.sin(bg.angle))
    if bg.pattern == "gradient":
        value = value + bg.contrast * 2.0 * (u / size - 0.5) * 2
    elif bg.pattern == "grain":
        value = value + bg.contrast * np.random.default_rng(bg.seed).normal(0, 0.6, (size, size))
    elif bg.pattern == "stripes":
        value = value + bg.contrast * (np.floor(u / bg.period * 2) % 2 - 0.5) * 2
    elif bg.pattern == "checks":
        w = (-xs * np.sin(bg.angle) + ys * np.cos(bg.angle))
        value = value + bg.contrast * ((np.floor(u / bg.period) + np.floor(w / bg.period)) % 2 - 0.5) * 2
    elif bg.pattern == "grid":
        w = (-xs * np.sin(bg.angle) + ys * np.cos(bg.angle))
        line = ((u % bg.period) < 1.0) | ((w % bg.period) < 1.0)
        value = value + bg.contrast * np.where(line, -1.5, 0.3)
    rgb = _hsv_to_rgb(np.full((size, size), h), np.full((size, size), s), np.clip(value, 0, 1))
    for k, (g, inst) in enumerate(scene.instances):
        where = labels == k + 1
        if not where.any():
            continue
        group = scene.groups[g]
        ih, isat, ival = inst.shade
        px, py = xs[where] - inst.centre[0], ys[where] - inst.centre[1]
        light = inst.light_strength * (px * np.cos(inst.light_angle) + py * np.sin(inst.light_angle)) / inst.radius
        second = _pattern(group.texture, px, py, inst.pattern_angle, inst.pattern_period, inst.pattern_phase)
        if inst.second_tone_dark:
            tone_v, tone_s = ival * 0.35, isat
        else:
            tone_v, tone_s = min(1.0, ival * 0.25 + 0.75), isat * 0.25
        val = np.clip((1 - second) * ival + second * tone_v + light, 0, 1)
        sat = (1 - second) * isat + second * tone_s
        rgb[where] = _hsv_to_rgb(np.full(val.shape, ih), sat, val)
    image = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    return image, labels


# ----------------------------------------------------------------------------- captions


def caption(scene: Scene) -> Caption:
    """The caption of a scene, each word with its mask ids, role and dependency arc.

    Grammar (brackets: optional, decided when the scene was sampled):
        group    := determiner [size] [texture] [colour] noun
        determiner := "a" | "an" | "one"                     (one instance, singular noun)
                    | "two" | "three" | "four"               (that many, plural noun)
        caption  := group (relation group)* ["on a" colour "background"]
        relation := "and" | "to the left of" | "to the right of" | "above" | "below"
    Spatial relations link single-instance groups only; groups with several instances are
    joined by "and". Mask rules: a numeral ("one" included), size, texture and colour
    adjectives and the noun denote the union of their group's instances; "a"/"an", "and" and
    the prepositions denote nothing; the background colour and "background" denote label 0.
    """
    words: list[CaptionWord] = []
    noun_positions: list[int] = []

    def add_group(g: int, link: tuple[str, int | None]) -> None:
        group = scene.groups[g]
        ids = scene.group_labels(g)
        modifiers = [(group.size, "size", group.say_size), (group.texture, "texture", group.say_texture),
                     (group.colour, "colour", group.say_colour)]
        said = [(w, role) for w, role, say in modifiers if say]
        noun = group.shape if group.count == 1 else PLURALS[group.shape]
        noun_at = len(words) + 1 + len(said)
        if group.count > 1 or group.say_one:
            words.append(CaptionWord(NUMERALS[group.count], ids, "numeral", noun_at, "nummod", g))
        else:
            words.append(CaptionWord(article(said[0][0] if said else noun), (), "det", noun_at, "det", g))
        for w, role in said:
            words.append(CaptionWord(w, ids, role, noun_at, "amod", g))
        deprel, head = link
        words.append(CaptionWord(noun, ids, "noun", head, deprel, g))
        noun_positions.append(noun_at)

    add_group(0, ("root", None))
    for i, relation in enumerate(scene.relations):
        previous = noun_positions[-1]
        group = scene.groups[i + 1]
        n_said = int(group.say_size) + int(group.say_texture) + int(group.say_colour)
        relation_words = relation.split()
        next_noun = len(words) + len(relation_words) + 1 + n_said
        if relation == "and":
            words.append(CaptionWord("and", (), "conj", next_noun, "cc"))
            add_group(i + 1, ("conj", previous))
        else:
            first = len(words)
            words.append(CaptionWord(relation_words[0], (), "prep", next_noun, "case"))
            for w in relation_words[1:]:
                words.append(CaptionWord(w, (), "prep", first, "fixed"))
            add_group(i + 1, ("nmod", previous))
    if scene.say_background:
        noun_at = len(words) + 3
        colour = scene.background.colour
        words.append(CaptionWord("on", (), "prep", noun_at, "case"))
        words.append(CaptionWord(article(colour), (), "det", noun_at, "det"))
        words.append(CaptionWord(colour, (BACKGROUND_MASK_ID,), "bg_colour", noun_at, "amod"))
        words.append(CaptionWord(BACKGROUND_WORD, (BACKGROUND_MASK_ID,), "bg_noun", noun_positions[0], "nmod"))
    return Caption(" ".join(w.text for w in words), words)


def word_masks(scene: Scene, labels: np.ndarray) -> list[np.ndarray | None]:
    """Per word of `caption(scene)`, its exact boolean mask, or None if it denotes nothing."""
    return [np.isin(labels, w.mask_ids) if w.mask_ids else None for w in caption(scene).words]


def semantic_labels(scene: Scene, instance_labels: np.ndarray) -> np.ndarray:
    """int32 HxW: 0 background, 1 + SHAPES.index(shape) for every instance's visible pixels
    (one group per shape in a sampled scene, so a shape class is a group)."""
    classes = np.zeros(int(instance_labels.max()) + 1, np.int32)
    for k, (g, _) in enumerate(scene.instances):
        classes[k + 1] = 1 + SHAPES.index(scene.groups[g].shape)
    return classes[instance_labels]


def colour_name_rgb(colour: str) -> tuple[int, int, int]:
    """A representative RGB of a colour name (for legends; the renderer varies around it)."""
    if colour in NEUTRALS:
        v = NEUTRALS[colour][0]
        return (round(v * 255),) * 3
    r, g, b = colorsys.hsv_to_rgb(HUES[colour] / 360, 0.8, 0.85)
    return round(r * 255), round(g * 255), round(b * 255)
