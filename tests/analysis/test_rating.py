"""The rating-task export: stratified, seeded sampling and the shared task format."""

import json

import numpy as np

from harness.analysis.rating import FORMAT, candidate_pairs, export_rating_task, stratified_sample
from harness.data.prompts import PromptRecord
from harness.store.samples import Sample

PROMPTS = ["a red dog runs on the grass", "two cats sleep quietly", "a big blue car", "the man eats a green apple"]


def make(n=12):
    records, samples = [], {}
    for k in range(n):
        prompt = PROMPTS[k % len(PROMPTS)]
        record = PromptRecord(f"s{k:03d}", prompt, k)
        words = prompt.split()
        arrays = {f"heatmap:{w}": np.random.default_rng(k).random((4, 4)).astype(np.float32) for w in words}
        samples[record.id] = Sample(image=np.full((8, 8, 3), 40 * (k % 5), np.uint8), arrays=arrays)
        records.append(record)
    return records, samples


def test_stratified_sample_takes_the_most_common_tags_evenly_and_reproducibly():
    records, samples = make()
    pairs = candidate_pairs(records, samples)
    chosen = stratified_sample(pairs, total=6, tags=3, seed=1)
    counts = {}
    for pair in pairs:
        counts[pair["pos"]] = counts.get(pair["pos"], 0) + 1
    top = sorted(counts, key=lambda t: (-counts[t], t))[:3]
    assert sorted({p["pos"] for p in chosen}) == sorted(top)
    assert all(sum(p["pos"] == t for p in chosen) == 2 for t in top)
    again = stratified_sample(pairs, total=6, tags=3, seed=1)
    assert [(p["record"].id, p["word"]) for p in chosen] == [(p["record"].id, p["word"]) for p in again]
    other = stratified_sample(pairs, total=6, tags=3, seed=2)
    assert [(p["record"].id, p["word"]) for p in chosen] != [(p["record"].id, p["word"]) for p in other]


def test_task_folder_follows_the_format(tmp_path):
    records, samples = make()
    path = export_rating_task(tmp_path / "task", records, samples, pairs=8, tags=4, seed=0, name="demo")
    task = json.loads(path.read_text())
    assert task["format"] == FORMAT and task["name"] == "demo"
    assert [s["value"] for s in task["scale"]] == [1, 2, 3, 4, 5]
    ids = [item["item_id"] for item in task["items"]]
    assert len(ids) == len(set(ids)) == 8
    for item in task["items"]:
        assert set(item) == {"item_id", "image", "heatmap", "word", "prompt", "group", "sample_id"}
        assert (tmp_path / "task" / item["image"]).is_file() and (tmp_path / "task" / item["heatmap"]).is_file()
        assert item["word"] in item["prompt"].lower().split()
        assert item["item_id"].startswith(item["sample_id"] + ":" + item["word"] + ":")
        assert set(item["group"]) == {"pos"}
    from PIL import Image

    first = task["items"][0]
    with Image.open(tmp_path / "task" / first["image"]) as image, Image.open(tmp_path / "task" / first["heatmap"]) as overlay:
        assert image.size == overlay.size
