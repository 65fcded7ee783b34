"""Ground-truth readers on made-up COCO (polygon, RLE) and DAAM PNG-alpha fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from harness.data.ground_truth import (
    CocoGroundTruth,
    RecordGroundTruth,
    decode_inline,
    encode_inline,
    lookup,
    read_daam_folder,
    resolve_ground_truth,
)
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError

H, W = 6, 8


def block(top, left, bottom, right):
    mask = np.zeros((H, W), bool)
    mask[top:bottom, left:right] = True
    return mask


def coco_file(tmp_path, annotations):
    document = {
        "images": [{"id": 7, "file_name": "452.png", "height": H, "width": W},
                   {"id": 8, "file_name": "453.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "Sink"}, {"id": 3, "name": "cat"}],
        "annotations": annotations,
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(document))
    return path


def compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask):
    # column-major run lengths, starting with a run of zeros (COCO's iscrowd format)
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def test_coco_polygons_and_rle_decode_to_the_drawn_masks(tmp_path):
    # polygon around pixels rows 1-2, cols 2-4 (pixel centres inside the rectangle)
    polygon = [2, 1, 5, 1, 5, 3, 2, 3]
    sink = block(3, 0, 6, 3)
    cat = block(0, 6, 2, 8)
    path = coco_file(tmp_path, [
        {"id": 1, "image_id": 7, "category_id": 1, "segmentation": [polygon], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 2, "segmentation": compressed_rle(sink), "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 3, "segmentation": uncompressed_rle(cat), "iscrowd": 1},
    ])
    truth = CocoGroundTruth(path).masks(PromptRecord("452", "a dog, a sink and a cat", 0,
                                                     {"ground_truth": {"format": "coco", "path": str(path)}}))
    assert set(truth) == {"dog", "sink", "cat"}  # category names are lower-cased
    expected_dog = block(1, 2, 3, 5)
    np.testing.assert_array_equal(truth["dog"], expected_dog)
    np.testing.assert_array_equal(truth["sink"], sink)
    np.testing.assert_array_equal(truth["cat"], cat)


def test_coco_annotations_of_one_word_are_merged_and_missing_masks_reported(tmp_path):
    left, right = block(0, 0, 2, 2), block(4, 6, 6, 8)
    path = coco_file(tmp_path, [
        {"id": 1, "image_id": 8, "category_id": 1, "segmentation": compressed_rle(left)},
        {"id": 2, "image_id": 8, "category_id": 1, "segmentation": compressed_rle(right)},
        {"id": 3, "image_id": 8, "category_id": 3, "segmentation": []},  # annotated, but no mask
    ])
    reader = RecordGroundTruth()
    record = PromptRecord("453", "two dogs and a cat", 0, {"ground_truth": {"format": "coco", "path": str(path)}})
    truth = reader.masks(record)
    np.testing.assert_array_equal(truth["dog"], left | right)
    assert "cat" not in truth  # absent, not a crash
    assert len(reader.problems) == 1 and "annotation 3" in reader.problems[0]
    by_id = reader.masks(PromptRecord("x", "p", 0, {"ground_truth": {"format": "coco", "path": str(path), "image_id": 8}}))
    np.testing.assert_array_equal(by_id["dog"], left | right)


def test_coco_reader_rejects_bad_files_and_unknown_images(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CocoGroundTruth(tmp_path / "none.json")
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="not a COCO instances-format"):
        CocoGroundTruth(captions)
    path = coco_file(tmp_path, [])
    with pytest.raises(DataError, match="file name stem is '999'"):
        CocoGroundTruth(path).masks(PromptRecord("999", "p", 0, {"ground_truth": {"format": "coco", "path": str(path)}}))


def test_daam_release_png_alpha_masks(tmp_path):
    folder = tmp_path / "452"
    folder.mkdir()
    dog = block(1, 1, 4, 5)
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = 255  # colour is ignored: the alpha channel is the mask
    rgba[..., 3] = dog * 255
    Image.fromarray(rgba).save(folder / "Dog.gt.png")
    faint = np.zeros((H, W, 4), np.uint8)
    faint[0, 0, 3] = 1  # alpha > 0 counts as inside, as in daam.evaluate.load_mask
    Image.fromarray(faint).save(folder / "sink.gt.png")
    Image.fromarray(np.zeros((H, W, 4), np.uint8)).save(folder / "cat.gt.png")  # empty: absent
    truth = read_daam_folder(folder)
    np.testing.assert_array_equal(truth["dog"], dog)
    assert truth["sink"].sum() == 1 and truth["sink"][0, 0]
    assert lookup(truth, "cat") is None
    assert lookup(truth, "dogs", lemma="dog") is truth["dog"]
    record = PromptRecord("452", "a dog", 0, {"ground_truth": {"format": "daam_png", "path": str(folder)}})
    np.testing.assert_array_equal(RecordGroundTruth().masks(record)["dog"], dog)
    with pytest.raises(DataError, match="does not exist"):
        read_daam_folder(tmp_path / "missing")


def test_inline_masks_round_trip_and_pointer_errors():
    masks = {"Dog": block(0, 0, 3, 3), "sink": block(2, 4, 6, 8)}
    pointer = json.loads(json.dumps(encode_inline(masks)))  # survives a manifest
    decoded = decode_inline(pointer)
    np.testing.assert_array_equal(decoded["dog"], masks["Dog"])
    np.testing.assert_array_equal(decoded["sink"], masks["sink"])
    with pytest.raises(DataError, match="has no ground truth"):
        RecordGroundTruth().masks(PromptRecord("1", "p", 0, {}))
    with pytest.raises(DataError, match="unknown ground-truth format"):
        RecordGroundTruth().masks(PromptRecord("1", "p", 0, {"ground_truth": {"format": "voc"}}))


class FixedTruth:
    def masks(self, record, sample=None):
        return {"dog": np.ones((2, 2), bool)}


def test_resolve_ground_truth_accepts_objects_and_import_paths():
    assert isinstance(resolve_ground_truth(None), RecordGroundTruth)
    fixed = FixedTruth()
    assert resolve_ground_truth(fixed) is fixed
    loaded = resolve_ground_truth("harness.data.ground_truth:RecordGroundTruth")
    assert isinstance(loaded, RecordGroundTruth)
    with pytest.raises(ConfigError, match="cannot be imported"):
        resolve_ground_truth("harness.nowhere:Thing")
    with pytest.raises(ConfigError, match="no masks"):
        resolve_ground_truth(object())
