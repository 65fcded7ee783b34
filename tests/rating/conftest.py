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


STUDY_ITEMS = 12
#: Gold items: (item id, accepted answers); a clear match and a clear mismatch, twice each.
GOLD = [("gold:match:0", [4, 5]), ("gold:miss:0", [1, 2]), ("gold:match:1", [4, 5]), ("gold:miss:1", [1, 2])]


def write_study(folder: Path, max_gold_failures: int = 1) -> Path:
    """A task of 12 study items (parts of speech NOUN/ADJ alternating) and 4 gold items, with the
    exclusion rule ``max_gold_failures``."""
    specs = [{"item_id": f"s{i}:w{i}:1", "word": f"w{i}", "pos": "NOUN" if i % 2 == 0 else "ADJ",
              "prompt": f"prompt {i}"} for i in range(STUDY_ITEMS)]
    specs += [{"item_id": item_id, "word": "gold", "pos": "GOLD", "prompt": "an attention check"} for item_id, _ in GOLD]
    write_task(folder, specs, name="planted_study")
    document = json.loads((folder / "task.json").read_text())
    accepts = dict(GOLD)
    for item in document["items"]:
        if item["item_id"] in accepts:
            item["gold"] = {"accept": accepts[item["item_id"]]}
            item["group"] = {}
    document["exclusion"] = {"max_gold_failures": max_gold_failures}
    (folder / "task.json").write_text(json.dumps(document, indent=1))
    return folder


def study_truth() -> list[int]:
    """The 'true' score of each study item: 1..5 cycling."""
    return [1 + i % 5 for i in range(STUDY_ITEMS)]


def simulated_answers(seed: int = 0) -> dict[str, dict[str, str]]:
    """rater -> {item_id: answer}: three careful raters (the truth, one step off on a quarter of the
    items) and one planted bad rater (uniform random scores, wrong on every gold item)."""
    rng = np.random.default_rng(seed)
    truth = study_truth()
    answers: dict[str, dict[str, str]] = {}
    for number, rater in enumerate(["ann", "bob", "cat"]):
        mine = {}
        for i, value in enumerate(truth):
            off = 1 if (i + number) % 4 == 0 else 0
            mine[f"s{i}:w{i}:1"] = str(min(5, value + off))
        for item_id, accept in GOLD:
            mine[item_id] = str(accept[-1])
        answers[rater] = mine
    bad = {f"s{i}:w{i}:1": str(int(rng.integers(1, 6))) for i in range(STUDY_ITEMS)}
    for item_id, accept in GOLD:
        bad[item_id] = "1" if 5 in accept else "5"
    answers["zed"] = bad
    return answers
