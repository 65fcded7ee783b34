"""Image sets: exact synthetic labels, label transforms, folder builders and their errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from harness.data.image_sets import (
    SYNTHETIC_PALETTE,
    build_ade20k_style,
    build_cocostuff27,
    build_synthetic_segments,
    cocostuff27_names,
    cocostuff27_table,
    load_record_image,
    load_record_labels,
    transform_labels,
)
from harness.errors import DataError


def cfg(**values):
    return SimpleNamespace(**{"seed": 0, "size": None, "path": None, "params": {}, **values})


def test_synthetic_labels_are_exact_and_deterministic(synthetic_set, tmp_path):
    palette = np.array([rgb for _, rgb in SYNTHETIC_PALETTE], dtype=np.uint8)
    for record in synthetic_set.records:
        image, notes = load_record_image(record)
        labels = load_record_labels(record)
        assert notes == [] and image.shape == (32, 32, 3) and labels.dtype == np.int32
        assert np.array_equal(palette[labels], image)  # every pixel's colour is its class
        assert 2 <= len(np.unique(labels)) <= 3  # background + up to two rectangles
    again = build_synthetic_segments(cfg(size=3, path=str(tmp_path)))
    assert [r.seed for r in again.records] == [r.seed for r in synthetic_set.records]
    assert np.array_equal(load_record_labels(again.records[1]), load_record_labels(synthetic_set.records[1]))


def test_label_transforms():
    raw = np.array([[0, 1, 150, 255]])
    assert transform_labels(raw, "reduce_zero_label").tolist() == [[-1, 0, 149, -1]]
    assert transform_labels(raw, "none").tolist() == [[0, 1, 150, -1]]
    # COCO-Stuff fine ids: 0 person -> 9 (person), 156 sky-other -> 23 (sky), 255 unlabeled
    assert transform_labels(np.array([[0, 156, 255, 181]]), "cocostuff27").tolist() == [[9, 23, -1, 24]]
    with pytest.raises(DataError, match="label_transform"):
        transform_labels(raw, "halve")


def test_cocostuff27_map_covers_182_fine_ids_onto_27_classes():
    table = cocostuff27_table()
    assert len(table) == 182 and set(table.tolist()) == set(range(27))
    names = cocostuff27_names()
    assert len(names) == 27 and names[9] == "person" and names[23] == "sky"


def test_ade20k_style_folder(tmp_path):
    (tmp_path / "images/validation").mkdir(parents=True)
    (tmp_path / "annotations/validation").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "images/validation/a.jpg")
    Image.fromarray(np.array([[0, 1, 2, 3, 4, 5]] * 4, np.uint8)).save(tmp_path / "annotations/validation/a.png")
    image_set = build_ade20k_style(cfg(path=str(tmp_path)))
    (record,) = image_set.records
    assert load_record_labels(record)[0].tolist() == [-1, 0, 1, 2, 3, 4]
    assert record.meta["num_classes"] == 150


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="needs dataset.path"):
        build_ade20k_style(cfg())
    with pytest.raises(DataError, match="does not exist"):
        build_ade20k_style(cfg(path=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match="images folder .*val2017 does not exist"):
        build_cocostuff27(cfg(path=str(tmp_path)))


def test_cocostuff27_from_coco_format_annotations(tmp_path):
    """pycocotools rasterizes stuff first, things over it; 'other' (183) stays unlabeled."""
    (tmp_path / "val2017").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "val2017/000000000001.jpg")
    image = {"id": 1, "file_name": "000000000001.jpg", "height": 4, "width": 4}
    box = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    stuff = {"images": [image], "categories": [{"id": 157, "name": "sky-other"}, {"id": 183, "name": "other"}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 157, "segmentation": box(0, 0, 4, 2), "area": 8,
                              "bbox": [0, 0, 4, 2], "iscrowd": 0},
                             {"id": 2, "image_id": 1, "category_id": 183, "segmentation": box(0, 2, 4, 4), "area": 8,
                              "bbox": [0, 2, 4, 2], "iscrowd": 0}]}
    things = {"images": [image], "categories": [{"id": 1, "name": "person"}],
              "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "segmentation": box(0, 2, 2, 4), "area": 4,
                               "bbox": [0, 2, 2, 2], "iscrowd": 0}]}
    (tmp_path / "stuff.json").write_text(json.dumps(stuff))
    (tmp_path / "things.json").write_text(json.dumps(things))
    image_set = build_cocostuff27(cfg(path=str(tmp_path), params={
        "stuff_annotations": "stuff.json", "instance_annotations": "things.json", "cache_dir": str(tmp_path / "labels")}))
    labels = load_record_labels(image_set.records[0])
    assert (labels[:2] == 23).all()  # sky
    assert (labels[2:, :2] == 9).all()  # person painted over "other"
    assert (labels[2:, 2:] == -1).all()  # "other" only: unlabeled
