"""The cohyponym test on known WordNet pairs (WordNet 3.0, offline install)."""

import pytest

from harness.analysis.ontology import TOY_SENSES, are_cohyponyms, classify_pairs, coco_senses, shared_hypernym
from harness.errors import ConfigError


def test_known_pairs():
    # giraffe -> ruminant -> even-toed ungulate -> ungulate <- odd-toed ungulate <- equine <- zebra
    assert shared_hypernym("giraffe.n.01", "zebra.n.01") == ("ungulate.n.01", 3, 3)
    assert are_cohyponyms("giraffe.n.01", "zebra.n.01", max_steps=3)
    assert not are_cohyponyms("giraffe.n.01", "zebra.n.01", max_steps=2)
    assert are_cohyponyms("car.n.01", "truck.n.01", max_steps=1)  # both motor vehicles
    assert are_cohyponyms("cat.n.01", "dog.n.01", max_steps=2)  # feline / canine under carnivore
    assert not are_cohyponyms("car.n.01", "cat.n.01", max_steps=3)


def test_a_hypernym_and_its_hyponym_are_not_cohyponyms():
    assert shared_hypernym("puppy.n.01", "dog.n.01")[0] == "dog.n.01"
    assert not are_cohyponyms("puppy.n.01", "dog.n.01", max_steps=3)
    assert not are_cohyponyms("dog.n.01", "dog.n.01")


def test_toy_ontology():
    # star.n.05 and heart.n.07 are both direct children of plane_figure.n.01: siblings
    siblings = classify_pairs(TOY_SENSES, max_steps=1)
    assert [pair for pair, value in siblings.items() if value] == [("heart", "star")]
    default = classify_pairs(TOY_SENSES, max_steps=3)
    assert len(default) == 10
    assert {pair for pair, value in default.items() if not value} == {
        ("circle", "square"), ("heart", "square"), ("square", "star")}


def test_coco_senses_are_the_objects():
    senses = coco_senses()
    assert len(senses) == 80
    assert senses["mouse"] == "mouse.n.04" and senses["kite"] == "kite.n.03"
    with pytest.raises(ConfigError):
        are_cohyponyms("dog.n.01", "cat.n.01", max_steps=0)
