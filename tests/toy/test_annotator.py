"""The toy annotator: caption parsing, segmentation of rendered scenes against exact masks."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.prompts import PromptRecord
from harness.errors import DataError, HarnessError
from harness.store.samples import Sample
from harness.toy.annotator import PromptObject, ToyAnnotator, annotator_miou, parse_caption
from harness.toy.splits import scene_for_index
from harness.toy.world import ALL_COLOURS, Scene, ToyObject, caption, render_scene


def _iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def test_parse_caption_reads_objects_relations_and_background():
    parsed = parse_caption("a small red circle to the left of an orange star and a square on a gray background")
    assert parsed.objects == (PromptObject("circle", "red", "small"), PromptObject("star", "orange", None),
                              PromptObject("square", None, None))
    assert parsed.relations == ("to the left of", "and")
    assert parsed.background == "gray" and parsed.names_background


def test_parse_caption_round_trips_every_grammar_choice():
    for i in range(200):
        scene = scene_for_index("toy_gen", i)
        parsed = parse_caption(caption(scene).text)
        assert [o.shape for o in parsed.objects] == [o.shape for o in scene.objects]
        assert [o.colour for o in parsed.objects] == [o.colour if o.say_colour else None for o in scene.objects]
        assert parsed.relations == scene.relations
        assert parsed.names_background == scene.say_background


def test_bad_prompts_get_clear_errors():
    with pytest.raises(HarnessError, match="Toy vocabulary"):
        parse_caption("a red dog")
    with pytest.raises(DataError, match="toy grammar"):
        parse_caption("red circle")
    with pytest.raises(DataError, match="toy grammar"):
        parse_caption("a red circle on a background")


def _scene(*objects, relations=(), background="white", say_background=False):
    return Scene(tuple(objects), background, say_background, tuple(relations))


def test_clean_renders_are_segmented_exactly_enough():
    annotator = ToyAnnotator()
    for i in range(30):
        scene = scene_for_index("toy_gen", i)
        image, truth = render_scene(scene)
        labels = annotator.annotate(image, caption(scene).text).labels
        for k in range(len(scene.objects)):
            assert _iou(labels == k + 1, truth == k + 1) >= 0.9, (i, caption(scene).text)


def test_relation_decides_between_identical_colours_without_the_shape_judge():
    left = ToyObject("circle", "red", "large", (8.0, 16.0), 7.0)
    right = ToyObject("square", "red", "large", (24.0, 16.0), 7.0)
    for relation, objects, first_is_left in (("to the left of", (left, right), True),
                                             ("to the right of", (right, left), False)):
        scene = _scene(*objects, relations=(relation,))
        image, truth = render_scene(scene)
        annotation = ToyAnnotator(shape_judge=None).annotate(image, caption(scene).text)
        assert _iou(annotation.labels == 1, truth == 1) > 0.9
        assert _iou(annotation.labels == 2, truth == 2) > 0.9
        left_half = annotation.labels[:, :16]
        assert ((left_half == 1).sum() > (left_half == 2).sum()) == first_is_left


def test_word_masks_follow_the_caption_and_absent_objects_have_none():
    obj = ToyObject("star", "blue", "large", (16.0, 16.0), 7.0)
    scene = _scene(obj, background="yellow", say_background=True)
    image, truth = render_scene(scene)
    text = caption(scene).text
    record = PromptRecord(id="r", prompt=text, seed=0)
    masks = ToyAnnotator().masks(record, Sample(image=image))
    assert set(masks) == {"large", "blue", "star", "yellow", "background"}
    assert np.array_equal(masks["star"], masks["blue"])
    assert _iou(masks["star"], truth == 1) > 0.9
    assert np.array_equal(masks["background"], ~masks["star"])
    # The same prompt over an empty background: the star is absent, only the background is found.
    empty = np.broadcast_to(np.array(ALL_COLOURS["yellow"], np.uint8), image.shape).copy()
    assert set(ToyAnnotator().masks(record, Sample(image=empty))) == {"yellow", "background"}


def test_degraded_renders_meet_the_bar():
    result = annotator_miou(n=60, split="toy_gen", seed=1, degraded=True)
    assert result["n_objects"] > 60
    assert result["annotator_miou"] >= 0.90
    assert result["background_miou"] >= 0.95


def test_image_must_be_rgb():
    with pytest.raises(DataError, match="RGB"):
        ToyAnnotator().annotate(np.zeros((32, 32), np.uint8), "a red circle")
