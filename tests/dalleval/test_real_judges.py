"""The real-model judges on stand-ins: detector reader (colour, position, counts), JSONL prompts, VQA mapping."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from harness.dalleval.detector_judge import DetectorReader, colour_name, pixel_colour_names
from harness.dalleval.judge import judge_skill
from harness.dalleval.skills_jsonl import build_skills_jsonl, read_skill_file
from harness.dalleval.vqa_judge import VQAAttributeReader
from harness.errors import DataError, MissingWeightsError


class FakeDetector:
    """Stand-in detector: fixed boxes/masks over a 40x40 image, COCO-style category list."""

    categories = ["__background__", "dog", "cat"]

    def __init__(self, detections):
        self.detections = detections

    def detect(self, image):
        return self.detections


def _scene():
    image = np.full((40, 40, 3), 255, np.uint8)
    image[5:15, 2:12] = (220, 30, 30)  # red dog, top-left
    image[25:35, 28:38] = (30, 60, 220)  # blue cat, bottom-right
    masks = np.zeros((3, 40, 40), np.float32)
    masks[0, 5:15, 2:12] = 1
    masks[1, 25:35, 28:38] = 1
    masks[2, 0:3, 0:3] = 1
    boxes = np.array([[2, 5, 12, 15], [28, 25, 38, 35], [0, 0, 3, 3]], float)
    return image, {"labels": np.array([1, 2, 1]), "scores": np.array([0.9, 0.8, 0.3]), "masks": masks, "boxes": boxes}


def test_detector_reader_colours_positions_and_threshold():
    image, detections = _scene()
    reader = DetectorReader(detector=FakeDetector(detections), score_threshold=0.5)
    seen = reader.read_objects(image)
    assert [(s.cls, s.colour) for s in seen] == [("dog", "red"), ("cat", "blue")]  # the 0.3 dog is dropped
    assert seen[0].centre == pytest.approx((7 / 40, 10 / 40))
    assert judge_skill("spatial_relation", [{"class": "dog", "color": "red", "position": ["above", 1]},
                                            {"class": "cat", "color": "blue"}], seen)
    assert not judge_skill("colour_binding", [{"class": "dog", "color": "blue"}, {"class": "cat", "color": "red"}], seen)
    assert judge_skill("counting", [{"class": "dog", "count": 1}], seen)
    low = DetectorReader(detector=FakeDetector(detections), score_threshold=0.2).read_objects(image)
    assert not judge_skill("counting", [{"class": "dog", "count": 1}], low)  # two dogs above 0.2


def test_colour_names_from_hue_and_value():
    pixels = np.array([[230, 20, 20], [20, 200, 40], [30, 60, 220], [250, 220, 30], [250, 250, 250], [10, 10, 10],
                       [128, 128, 128], [240, 130, 20], [120, 60, 10], [150, 50, 200], [240, 100, 200]])
    assert list(pixel_colour_names(pixels)) == ["red", "green", "blue", "yellow", "white", "black", "gray", "orange",
                                                "brown", "purple", "pink"]
    image = np.zeros((4, 4, 3), np.uint8)
    image[:3] = (230, 20, 20)
    assert colour_name(image, np.ones((4, 4), bool)) == "red"  # majority over the mask
    assert colour_name(image, np.zeros((4, 4), bool)) is None


def test_missing_detector_weights_stop_with_the_usual_message(tmp_path):
    with pytest.raises(MissingWeightsError, match="maskrcnn_resnet50_fpn_coco"):
        DetectorReader(weights=str(tmp_path / "absent.pth"))


def test_jsonl_loader_reads_shipped_and_geneval_tags(tmp_path):
    items = read_skill_file("datasets/skills_coco.jsonl")
    assert {i["skill"] for i in items} == {"object", "colour_binding", "spatial_relation", "counting"}
    path = tmp_path / "geneval.jsonl"
    path.write_text(json.dumps({"tag": "position", "prompt": "a photo of a dog right of a cat",
                                "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1,
                                                                            "position": ["right of", 0]}]}) + "\n")
    prompt_set = build_skills_jsonl(SimpleNamespace(path=str(path), size=2, seed=0, params={}))
    assert len(prompt_set) == 2 and prompt_set.records[0].meta["skill"] == "spatial_relation"
    assert prompt_set.records[0].seed != prompt_set.records[1].seed
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "object", "prompt": "a dog", "include": [{"class": "dog"}]}\n{"tag": "juggling", "prompt": "x", "include": [{"class": "x"}]}\n')
    with pytest.raises(DataError, match="bad.jsonl:2: unknown skill"):
        read_skill_file(bad)


def test_vqa_reader_maps_answers_and_leaves_out_unclear_ones():
    answers = iter(["a woman", "the man", "a man and a woman", "blue"])
    reader = VQAAttributeReader(answerer=lambda image, question: next(answers))
    record = SimpleNamespace(meta={"bias": {"objects": ["person"], "attributes": ["gender"]}})
    got = [reader.read_attributes(np.zeros((2, 2, 3), np.uint8), record)[0]["gender"] for _ in range(4)]
    assert got == ["female", "male", None, None]


def test_vqa_model_missing_stops_with_one_message(tmp_path):
    with pytest.raises(MissingWeightsError, match="save_pretrained"):
        VQAAttributeReader(model=str(tmp_path / "no_model"))
