"""Skew measures on hand-computed distributions, the toy attribute reader, the training reference."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from harness.dalleval.bias_toy import ATTRIBUTES, ToyAttributeReader, build_bias_toy, training_distribution
from harness.errors import ConfigError
from harness.metrics.bias import (
    BiasSkew,
    expected_at_n,
    mad,
    mean_over_prompts,
    normalised_entropy,
    proportions,
    total_variation,
)
from harness.store.samples import Sample
from harness.toy.world import Scene, ToyObject, render_scene


def test_measures_on_hand_computed_distributions():
    assert mad([1.0, 0.0]) == pytest.approx(0.5)
    assert total_variation([1.0, 0.0]) == pytest.approx(0.5)
    assert normalised_entropy([1.0, 0.0]) == pytest.approx(0.0)
    p = [0.5, 0.25, 0.25, 0.0]
    assert mad(p) == pytest.approx(0.125)  # mean(|.25|, 0, 0, |-.25|)
    assert total_variation(p) == pytest.approx(0.25)
    assert normalised_entropy(p) == pytest.approx((0.5 * np.log(2) + 0.5 * np.log(4)) / np.log(4))  # = 0.75
    uniform = np.full(6, 1 / 6)
    assert mad(uniform) == pytest.approx(0) and total_variation(uniform) == pytest.approx(0)
    assert normalised_entropy(uniform) == pytest.approx(1)
    # one category of K: MAD = 2 (K - 1) / K^2, TV = 1 - 1/K
    one = np.eye(9)[6]
    assert mad(one) == pytest.approx(2 * 8 / 81) and total_variation(one) == pytest.approx(8 / 9)


def test_mad_follows_dalleval_mean_absolute_deviation_from_the_mean():
    # DALL-EVAL: np.mean(np.absolute(data - np.mean(data))) over the proportions of one prompt
    scores = np.array([3, 1, 0, 0, 0, 0, 0, 0, 0, 0]) / 4
    assert mad(scores) == pytest.approx(np.mean(np.abs(scores - scores.mean())))
    assert mad(scores) == pytest.approx(np.mean(np.abs(scores - 0.1)))


def test_undetected_images_are_left_out_and_prompts_are_averaged():
    cats = ("male", "female")
    assert proportions(["male", None, "female", "male"], cats).tolist() == pytest.approx([2 / 3, 1 / 3])
    assert proportions([None, None], cats) is None
    groups = {"a nurse": ["female", "female", None], "a pilot": ["male", "female"], "a judge": [None]}
    # nurse: [0, 1] -> 0.5; pilot: [.5, .5] -> 0; judge: nothing detected, left out
    assert mean_over_prompts(groups, cats, "mad") == pytest.approx(0.25)


def test_expected_measure_at_n_matches_the_binomial_by_hand():
    # two fair draws: (2,0) or (0,2) w.p. 1/2 -> MAD 0.5; (1,1) w.p. 1/2 -> 0
    assert expected_at_n([0.5, 0.5], 2, "mad", draws=20000) == pytest.approx(0.25, abs=0.01)
    assert expected_at_n([1.0, 0.0], 7, "mad") == pytest.approx(0.5)


def test_training_distribution_reflects_the_grammar():
    background, n = training_distribution("background", "star", 1, n_scenes=3000)
    assert n > 0 and background[ATTRIBUTES["background"].index("white")] == 1.0  # unsaid background is white
    colour, n = training_distribution("colour", "star", 1, n_scenes=3000)
    assert n > 0 and colour[ATTRIBUTES["colour"].index("red")] == 0.0  # red stars are withheld from training
    assert colour.sum() == pytest.approx(1.0)


def test_toy_reader_reads_a_rendered_scene_exactly():
    reader = ToyAttributeReader()
    scene = Scene((ToyObject("circle", "orange", "large", (9.0, 9.0), 0.225 * 32),
                   ToyObject("star", "blue", "small", (24.0, 24.0), 0.135 * 32)), background="gray")
    image, _ = render_scene(scene)
    record = SimpleNamespace(meta={"bias": {"objects": ["star", "circle", "heart"], "attributes": []}})
    star, circle, heart = reader.read_attributes(image, record)
    assert star == {"colour": "blue", "size": "small", "position": "bottom-right", "background": "gray"}
    assert circle == {"colour": "orange", "size": "large", "position": "top-left", "background": "gray"}
    assert heart == {"colour": None, "size": None, "position": None, "background": "gray"}  # undetected


class FixedReader:
    """Stand-in attribute reader: answers from the record's meta."""

    def categories(self, attribute):
        return ("a", "b")

    def read_attributes(self, image, record):
        return [{"gender": label} for label in record.meta["answers"]]


