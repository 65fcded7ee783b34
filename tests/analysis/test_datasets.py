"""Prompt sets of the entanglement analyses: balance, determinism, splits, one-word swaps."""

from collections import Counter

import pytest
from omegaconf import OmegaConf

from harness.analysis.datasets import (
    build_coco_adjective_swaps,
    build_coco_cohyponym_pairs,
    build_toy_adjective_swaps,
    build_toy_cohyponym_pairs,
)
from harness.errors import ConfigError
from harness.toy.world import check_prompt_words


def cfg(**overrides):
    base = {"name": "x", "split": "test", "size": 20, "seed": 0, "params": {}, "path": None}
    return OmegaConf.create({**base, **overrides})


def test_toy_cohyponym_pairs_are_balanced_deterministic_and_split():
    test = build_toy_cohyponym_pairs(cfg())
    assert Counter(r.meta["cohyponym"] for r in test.records) == {True: 10, False: 10}
    assert [r.prompt for r in test.records] == [r.prompt for r in build_toy_cohyponym_pairs(cfg()).records]
    dev = build_toy_cohyponym_pairs(cfg(split="dev"))
    assert not {r.seed for r in dev.records} & {r.seed for r in test.records}
    for record in test.records:
        words = check_prompt_words(record.prompt)  # in the toy vocabulary
        assert words[2] == record.meta["nouns"][0] and words[-1] == record.meta["nouns"][1]
        assert record.meta["objects"] == [[None, record.meta["nouns"][0]], [None, record.meta["nouns"][1]]]
    with pytest.raises(ConfigError):
        build_toy_cohyponym_pairs(cfg(split="train"))


def test_coco_cohyponym_pairs_need_no_files():
    pairs = build_coco_cohyponym_pairs(cfg(size=11, params={"exclude": ["person"]}))
    assert Counter(r.meta["cohyponym"] for r in pairs.records) == {True: 6, False: 5}
    assert all(r.prompt.startswith(("a ", "an ")) and " and " in r.prompt for r in pairs.records)
    assert not any("person" in r.meta["nouns"] for r in pairs.records)


def differing_words(first, second):
    return [(a, b) for a, b in zip(first.split(), second.split()) if a != b]


def test_toy_adjective_swaps_change_one_word_each():
    swaps = build_toy_adjective_swaps(cfg(size=12))
    assert len(swaps) == 12
    for record in swaps.records:
        variants, swap = record.meta["variants"], record.meta["swap"]
        assert variants["same"] == record.prompt
        changed = [pair for pair in differing_words(record.prompt, variants["adjective"]) if pair[0] not in ("a", "an")]
        assert changed == [(swap["word"], swap["to"])]
        unrelated = [p for p in differing_words(record.prompt, variants["unrelated"]) if p[0] not in ("a", "an")]
        assert unrelated == [(swap["unrelated"]["word"], swap["unrelated"]["to"])]
        assert swap["role"] in ("colour", "size")
        for text in variants.values():
            check_prompt_words(text)


def test_coco_adjective_templates_are_the_papers():
    swaps = build_coco_adjective_swaps(cfg())
    prompts = {(r.prompt, r.meta["variants"]["adjective"]) for r in swaps.records}
    assert ("a rusty shovel sitting in a clean shed", "a wooden shovel sitting in a clean shed") in prompts
    assert ("a blue car driving down the street", "a red car driving down the street") in prompts
    assert len(swaps) == 4


def test_published_reference_rows_transcribe_the_notebook_and_the_paper():
    import pandas as pd

    from harness import REPO_ROOT

    notebook = pd.read_csv(REPO_ROOT / "baselines" / "daam_syntax_notebook.csv")
    assert sorted(notebook["item"].unique()) == sorted(
        ["punct", "nmod:of", "compound", "nsubj", "case", "det", "conj:and", "acl", "obj", "amod"])
    amod = notebook[notebook["item"] == "amod"].set_index("metric")["value"]
    assert (amod["daam_syntax.miou"], amod["daam_syntax.miod"], amod["daam_syntax.mioh"]) == (0.1469, 0.4506, 0.1905)
    assert (notebook["experiment"] == "daam_syntax_coco").all() and notebook["source"].str.startswith("paper:").all()
    paper = pd.read_csv(REPO_ROOT / "baselines" / "daam_entanglement_paper.csv").set_index(["metric", "item"])
    assert paper.loc[("cohyponym_entanglement.accuracy", "cohyponym"), "value"] == 0.52
    assert paper.loc[("cohyponym_entanglement.accuracy", "non_cohyponym"), "value"] == 0.61


def test_coco_captions_with_a_swappable_adjective(tmp_path):
    import json

    captions = [
        {"id": 1, "image_id": 10, "caption": "A red bus parked next to a white car."},
        {"id": 2, "image_id": 11, "caption": "Two dogs play in the park."},  # no amod: skipped
        {"id": 3, "image_id": 12, "caption": "A wooden bench in a green field"},
    ]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"annotations": captions}))
    swaps = build_coco_adjective_swaps(cfg(path=str(path), size=5))
    captioned = [r for r in swaps.records if r.meta["source"] == "coco caption"]
    assert sorted(r.meta["caption_id"] for r in captioned) == [1, 3]
    for record in captioned:
        swap = record.meta["swap"]
        assert differing_words(record.prompt, record.meta["variants"]["adjective"]) == [(swap["word"], swap["to"])]
        unrelated = swap["unrelated"]
        assert differing_words(record.prompt, record.meta["variants"]["unrelated"]) == [(unrelated["word"], unrelated["to"])]
        assert swap["to"] != swap["word"]
    bus = next(r for r in captioned if r.meta["caption_id"] == 1)
    assert (bus.meta["swap"]["word"], bus.meta["swap"]["noun"], bus.meta["swap"]["unrelated"]["word"]) == ("red", "bus", "white")
