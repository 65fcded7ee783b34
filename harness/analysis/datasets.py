"""Prompt sets of the entanglement analyses (DAAM, Tang et al., ACL 2023, section 6).

- ``toy_cohyponym_pairs`` / ``coco_cohyponym_pairs``: prompts "a X and a Y" over the toy
  world's five shapes / the 80 COCO classes, balanced between cohyponym and non-cohyponym pairs
  (:mod:`harness.analysis.ontology`: WordNet, declared senses, ``params.max_steps``). Toy prompts
  name a colour for each shape ("a red circle and a blue star"; toy_gen always names colours, so
  the prompts stay in the model's training distribution), and ``meta["objects"]`` asks for the
  shapes only (the judge checks that both shapes are there, in any colour).
- ``toy_adjective_swaps`` / ``coco_adjective_swaps``: prompts with an adjective on an object and
  their variants, generated with the same seed: ``adjective`` (that adjective swapped), ``same``
  (the prompt itself: zero change by determinism) and ``unrelated`` (one word unrelated to the
  object swapped). Toy: scenes of two or three objects from the toy_gen world; the target is
  object 0's colour or size adjective (seeded choice among those the caption says; a colour is
  swapped to one that keeps the (colour, shape) pair in the training distribution and differs
  from the other objects' and the background's colours), the unrelated word is object 1's
  colour. COCO: the paper's two templates, plus (with ``dataset.path`` = COCO captions) a seeded
  sample of captions with an ``amod`` whose adjective is in a swap class (colours, materials,
  sizes); their unrelated word is the adjective of another noun when there is one.

Toy splits: ``dataset.split`` = ``dev`` | ``test`` (disjoint index ranges of
``harness.toy.splits.eval_indices``); ``dataset.seed`` draws which indices of the split are used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import ConfigError

DEFAULT_SIZE = 40


def _params(dataset_cfg: Any, known: dict[str, Any], name: str) -> dict[str, Any]:
    params = dict(dataset_cfg.params or {})
    unknown = set(params) - set(known)
    if unknown:
        raise ConfigError(f"dataset.params {sorted(unknown)} unknown for {name}; known: {', '.join(sorted(known))}.")
    return {**known, **params}


def _size(dataset_cfg: Any) -> int:
    size = DEFAULT_SIZE if dataset_cfg.size is None else int(dataset_cfg.size)
    if size < 1:
        raise ConfigError(f"dataset.size must be >= 1, got {size}.")
    return size


def split_indices(split: str, size: int, seed: int) -> list[int]:
    """Indices of a ``size``-sample of toy evaluation split ``split`` (dev | test) drawn with ``seed``."""
    from harness.errors import HarnessError
    from harness.toy.splits import eval_indices

    try:
        return eval_indices(split, size, seed)
    except HarnessError as error:  # names the allowed splits
        raise ConfigError(str(error)) from None


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


# ------------------------------------------------------------------------------ cohyponym pairs


def balanced_pairs(labels: dict[tuple[str, str], bool], size: int, rng: np.random.Generator) -> list[tuple[str, str, bool]]:
    """``size`` ordered pairs, half cohyponyms (the first half when ``size`` is odd), each group cycling
    through a seeded permutation of its pairs in a random order of mention."""
    groups = {flag: [pair for pair, value in sorted(labels.items()) if value == flag] for flag in (True, False)}
    for flag, pairs in groups.items():
        if not pairs:
            raise ConfigError(f"no {'cohyponym' if flag else 'non-cohyponym'} pairs under this ontology; "
                              "change params.max_steps.")
    wanted = {True: (size + 1) // 2, False: size // 2}
    chosen = []
    for flag in (True, False):
        order = [groups[flag][i] for i in rng.permutation(len(groups[flag]))]
        for k in range(wanted[flag]):
            first, second = order[k % len(order)]
            if rng.random() < 0.5:
                first, second = second, first
            chosen.append((first, second, flag))
    return [chosen[i] for i in rng.permutation(len(chosen))]


def build_toy_cohyponym_pairs(dataset_cfg: Any) -> PromptSet:
    """``dataset=toy_cohyponym_pairs``: "a <colour> X and a <colour> Y" over the toy shapes (module docstring)."""
    from harness.analysis.ontology import DEFAULT_MAX_STEPS, TOY_SENSES, classify_pairs, shared_hypernym
    from harness.toy.splits import TRAIN_PAIRS

    params = _params(dataset_cfg, {"max_steps": DEFAULT_MAX_STEPS}, "toy_cohyponym_pairs")
    size = _size(dataset_cfg)
    labels = classify_pairs(TOY_SENSES, int(params["max_steps"]))
    indices = split_indices(str(dataset_cfg.split), size, int(dataset_cfg.seed))
    rng = np.random.default_rng([7100, int(dataset_cfg.seed), 0 if dataset_cfg.split == "dev" else 1])
    records = []
    for index, (first, second, flag) in zip(indices, balanced_pairs(labels, size, rng)):
        colours = []
        for shape in (first, second):
            options = [c for c, s in TRAIN_PAIRS if s == shape and c not in colours]
            colours.append(options[int(rng.integers(len(options)))])
        prompt = f"{article(colours[0])} {colours[0]} {first} and {article(colours[1])} {colours[1]} {second}"
        hypernym, steps_first, steps_second = shared_hypernym(TOY_SENSES[first], TOY_SENSES[second])
        records.append(PromptRecord(
            id=f"cohyponym-{dataset_cfg.split}-{index:07d}", prompt=prompt, seed=index,
            meta={"nouns": [first, second], "objects": [[None, first], [None, second]], "cohyponym": flag,
                  "pair": "|".join(sorted((first, second))), "hypernym": hypernym,
                  "steps": [steps_first, steps_second]}))
    return validate_prompt_set(PromptSet("toy_cohyponym_pairs", records, builder="harness.analysis.datasets:toy_cohyponym_pairs",
                                         params={"split": str(dataset_cfg.split), "size": size, "seed": int(dataset_cfg.seed),
                                                 "max_steps": int(params["max_steps"])}),
                               "dataset=toy_cohyponym_pairs")


def build_coco_cohyponym_pairs(dataset_cfg: Any) -> PromptSet:
    """``dataset=coco_cohyponym_pairs``: "a X and a Y" over the 80 COCO classes, balanced (module docstring)."""
    from harness.analysis.ontology import DEFAULT_MAX_STEPS, classify_pairs, coco_senses, shared_hypernym

    params = _params(dataset_cfg, {"max_steps": DEFAULT_MAX_STEPS, "exclude": ["person"]}, "coco_cohyponym_pairs")
    size = _size(dataset_cfg)
    senses = {name: sense for name, sense in coco_senses().items() if name not in set(params["exclude"] or [])}
    labels = classify_pairs(senses, int(params["max_steps"]))
    rng = np.random.default_rng([7200, int(dataset_cfg.seed)])
    records = []
    for number, (first, second, flag) in enumerate(balanced_pairs(labels, size, rng)):
        hypernym, steps_first, steps_second = shared_hypernym(senses[first], senses[second])
        records.append(PromptRecord(
            id=f"coco-cohyponym-{number:05d}", prompt=f"{article(first)} {first} and {article(second)} {second}",
            seed=int(rng.integers(2**31 - 1)),
            meta={"nouns": [first, second], "cohyponym": flag, "pair": "|".join(sorted((first, second))),
                  "hypernym": hypernym, "steps": [steps_first, steps_second]}))
    return validate_prompt_set(PromptSet("coco_cohyponym_pairs", records, builder="harness.analysis.datasets:coco_cohyponym_pairs",
                                         params={"size": size, "seed": int(dataset_cfg.seed),
                                                 "max_steps": int(params["max_steps"]), "exclude": list(params["exclude"] or [])}),
                               "dataset=coco_cohyponym_pairs")


# ----------------------------------------------------------------------------- adjective swaps


def _replace_word(words: list[str], index: int, new: str) -> list[str]:
    out = list(words)
    out[index] = new
    if index > 0 and out[index - 1].lower() in ("a", "an"):
        out[index - 1] = article(new)
    return out


def toy_swap_record(scene: Any, index: int, rng: np.random.Generator, split: str) -> PromptRecord | None:
    """One adjective-swap record of a toy scene (None when the scene offers no swap and no unrelated word)."""
    from harness.toy.splits import TRAIN_PAIRS
    from harness.toy.world import caption

    text = caption(scene)
    words = text.text.split()
    if len(scene.objects) < 2 or not scene.objects[1].say_colour:
        return None
    target, other = scene.objects[0], scene.objects[1]
    choices = [role for role, said in (("colour", target.say_colour), ("size", target.say_size)) if said]
    if not choices:
        return None
    role = choices[int(rng.integers(len(choices)))]
    position = next(i for i, w in enumerate(text.words) if w.object_index == 0 and w.role == role)
    noun_position = next(i for i, w in enumerate(text.words) if w.object_index == 0 and w.role == "noun")
    used = {o.colour for o in scene.objects} | {scene.background}
    if role == "colour":
        options = [c for c, s in TRAIN_PAIRS if s == target.shape and c not in used]
    else:
        options = [s for s in ("small", "large") if s != target.size]
    if not options:
        return None
    new = options[int(rng.integers(len(options)))]
    other_position = next(i for i, w in enumerate(text.words) if w.object_index == 1 and w.role == "colour")
    other_options = [c for c, s in TRAIN_PAIRS if s == other.shape and c not in used]
    if not other_options:
        return None
    other_new = other_options[int(rng.integers(len(other_options)))]
    variants = {"adjective": " ".join(_replace_word(words, position, new)),
                "unrelated": " ".join(_replace_word(words, other_position, other_new)),
                "same": text.text}
    return PromptRecord(
        id=f"adjswap-{split}-{index:07d}", prompt=text.text, seed=index,
        meta={"nouns": list(dict.fromkeys(o.shape for o in scene.objects)),
              "objects": [[o.colour if o.say_colour else None, o.shape] for o in scene.objects],
              "swap": {"word": words[position], "to": new, "role": role, "noun": target.shape, "object": 0,
                       "word_index": position, "noun_index": noun_position,
                       "unrelated": {"word": words[other_position], "to": other_new, "word_index": other_position}},
              "variants": variants})


def build_toy_adjective_swaps(dataset_cfg: Any) -> PromptSet:
    """``dataset=toy_adjective_swaps``: toy_gen scenes of ``params.objects`` (2 or 3) objects with swaps (module docstring)."""
    from harness.toy.splits import scene_for_index

    params = _params(dataset_cfg, {"objects": 2}, "toy_adjective_swaps")
    if int(params["objects"]) not in (2, 3):
        raise ConfigError(f"dataset.params.objects must be 2 or 3 (the unrelated word is another object's), not {params['objects']}.")
    size = _size(dataset_cfg)
    # more candidates than needed: a scene whose colours leave no swap is passed over (deterministically)
    candidates = split_indices(str(dataset_cfg.split), min(100_000, 4 * size + 16), int(dataset_cfg.seed))
    records = []
    for index in candidates:
        scene = scene_for_index("toy_gen", index, int(params["objects"]))
        record = toy_swap_record(scene, index, np.random.default_rng([7300, index]), str(dataset_cfg.split))
        if record is not None:
            records.append(record)
        if len(records) == size:
            break
    return validate_prompt_set(PromptSet("toy_adjective_swaps", records, builder="harness.analysis.datasets:toy_adjective_swaps",
                                         params={"split": str(dataset_cfg.split), "size": len(records),
                                                 "seed": int(dataset_cfg.seed), "objects": int(params["objects"])}),
                               "dataset=toy_adjective_swaps")


#: The paper's two templates (Tang et al., 2023, section 6): adjectives swapped on the object; the unrelated word.
COCO_TEMPLATES: tuple[dict[str, Any], ...] = (
    {"template": "a {} shovel sitting in a clean shed", "noun": "shovel", "adjectives": ["rusty", "metallic", "wooden"],
     "unrelated": ("clean", "dirty")},
    {"template": "a {} car driving down the street", "noun": "car", "adjectives": ["blue", "green", "red"],
     "unrelated": ("street", "road")},
)
#: Swap classes for captions: an adjective is swapped to another of its class.
SWAP_CLASSES: tuple[tuple[str, ...], ...] = (
    ("red", "blue", "green", "yellow", "black", "white", "brown", "orange", "pink", "purple", "gray"),
    ("wooden", "metal", "plastic", "glass", "stone", "rusty"),
    ("large", "small", "big", "little", "tall", "short"),
)


def _swap_class(word: str) -> tuple[str, ...] | None:
    return next((group for group in SWAP_CLASSES if word.lower() in group), None)


def template_records() -> list[PromptRecord]:
    """The paper's templates: the first adjective swapped to each of the others."""
    records = []
    for number, spec in enumerate(COCO_TEMPLATES):
        base = spec["adjectives"][0]
        prompt = spec["template"].format(base)
        old, new_unrelated = spec["unrelated"]
        for other in spec["adjectives"][1:]:
            words = prompt.split()
            position = words.index(base)
            variants = {"adjective": " ".join(_replace_word(words, position, other)),
                        "unrelated": prompt.replace(old, new_unrelated),
                        "same": prompt}
            records.append(PromptRecord(
                id=f"template{number}-{base}-{other}", prompt=prompt, seed=number,
                meta={"nouns": [spec["noun"]], "swap": {"word": base, "to": other, "role": "adjective",
                                                        "noun": spec["noun"], "object": 0, "word_index": position,
                                                        "unrelated": {"word": old, "to": new_unrelated}},
                      "variants": variants, "source": "paper template"}))
    return records