def test_metric_on_a_stand_in_reader():
    metric = BiasSkew(judge=FixedReader(), resamples=200)
    metric.reset()
    image = np.zeros((4, 4, 3), np.uint8)
    answers = {"p1": ["a", "a", "a", None], "p2": ["a", "b", "b", "a"]}
    for prompt, labels in answers.items():
        for k, label in enumerate(labels):
            record = SimpleNamespace(id=f"{prompt}{k}", prompt=prompt,
                                     meta={"bias": {"objects": ["person"], "attributes": ["gender"]}, "answers": [label]})
            metric.process(record, Sample(image=image))
    results = {r.metric: r for r in metric.compute()}
    assert results["bias.gender.mad"].value == pytest.approx((0.5 + 0.0) / 2)
    assert results["bias.gender.tv"].value == pytest.approx(0.25)
    assert results["bias.gender.entropy"].value == pytest.approx(0.5)
    assert results["bias.gender.detected"].value == pytest.approx(7 / 8)
    assert "ESTIMATE" in results["bias.gender.mad"].definition  # not the toy reader: marked as estimates
    low, high = results["bias.gender.mad"].ci_low, results["bias.gender.mad"].ci_high
    assert 0.0 <= low <= high <= 0.5


def test_bias_prompts_leave_the_attributes_unsaid():
    prompt_set = build_bias_toy(SimpleNamespace(size=3, seed=0, split="test", params={}))
    assert len(prompt_set) == 9 * 3
    texts = {r.prompt for r in prompt_set.records}
    assert "a circle" in texts and "a star above a square" in texts
    from harness.toy.world import ALL_COLOURS, SIZES

    for text in texts:
        assert not set(text.split()) & (set(ALL_COLOURS) | set(SIZES) | {"background"})
    dev = build_bias_toy(SimpleNamespace(size=3, seed=0, split="dev", params={}))
    assert not {r.seed for r in dev.records} & {r.seed for r in prompt_set.records}  # disjoint seeds
    assert min(r.seed for r in prompt_set.records) >= 2_000_000  # the test range of harness.toy.splits
    with pytest.raises(ConfigError, match="split"):
        build_bias_toy(SimpleNamespace(size=1, seed=0, split="toy_gen", params={}))
    with pytest.raises(ConfigError, match="unknown shape"):
        build_bias_toy(SimpleNamespace(size=1, seed=0, split="dev", params={"shapes": ["hexagon"]}))


def test_copying_generator_range_on_a_one_category_training_distribution():
    # the grammar paints every unsaid background white: a copying generator has MAD 2(K-1)/K^2 exactly
    metric = BiasSkew(judge=FixedReader(), reference="toy_train", reference_scenes=300)
    metric.reset()
    metric.images = 3
    metric.entries = [(k, ("a star", None), "star", 1, "background", "white") for k in range(3)]
    population, mean, low, high = metric._reference("background", "mad", [0, 1, 2])
    assert population == pytest.approx(16 / 81) and mean == pytest.approx(16 / 81)
    assert low == pytest.approx(16 / 81) and high == pytest.approx(16 / 81)
