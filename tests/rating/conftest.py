"""A small rating task in the shared task format (harness-rating-task/1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCALE = [{"value": 1, "label": "no match"}, {"value": 2, "label": "poor"}, {"value": 3, "label": "fair"},
         {"value": 4, "label": "good"}, {"value": 5, "label": "perfect match"}]


def write_task(folder: Path, items: list[dict] | None = None, name: str = "daam_pos_test") -> Path:
    """A task folder with tiny PNGs; ``items`` as (item_id, word, pos, prompt) dicts or the default four."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    (folder / "maps").mkdir(exist_ok=True)
    specs = items or [
        {"item_id": "s0:dog:1", "word": "dog", "pos": "NOUN", "prompt": "a dog on a red couch"},
        {"item_id": "s0:red:4", "word": "red", "pos": "ADJ", "prompt": "a dog on a red couch"},
        {"item_id": "s1:cat:1", "word": "cat", "pos": "NOUN", "prompt": "a cat <script>alert(1)</script> &amp; co"},
        {"item_id": "s1:runs:2", "word": "runs", "pos": "VERB", "prompt": "a cat runs"},
    ]
    rng = np.random.default_rng(0)
    entries = []
    for number, spec in enumerate(specs):
        image = f"images/i{number}.png"
        heat = f"maps/m{number}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / image)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / heat)
        entries.append({"item_id": spec["item_id"], "image": image, "heatmap": heat, "word": spec["word"],
                        "prompt": spec["prompt"], "group": {"pos": spec["pos"]}, "sample_id": spec["item_id"].split(":")[0]})
    document = {"format": "harness-rating-task/1", "name": name,
                "instructions": "How well does the highlighted region match the word?", "scale": SCALE, "items": entries}
    (folder / "task.json").write_text(json.dumps(document, indent=1))
    return folder


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    return write_task(tmp_path / "task")
