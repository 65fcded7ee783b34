"""Skill judges on rendered toy scenes with known answers, the judge's rules, intervals, prompt sets."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from harness.dalleval.judge import SeenObject, check_tags, judge_skill, relation_holds
from harness.dalleval.skills_toy import TOY_SKILLS, build_skills_toy, skill_record
from harness.dalleval.toy_reader import ToySceneReader, size_thresholds
from harness.errors import ConfigError, DataError
from harness.metrics.skills import SkillAccuracy, binomial_ci
from harness.store.samples import Sample
from harness.toy.annotator import parse_caption
from harness.toy.splits import WITHHELD_PAIRS, scene_for_index
from harness.toy.world import IMAGE_SIZE, RELATIONS, _relation_holds, render_scene


@pytest.fixture(scope="module")
def reader():
    return ToySceneReader()


def _tags(scene, relation=None):
    include = [{"class": o.shape, "count": 1, "color": o.colour, "size": o.size} for o in scene.objects]
    if relation is not None:
        include[0]["position"] = [relation, 1]
    return include


def _true_relation(scene):
    held = [r for r in RELATIONS[1:] if _relation_holds(r, scene.objects[0], scene.objects[1], IMAGE_SIZE)]
    return held[0] if held else None


def _mirror(scene, axis):
    def flip(obj):
        x, y = obj.centre
        return replace(obj, centre=(IMAGE_SIZE - x, y) if axis == "x" else (x, IMAGE_SIZE - y))

    return replace(scene, objects=tuple(flip(o) for o in scene.objects))


MIRROR_AXIS = {"to the left of": "x", "to the right of": "x", "above": "y", "below": "y"}


@pytest.mark.parametrize("index", range(6))
def test_a_rendered_scene_satisfies_its_own_caption_in_every_skill(reader, index):
    scene = scene_for_index("toy_gen", 500_000 + index, n_objects=2)
    seen = reader.read(render_scene(scene)[0]).objects
    include = _tags(scene, _true_relation(scene))
    assert judge_skill("object", include, seen)
    assert judge_skill("colour_binding", include, seen)
    assert judge_skill("size", include, seen)
    if include[0].get("position"):
        assert judge_skill("spatial_relation", include, seen)


def test_reader_reads_exact_attributes_of_renders(reader):
    for index in range(8):
        scene = scene_for_index("toy_unreal", 600_000 + index, n_objects=2)
        reading = reader.read(render_scene(scene)[0])
        got = sorted((o.cls, o.colour, o.size) for o in reading.objects)
        assert got == sorted((o.shape, o.colour, o.size) for o in scene.objects)
        assert reading.background == scene.background


def _distinct_pairs(split, start, count):
    """``count`` two-object scenes whose objects differ in both colour and shape."""
    out = []
    index = start
    while len(out) < count:
        scene = scene_for_index(split, index, n_objects=2)
        a, b = scene.objects
        if a.colour != b.colour and a.shape != b.shape:
            out.append((index, scene))
        index += 1
    return out


def test_swapped_colours_fail_colour_binding_but_not_object(reader):
    for _, scene in _distinct_pairs("toy_gen", 510_000, 6):
        a, b = scene.objects
        swapped = replace(scene, objects=(replace(a, colour=b.colour), replace(b, colour=a.colour)))
        seen = reader.read(render_scene(swapped)[0]).objects
        include = _tags(scene)  # the original prompt's tags
        assert judge_skill("object", include, seen)
        assert not judge_skill("colour_binding", include, seen)


def test_mirrored_positions_fail_the_relation(reader):
    tested = 0
    for index in range(40):
        scene = scene_for_index("toy_gen", 520_000 + index, n_objects=2)
        relation = _true_relation(scene)
        if relation is None:
            continue
        include = _tags(scene, relation)
        assert judge_skill("spatial_relation", include, reader.read(render_scene(scene)[0]).objects)
        mirrored = _mirror(scene, MIRROR_AXIS[relation])
        assert not judge_skill("spatial_relation", include, reader.read(render_scene(mirrored)[0]).objects)
        tested += 1
        if tested == 5:
            break
    assert tested == 5


def test_the_other_size_fails(reader):
    for index in range(6):
        scene = scene_for_index("toy_gen", 530_000 + index, n_objects=1)
        obj = scene.objects[0]
        seen = reader.read(render_scene(scene)[0]).objects
        other = "large" if obj.size == "small" else "small"
        assert judge_skill("size", [{"class": obj.shape, "color": obj.colour, "size": obj.size}], seen)
        assert not judge_skill("size", [{"class": obj.shape, "color": obj.colour, "size": other}], seen)


def test_size_thresholds_lie_between_the_rendered_areas():
    thresholds = size_thresholds()
    # hand check for the square: half-side 0.78 r; small r = 0.135*32, large r = 0.225*32
    small_side, large_side = 2 * 0.78 * 0.135 * 32, 2 * 0.78 * 0.225 * 32
    assert small_side**2 < thresholds["square"] < large_side**2


def test_judge_rules_on_hand_made_objects():
    red_cat = SeenObject("cat", (0.2, 0.5), "red")
    blue_dog = SeenObject("dog", (0.8, 0.5), "blue")
    blue_cat = SeenObject("cat", (0.5, 0.2), "blue")
    cat_left_of_dog = [{"class": "cat", "color": "red", "position": ["left of", 1]}, {"class": "dog"}]
    assert judge_skill("spatial_relation", cat_left_of_dog, [red_cat, blue_dog])
    assert not judge_skill("spatial_relation", cat_left_of_dog, [blue_cat, blue_dog])  # the red cat is missing
    assert not judge_skill("spatial_relation", [{"class": "cat", "position": ["right of", 1]}, {"class": "dog"}],
                           [red_cat, blue_dog])
    assert judge_skill("counting", [{"class": "cat", "count": 2}], [red_cat, blue_cat, blue_dog])
    assert not judge_skill("counting", [{"class": "cat", "count": 1}], [red_cat, blue_cat])
    assert judge_skill("object", [{"class": "cat", "count": 1}], [red_cat, blue_cat])
    assert not judge_skill("colour_binding", [{"class": "cat", "color": "red", "count": 2}], [red_cat, blue_cat])
    assert relation_holds("above", (0.5, 0.1), (0.5, 0.9)) and not relation_holds("below", (0.5, 0.1), (0.5, 0.9))
    with pytest.raises(DataError, match="unknown skill"):
        check_tags("juggling", [{"class": "cat"}])
    with pytest.raises(DataError, match="spatial relation"):
        check_tags("spatial_relation", [{"class": "cat", "position": ["near", 0]}])


def test_binomial_intervals_match_their_closed_forms():
    # Wilson score interval, written out independently of scipy
    k, n, z = 7, 20, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = binomial_ci(k, n, method="wilson")
    assert low == pytest.approx(centre - half, abs=1e-9) and high == pytest.approx(centre + half, abs=1e-9)
    # Clopper-Pearson with no success: [0, 1 - (alpha/2)^(1/n)]
    low, high = binomial_ci(0, 10, method="clopper_pearson")
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)
    low, high = binomial_ci(0, 10)
    assert low >= 0.0
    assert binomial_ci(0, 0) == (None, None)
    with pytest.raises(ConfigError):
        binomial_ci(1, 2, method="wald")


def _cfg(size, seed, params=None, split="test"):
    from types import SimpleNamespace

    return SimpleNamespace(size=size, seed=seed, split=split, params=params or {})


def test_skill_prompts_carry_tags_that_match_their_text():
    prompt_set = build_skills_toy(_cfg(4, 0), "toy_unreal")
    dev = build_skills_toy(_cfg(4, 0, split="dev"), "toy_unreal")
    assert not {r.meta["scene"]["index"] for r in dev.records} & {r.meta["scene"]["index"] for r in prompt_set.records}
    smaller = build_skills_toy(_cfg(2, 0), "toy_unreal")  # a prefix of the larger set, skill by skill
    assert [r.id for r in smaller.records] == [r.id for r in prompt_set.records[:8]]
    assert len(prompt_set) == 4 * len(TOY_SKILLS)
    assert {r.meta["skill"] for r in prompt_set.records[:4]} == set(TOY_SKILLS)  # interleaved
    for record in prompt_set.records:
        parsed = parse_caption(record.prompt)
        include = record.meta["include"]
        assert [(o.colour, o.shape) for o in parsed.objects] == [(i["color"], i["class"]) for i in include]
        assert any(p in WITHHELD_PAIRS for p in [(o.colour, o.shape) for o in parsed.objects])
        skill = record.meta["skill"]
        if skill == "colour_binding":
            assert parsed.relations == ("and",)
        if skill == "spatial_relation":
            assert parsed.relations[0] == include[0]["position"][0]
        if skill == "size":
            assert parsed.objects[0].size == include[0]["size"]
        else:
            assert all(o.size is None for o in parsed.objects)


def test_counting_has_no_toy_prompt_set():
    with pytest.raises(ConfigError, match="no numerals"):
        build_skills_toy(_cfg(2, 0, {"skills": ["counting"]}), "toy_gen")


def test_metric_scores_renders_of_their_own_prompts_as_passing():
    from harness.toy.world import caption

    metric = SkillAccuracy(not_applicable={"counting": "no numerals"})
    metric.reset()
    for k, (index, scene) in enumerate(_distinct_pairs("toy_gen", 540_000, 4)):
        record = skill_record("toy_gen", "colour_binding", index, k)
        assert caption(replace(scene, objects=tuple(replace(o, say_colour=True, say_size=False) for o in scene.objects),
                               relations=("and",), say_background=False)).text == record.prompt
        # the colour word's heat map sits exactly on its own object
        image, labels = render_scene(scene)
        maps = {f"heatmap:{o.colour}": (labels == i + 1).astype(np.float32) for i, o in enumerate(scene.objects)}
        values = metric.process(record, Sample(image=image, arrays=maps, meta={"words": []}))
        assert values[0] == {"metric": "skill.colour_binding", "value": 1.0, "item": record.prompt}
    results = {r.metric: r for r in metric.compute()}
    assert results["skill.colour_binding"].value == 1.0 and results["skill.colour_binding"].n == 4
    assert 0.0 <= results["skill.colour_binding"].ci_low < 1.0
    assert math.isnan(results["skill.counting"].value) and results["skill.counting"].definition == "no numerals"
    assert results["binding_attention.passed"].value == pytest.approx(1.0)
    assert results["binding_attention.passed"].n == 8  # two colour words per prompt


def test_relation_given_objects_counts_only_images_showing_both_objects(reader):
    metric = SkillAccuracy()
    metric.reset()
    scenes = []
    for index in range(40):
        scene = scene_for_index("toy_gen", 550_000 + index, n_objects=2)
        relation = _true_relation(scene)
        a, b = scene.objects
        if relation is not None and (a.colour, a.shape) != (b.colour, b.shape):
            scenes.append((scene, relation))
        if len(scenes) == 3:
            break
    from types import SimpleNamespace

    for k, (scene, relation) in enumerate(scenes):
        include = _tags(scene, relation)
        record = SimpleNamespace(id=f"r{k}", prompt=f"p{k}", meta={"skill": "spatial_relation", "include": include})
        image = render_scene(scene if k < 2 else _mirror(scene, MIRROR_AXIS[relation]))[0]
        metric.process(record, Sample(image=image))
    # one more whose second object is missing from the image: it fails, and is not "given objects"
    lone = replace(scenes[0][0], objects=scenes[0][0].objects[:1], relations=())
    include = _tags(scenes[0][0], scenes[0][1])
    metric.process(SimpleNamespace(id="lone", prompt="lone", meta={"skill": "spatial_relation", "include": include}),
                   Sample(image=render_scene(lone)[0]))
    results = {r.metric: r for r in metric.compute()}
    assert results["skill.spatial_relation"].value == pytest.approx(2 / 4)
    assert results["skill.spatial_relation.given_objects"].value == pytest.approx(2 / 3)
    assert results["skill.spatial_relation.given_objects"].n == 3


def test_a_run_without_skill_tags_is_not_silent():
    from harness.errors import HarnessError

    metric = SkillAccuracy()
    metric.reset()
    with pytest.raises(HarnessError, match="nothing to score"):
        metric.compute()
