"""The toy world's renderer, captions and splits: exact answers and invariants."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.toy.splits import SPLITS, TRAIN_PAIRS, WITHHELD_PAIRS, scene_for_index
from harness.toy.world import (
    ALL_COLOURS,
    OBJECT_COLOURS,
    SHAPES,
    VOCABULARY,
    Scene,
    ToyObject,
    caption,
    check_prompt_words,
    render_scene,
    word_masks,
)

N = 300


def _scenes(split: str, n: int = N):
    return [scene_for_index(split, i) for i in range(n)]


def test_same_index_same_scene_image_and_caption():
    for i in range(20):
        a, b = scene_for_index("train", i), scene_for_index("train", i)
        assert a == b
        (ia, la), (ib, lb) = render_scene(a), render_scene(b)
        assert np.array_equal(ia, ib) and np.array_equal(la, lb)
        assert caption(a).text == caption(b).text


def test_splits_draw_different_scenes():
    texts = {split: [caption(s).text for s in _scenes(split, 50)] for split in SPLITS}
    assert texts["train"] != texts["toy_gen"]
    assert scene_for_index("train", 0) != scene_for_index("toy_gen", 0)


def test_labels_partition_the_image_and_colour_it():
    for scene in _scenes("train", 200):
        image, labels = render_scene(scene)
        assert image.shape == (scene.image_size, scene.image_size, 3) and image.dtype == np.uint8
        assert labels.max() <= len(scene.objects)
        # every object is visible, and every pixel shows the colour of its owner
        for k, obj in enumerate(scene.objects, start=1):
            assert (labels == k).sum() > 0
            assert (image[labels == k] == OBJECT_COLOURS[obj.colour]).all()
        assert (image[labels == 0] == ALL_COLOURS[scene.background]).all()
        assert (labels == 0).sum() > 0


def test_circle_area_matches_geometry():
    circle = ToyObject("circle", "red", "large", centre=(16.0, 16.0), radius=7.0)
    _, labels = render_scene(Scene(objects=(circle,)))
    assert abs((labels == 1).sum() - np.pi * 7.0**2) < 0.05 * np.pi * 7.0**2


def test_later_objects_occlude_earlier_ones():
    below = ToyObject("square", "red", "large", centre=(14.0, 16.0), radius=7.0)
    above = ToyObject("circle", "blue", "large", centre=(18.0, 16.0), radius=7.0)
    image, labels = render_scene(Scene(objects=(below, above)))
    assert (labels == 2).sum() == pytest.approx(np.pi * 49, rel=0.05)  # the top object is whole
    assert (labels == 1).sum() < (2 * 0.78 * 7) ** 2  # the bottom one lost its covered part
    assert (image[labels == 2] == OBJECT_COLOURS["blue"]).all()


def test_caption_words_map_to_the_right_masks():
    for scene in _scenes("train"):
        image, labels = render_scene(scene)
        cap = caption(scene)
        assert cap.text.split() == [w.text for w in cap.words]
        masks = word_masks(scene, labels)
        for word, mask in zip(cap.words, masks):
            assert word.text in VOCABULARY
            if word.role == "noun":
                assert word.text == scene.objects[word.mask_id - 1].shape
            if word.role in ("colour", "bg_colour"):
                assert (image[mask] == ALL_COLOURS[word.text]).all()
            if word.role in ("bg_colour", "bg_noun"):
                assert word.mask_id == 0
            if word.role in ("det", "conj", "prep"):
                assert mask is None
            else:
                assert mask is not None and mask.any()
        # each object is named exactly once by a noun
        nouns = [w.mask_id for w in cap.words if w.role == "noun"]
        assert sorted(nouns) == list(range(1, len(scene.objects) + 1))


def test_dependency_arcs_are_a_tree_rooted_at_the_first_noun():
    for scene in _scenes("train", 100):
        words = caption(scene).words
        roots = [i for i, w in enumerate(words) if w.head is None]
        assert len(roots) == 1 and words[roots[0]].role == "noun"
        for w in words:
            if w.deprel in ("amod", "det") and w.role != "det" or w.role in ("size", "colour"):
                assert words[w.head].role in ("noun", "bg_noun")
            if w.head is not None:
                assert 0 <= w.head < len(words)
        # following heads from any word reaches the root without cycles
        for start in range(len(words)):
            seen, i = set(), start
            while words[i].head is not None:
                assert i not in seen
                seen.add(i)
                i = words[i].head
            assert i == roots[0]


def test_spoken_spatial_relations_are_true():
    for scene in _scenes("train"):
        for i, relation in enumerate(scene.relations):
            (x1, y1), (x2, y2) = scene.objects[i].centre, scene.objects[i + 1].centre
            expected = {"to the left of": x1 < x2, "to the right of": x1 > x2, "above": y1 < y2,
                        "below": y1 > y2, "and": True}[relation]
            assert expected, (relation, scene)


def test_withheld_pairs_appear_only_in_toy_unreal():
    pairs = lambda s: {(o.colour, o.shape) for o in s.objects}  # noqa: E731
    assert len(TRAIN_PAIRS) + len(WITHHELD_PAIRS) == len(OBJECT_COLOURS) * len(SHAPES)
    for split in ("train", "toy_gen"):
        assert all(not pairs(s) & set(WITHHELD_PAIRS) for s in _scenes(split))
    assert all(pairs(s) & set(WITHHELD_PAIRS) for s in _scenes("toy_unreal"))


def test_evaluation_splits_always_name_colours():
    for split in ("toy_gen", "toy_unreal"):
        for scene in _scenes(split, 100):
            assert len(caption(scene).word_indices("colour")) == len(scene.objects)


def test_unknown_word_error_lists_the_vocabulary():
    with pytest.raises(HarnessError) as error:
        check_prompt_words("a red dog")
    assert "dog" in str(error.value) and "circle" in str(error.value)
    assert check_prompt_words("A red circle") == ["a", "red", "circle"]
