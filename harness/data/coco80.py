"""The 80 COCO object classes and the words that name them (``coco80_synonyms.json``).

The table is data, not code: every class lists its name, plural forms and common synonyms
("man", "women", "kids" -> person; "bike" -> bicycle; "television" -> tv). Each word maps to
exactly one class. ``miou80`` scores only nouns that map to a class; the supervised baselines
(Mask R-CNN, detectron2) use it to decide which detector class answers which word.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SYNONYMS_FILE = Path(__file__).with_name("coco80_synonyms.json")


@lru_cache(maxsize=4)
def load_synonyms(path: str | None = None) -> dict[str, str]:
    """word (lower case) -> COCO-80 class name, from ``path`` (default: the shipped table)."""
    document = json.loads(Path(path or SYNONYMS_FILE).read_text())
    table: dict[str, str] = {}
    for class_name, words in document["classes"].items():
        for word in words:
            key = word.strip().lower()
            if key in table and table[key] != class_name:
                raise ValueError(f"{path or SYNONYMS_FILE}: {key!r} names both {table[key]!r} and {class_name!r}")
            table[key] = class_name
    return table


def coco80_classes(path: str | None = None) -> list[str]:
    """The 80 class names, in the table's order (COCO's order)."""
    document = json.loads(Path(path or SYNONYMS_FILE).read_text())
    return list(document["classes"])


def coco80_class(word: str, path: str | None = None) -> str | None:
    """The COCO-80 class a word names (case-insensitive), or None when it names none."""
    return load_synonyms(path).get(word.strip().lower())