def caption_records(captions_path: str, size: int, seed: int) -> list[PromptRecord]:
    """A seeded sample of COCO captions with an ``amod`` adjective in a swap class, with their variants."""
    from harness.analysis.language import load_parser
    from harness.data.coco_gen import read_coco_captions

    captions = sorted(read_coco_captions(captions_path), key=lambda c: c.id)
    rng = np.random.default_rng([7400, int(seed)])
    records = []
    nlp = load_parser()
    for position in rng.permutation(len(captions)):
        caption = captions[int(position)]
        doc = nlp(caption.text)
        adjectives = [t for t in doc if t.dep_ == "amod" and _swap_class(t.text) and t.head.pos_ == "NOUN"]
        if not adjectives:
            continue
        target = adjectives[0]
        group = [w for w in _swap_class(target.text) if w != target.text.lower()]
        new = group[int(rng.integers(len(group)))]
        others = [t for t in doc if t.dep_ == "amod" and t.head.i != target.head.i and _swap_class(t.text)]
        text = caption.text.strip()

        def swapped(token: Any, word: str, text: str = text) -> str:
            return text[:token.idx] + word + text[token.idx + len(token.text):]

        variants = {"adjective": swapped(target, new), "same": text}
        unrelated = None
        if others:
            other = others[0]
            choices = [w for w in _swap_class(other.text) if w != other.text.lower()]
            unrelated = {"word": other.text.lower(), "to": choices[int(rng.integers(len(choices)))]}
            variants["unrelated"] = swapped(other, unrelated["to"])
        records.append(PromptRecord(
            id=f"caption-{caption.id}", prompt=text, seed=int(rng.integers(2**31 - 1)),
            meta={"nouns": [target.head.text.lower()], "swap": {"word": target.text.lower(), "to": new, "role": "amod",
                                                                 "noun": target.head.text.lower(), "object": 0,
                                                                 "unrelated": unrelated},
                  "variants": variants, "source": "coco caption", "caption_id": caption.id}))
        if len(records) >= size:
            break
    return records


def build_coco_adjective_swaps(dataset_cfg: Any) -> PromptSet:
    """``dataset=coco_adjective_swaps``: the paper's templates, plus sampled captions when ``dataset.path`` is given."""
    records = template_records()
    if dataset_cfg.path:
        records += caption_records(str(dataset_cfg.path), _size(dataset_cfg), int(dataset_cfg.seed))
    return validate_prompt_set(PromptSet("coco_adjective_swaps", records, builder="harness.analysis.datasets:coco_adjective_swaps",
                                         params={"path": dataset_cfg.path, "size": len(records), "seed": int(dataset_cfg.seed)}),
                               "dataset=coco_adjective_swaps")
