"""Toy world v2: exact masks (textures, occlusion, numerals) on hand-built scenes, the caption
grammar, and the held-out compositions."""

from __future__ import annotations

import re

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.toy.splits import eval_indices
from harness.toy.v2 import splits
from harness.toy.v2.tokens import V2
from harness.toy.v2.world import (
    PLURALS,
    TEXTURES,
    Background,
    Group,
    Instance,
    Scene,
    caption,
    check_prompt_words,
    render_scene,
    word_masks,
)

# A square of radius r has half-side 0.74 r: r = 8 / 0.74 puts its edges on pixel boundaries, so
# every pixel is wholly inside or outside and the expected masks are boxes.
R_EDGE_8 = 8 / 0.74


def _instance(x: float, y: float, radius: float = R_EDGE_8, light: float = 0.0) -> Instance:
    return Instance(centre=(x, y), radius=radius, rotation=0.0, shade=(220.0, 0.8, 0.8), light_angle=0.0,
                    light_strength=light, pattern_angle=0.3, pattern_period=4.0, pattern_phase=(0.1, 0.2),
                    second_tone_dark=True)


def _box(x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _scene(*groups: Group, relations: tuple[str, ...] | None = None) -> Scene:
    return Scene(groups=groups, background=Background("white", "gradient", (0.0, 0.0, 0.9)),
                 relations=relations if relations is not None else ("and",) * (len(groups) - 1))


def _group(shape: str, instances: tuple[Instance, ...], texture: str = "solid", **say) -> Group:
    return Group(shape=shape, colour="blue", texture=texture, size="small", instances=instances,
                 say_size=say.get("size", False), say_texture=say.get("texture", False), say_colour=say.get("colour", False))


def test_square_masks_are_exact_boxes():
    _, labels = render_scene(_scene(_group("square", (_instance(20, 20),))))
    assert np.array_equal(labels == 1, _box(12, 28, 12, 28))
    assert set(np.unique(labels)) == {0, 1}


def test_occlusion_mask_is_the_visible_part():
    first, second = _box(12, 28, 12, 28), _box(20, 36, 20, 36)
    scene = _scene(_group("square", (_instance(20, 20), _instance(28, 28))))
    _, labels = render_scene(scene)
    assert np.array_equal(labels == 1, first & ~second)  # drawn first, partly hidden
    assert np.array_equal(labels == 2, second)  # drawn on top, whole
    assert np.array_equal(labels == 0, ~(first | second))


@pytest.mark.parametrize("texture", TEXTURES)
def test_textures_change_colours_never_masks(texture):
    solid = _scene(_group("square", (_instance(20, 20),), texture="solid"))
    textured = _scene(_group("square", (_instance(20, 20),), texture=texture))
    image_solid, labels_solid = render_scene(solid)
    image, labels = render_scene(textured)
    assert np.array_equal(labels, labels_solid)
    inside = image[labels == 1]
    tones = {tuple(p) for p in inside}
    # no lighting gradient: a solid fill is one colour, a textured fill exactly two
    assert len(tones) == (1 if texture == "solid" else 2)
    assert np.array_equal(image[labels == 0], image_solid[labels_solid == 0])


def test_numeral_adjectives_and_plural_noun_denote_the_union_of_instances():
    boxes = [(12, 28, 12, 28), (40, 56, 12, 28), (12, 28, 40, 56)]
    group = Group(
        shape="square", colour="blue", texture="checked", size="small",
        instances=tuple(_instance(x0 + 8, y0 + 8) for x0, _, y0, _ in boxes), say_texture=True, say_colour=True)
    scene = _scene(group)
    cap = caption(scene)
    assert cap.text == "three checked blue squares"
    _, labels = render_scene(scene)
    for k, (x0, x1, y0, y1) in enumerate(boxes):
        assert np.array_equal(labels == k + 1, _box(x0, x1, y0, y1))
    union = np.logical_or.reduce([_box(*b) for b in boxes])
    for word, mask in zip(cap.words, word_masks(scene, labels)):
        assert np.array_equal(mask, union), word.text
        assert word.mask_ids == (1, 2, 3)
    assert [w.role for w in cap.words] == ["numeral", "texture", "colour", "noun"]
    assert cap.words[0].deprel == "nummod" and cap.words[0].head == 3


def test_caption_with_relation_background_and_one():
    left = Group(shape="ring", colour="red", texture="dotted", size="large", instances=(_instance(14, 30),),
                 say_size=True, say_texture=False, say_colour=True, say_one=True)
    right = Group(shape="cross", colour="green", texture="striped", size="small", instances=(_instance(48, 30),),
                  say_size=False, say_texture=True, say_colour=False)
    scene = Scene(groups=(left, right), background=Background("gray", "checks", (0.0, 0.0, 0.55)), say_background=True,
                  relations=("to the left of",))
    cap = caption(scene)
    assert cap.text == "one large red ring to the left of a striped cross on a gray background"
    _, labels = render_scene(scene)
    masks = word_masks(scene, labels)
    by_word = {w.text: (w, m) for w, m in zip(cap.words, masks)}
    assert np.array_equal(by_word["ring"][1], labels == 1) and np.array_equal(by_word["one"][1], labels == 1)
    assert np.array_equal(by_word["cross"][1], labels == 2)
    assert np.array_equal(by_word["background"][1], labels == 0) and np.array_equal(by_word["gray"][1], labels == 0)
    assert by_word["left"][1] is None and by_word["a"][1] is None
    assert by_word["ring"][0].head is None and by_word["cross"][0].deprel == "nmod"


def test_thin_shapes_are_thinner_than_a_latent_cell():
    """Ring, cross and crescent have parts under 4 px (one latent cell) wide: reducing their mask
    to the 16x16 latent grid by majority and back loses a large share of it."""
    for shape in ("ring", "cross", "crescent"):
        _, labels = render_scene(_scene(_group(shape, (_instance(32, 32, radius=0.18 * 64),))))
        mask = labels == 1
        cells = mask.reshape(16, 4, 16, 4).mean(axis=(1, 3)) > 0.5
        back = np.kron(cells, np.ones((4, 4), bool))
        iou = (back & mask).sum() / (back | mask).sum()
        assert iou < 0.7, (shape, iou)


def test_unknown_words_are_refused_with_the_vocabulary():
    with pytest.raises(HarnessError, match="unknown word"):
        check_prompt_words("a striped blue hexagon")
    assert V2.encode("three striped blue circles")[1:5].tolist() == [V2.word_to_id[w] for w in
                                                                     ("three", "striped", "blue", "circles")]


def test_scenes_are_pure_functions_of_stream_and_index():
    a, b = splits.scene_for_index("train", 7), splits.scene_for_index("train", 7)
    assert a == b
    assert np.array_equal(render_scene(a)[0], render_scene(b)[0])
    assert splits.scene_for_index("seen", 7) != a


def _phrases(text: str) -> list[str]:
    """Each group's noun phrase of a caption (relations, "and" and the background removed)."""
    text = re.split(r" on an? ", text)[0]
    return [p.strip() for p in re.split(r"\band\b|to the left of|to the right of|\babove\b|\bbelow\b", text) if p.strip()]


def test_no_training_scene_contains_a_held_out_composition():
    for index in range(600):
        scene = splits.scene_for_index("train", index)
        assert splits.scene_held_out_kinds(scene) == [], index
        for group in scene.groups:
            assert (group.colour, group.shape) not in splits.HELD_OUT_COLOUR_SHAPE
            assert (group.texture, group.shape) not in splits.HELD_OUT_TEXTURE_SHAPE
            assert (group.count, group.shape) not in splits.HELD_OUT_COUNT_SHAPE


def _held_out_phrases(text: str) -> list[str]:
    numbers = {"one": 1, "two": 2, "three": 3, "four": 4}
    found = []
    for phrase in _phrases(text):
        words = phrase.split()
        noun = words[-1]
        shape = next(s for s, p in PLURALS.items() if noun in (s, p))
        count = numbers.get(words[0], 1)
        if any(c in words and s == shape for c, s in splits.HELD_OUT_COLOUR_SHAPE):
            found.append(phrase)
        elif any(t in words and s == shape for t, s in splits.HELD_OUT_TEXTURE_SHAPE):
            found.append(phrase)
        elif (count, shape) in splits.HELD_OUT_COUNT_SHAPE:
            found.append(phrase)
    return found


def test_unseen_test_prompts_speak_a_held_out_composition_never_said_in_training():
    unseen = [caption(splits.scene_for_index("unseen", i)).text for i in eval_indices("test", 100, 0)]
    training = {caption(splits.scene_for_index("train", i)).text for i in range(1500)}
    training_phrases = {p for t in training for p in _phrases(t)}
    for text in unseen:
        held = _held_out_phrases(text)
        assert held, text  # the held-out composition is spoken
        assert text not in training
        assert not (set(held) & training_phrases), text
    assert not any(_held_out_phrases(t) for t in training)
