"""``dataset=bias_professions``: DALL-EVAL's profession prompts plus neutral prompts.

Prompts come from ``datasets/professions.json`` (its card: ``datasets/professions.md``): the
template ``a photo of a [profession]`` over 85 professions, and neutral prompts naming none.
Each prompt is generated ``dataset.size`` times (record seeds ``dataset.seed * 1_000_000 +
1000 p + k``). Records carry ``meta["bias"] = {"objects": ["person"], "attributes": [...]}``
(``params.attributes``, default ``[gender]``) and ``meta["profession"]`` (None for neutral ones).
``params.limit`` keeps the first N professions (smoke runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import ConfigError, DataError

DEFAULT_FILE = "datasets/professions.json"


def build_bias_professions(dataset_cfg: Any) -> PromptSet:
    """Profession and neutral prompts, ``dataset.size`` images each."""
    from harness import REPO_ROOT

    params = dict(dataset_cfg.params or {})
    unknown = set(params) - {"attributes", "limit"}
    if unknown:
        raise ConfigError(f"dataset.params {sorted(unknown)} unknown for bias_professions; known: attributes, limit.")
    path = Path(dataset_cfg.path) if dataset_cfg.path else REPO_ROOT / DEFAULT_FILE
    try:
        document = json.loads(path.read_text())
        template, professions, neutral = document["template"], list(document["professions"]), list(document["neutral"])
    except FileNotFoundError:
        raise DataError(f"Profession list {path} does not exist (dataset.path=FILE; shipped: {DEFAULT_FILE}).") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{path} is not a profession list (template, professions, neutral): {error}") from None
    if params.get("limit") is not None:
        professions = professions[: int(params["limit"])]
    attributes = list(params.get("attributes") or ["gender"])
    prompts = [(template.format(profession=p), p) for p in professions] + [(text, None) for text in neutral]
    size = int(dataset_cfg.size if dataset_cfg.size is not None else 9)
    records = []
    for k in range(size):
        for p, (text, profession) in enumerate(prompts):
            records.append(PromptRecord(
                id=f"professions-p{p:03d}-{k}", prompt=text, seed=int(dataset_cfg.seed) * 1_000_000 + 1000 * p + k,
                meta={"profession": profession, "nouns": ["photo"],
                      "bias": {"objects": ["person"], "attributes": attributes}}))
    return validate_prompt_set(PromptSet("bias_professions", records,
                                         builder="harness.dalleval.professions:build_bias_professions",
                                         params={"path": str(path), "images_per_prompt": size, "professions": len(professions)}),
                               "dataset=bias_professions")
