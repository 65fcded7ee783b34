"""The human-rating task of generalized attribution (DAAM, Tang et al., ACL 2023, section 5).

The paper had people rate 2,800 word-prompt pairs over the 14 most common part-of-speech tags
on a five-point scale. :func:`export_rating_task` samples such pairs from a run's samples
(stratified by tag: the ``tags`` most common universal POS tags among the run's (image, word)
pairs, ``pairs // tags`` per tag or all a tag has, drawn without replacement with
``numpy.random.default_rng(seed)``) and writes them in the harness's rating-task format
(``harness-rating-task/1``, docs/daam_analyses.md), which the report's rating page reads.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "harness-rating-task/1"
INSTRUCTIONS = ("How well does the highlighted region match the word? The heat map shows where the model "
                "attends for the word in this image. Rate the match of the highlighted region to what the "
                "word denotes in the image.")
#: Five-point absolute category rating; the paper reports its means on this kind of scale ("fair" ~ 3,
#: "good" ~ 4). Its exact label wording was not recovered.
SCALE = [{"value": 1, "label": "bad"}, {"value": 2, "label": "poor"}, {"value": 3, "label": "fair"},
         {"value": 4, "label": "good"}, {"value": 5, "label": "excellent"}]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "x"


def candidate_pairs(records: list, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every (sample, distinct word with a heat map) with its universal POS tag and word position."""
    from harness.analysis.language import tag_words

    pairs = []
    for record in records:
        sample = samples.get(record.id) if hasattr(samples, "get") else samples[record.id]
        if sample is None or sample.image is None:
            continue
        seen: set[str] = set()
        for tagged in tag_words(record.prompt):
            if tagged.word in seen or f"heatmap:{tagged.word}" not in sample.arrays:
                continue
            seen.add(tagged.word)
            pairs.append({"record": record, "word": tagged.word, "pos": tagged.pos, "position": tagged.index})
    return pairs


def stratified_sample(pairs: list[dict[str, Any]], total: int, tags: int, seed: int) -> list[dict[str, Any]]:
    """The ``tags`` most common tags (ties by name), ``total // tags`` pairs each (all when fewer), seeded."""
    counts = Counter(pair["pos"] for pair in pairs)
    chosen_tags = [tag for tag, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: int(tags)]]
    per_tag = max(1, int(total) // max(1, len(chosen_tags)))
    rng = np.random.default_rng(int(seed))
    chosen = []
    for tag in chosen_tags:
        members = [pair for pair in pairs if pair["pos"] == tag]
        order = rng.permutation(len(members))[:per_tag]
        chosen += [members[i] for i in sorted(order)]
    return chosen


def overlay(image: np.ndarray, heat_map: np.ndarray) -> np.ndarray:
    """The word's map (bilinear to the image size, min-max normalised, jet) blended half over the image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import colormaps

    from harness.heatmaps import normalize_minmax, upsample

    image = np.asarray(image, dtype=np.uint8)
    heat = normalize_minmax(upsample(heat_map, image.shape[:2]))
    colours = colormaps["jet"](heat)[..., :3] * 255.0
    return np.clip(0.5 * image + 0.5 * colours, 0, 255).round().astype(np.uint8)


def export_rating_task(folder: Path, records: list, samples: Mapping[str, Any], pairs: int = 2800, tags: int = 14,
                       seed: int = 0, name: str = "daam_pos_coco") -> Path:
    """Write ``folder/task.json`` with the sampled pairs' images and overlays; returns the task file."""
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    items = []
    written: set[str] = set()
    for pair in stratified_sample(candidate_pairs(records, samples), pairs, tags, seed):
        record, word = pair["record"], pair["word"]
        sample = samples.get(record.id) if hasattr(samples, "get") else samples[record.id]
        stem = _safe(str(record.id))
        image_path = f"images/{stem}.png"
        if stem not in written:
            Image.fromarray(np.asarray(sample.image, dtype=np.uint8)).save(folder / image_path)
            written.add(stem)
        map_path = f"maps/{stem}_{_safe(word)}_{pair['position']}.png"
        Image.fromarray(overlay(sample.image, sample.arrays[f"heatmap:{word}"])).save(folder / map_path)
        items.append({"item_id": f"{record.id}:{word}:{pair['position']}", "image": image_path, "heatmap": map_path,
                      "word": word, "prompt": record.prompt, "group": {"pos": pair["pos"]}, "sample_id": str(record.id)})
    task = {"format": FORMAT, "name": name, "instructions": INSTRUCTIONS, "scale": SCALE, "items": items}
    path = folder / "task.json"
    temporary = path.with_name(".task.json.tmp")
    temporary.write_text(json.dumps(task, indent=1, ensure_ascii=False), encoding="utf-8")
    temporary.replace(path)
    return path
