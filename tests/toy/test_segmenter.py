"""The toy segmenter (the toy world's supervised baseline) and the ``toy_segmenter`` baseline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from harness import REPO_ROOT
from harness.bench import torch_threads
from harness.data.prompts import PromptRecord
from harness.data.toy_sets import SCENE_CLASSES
from harness.errors import MissingWeightsError
from harness.overlap import confusion_matrix
from harness.store.samples import Sample
from harness.toy.segmenter import (
    RETRAIN_COMMAND,
    WEIGHTS_FILE,
    load_segmenter,
    scores_from_confusion,
    segment,
    semantic_labels,
)
from harness.toy.splits import scene_for_index
from harness.toy.world import SHAPES, render_scene

WEIGHTS = REPO_ROOT / "weights" / "toy" / "segmenter"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def network():
    return load_segmenter(WEIGHTS)


@pytest.fixture(scope="module")
def baseline():
    from harness.registry import BASELINES

    return BASELINES.get("toy_segmenter")(None)


def exact_classes(split: str, index: int, n_objects: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A render, its semantic labels built here from the scene (not from the module under test), its shapes."""
    scene = scene_for_index(split, index, n_objects)
    image, instance = render_scene(scene)
    classes = np.zeros(instance.shape, np.int64)
    for i, obj in enumerate(scene.objects):
        classes[instance == i + 1] = SCENE_CLASSES.index(obj.shape)
    return image, classes, [obj.shape for obj in scene.objects]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_scores_match_a_hand_computed_example():
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    predicted = np.array([[0, 1, 1], [1, 2, 0]])
    confusion = confusion_matrix(predicted, truth, 3, 3).T  # rows: true class
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    scores = scores_from_confusion(np.pad(confusion, ((0, 3), (0, 3))))
    # background: 1 / 3, circle: 2 / 3, square: 1 / 2; absent classes do not enter the mean.
    assert scores["iou"]["background"] == pytest.approx(1 / 3)
    assert scores["iou"]["circle"] == pytest.approx(2 / 3)
    assert scores["iou"]["square"] == pytest.approx(1 / 2)
    assert np.isnan(scores["iou"]["heart"])
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)


def test_training_targets_are_the_renderers_shape_classes():
    from harness.toy.data import render_pool

    pool = render_pool("toy_gen", 6, workers=1)
    targets = semantic_labels(pool, np.arange(6)).numpy()
    for index in range(6):
        assert np.array_equal(targets[index], exact_classes("toy_gen", index)[1])


def test_shipped_weights_segment_held_out_renders(network):
    rendered = [exact_classes("toy_gen", index) for index in range(64)]
    images = np.stack([image for image, _, _ in rendered])
    truth = np.stack([classes for _, classes, _ in rendered])
    predicted = segment(network, images)
    assert predicted.shape == truth.shape
    ious = [iou(predicted == k, truth == k) for k in range(len(SCENE_CLASSES)) if (truth == k).any()]
    assert len(ious) == len(SCENE_CLASSES)  # 64 mixed scenes hold every shape
    assert np.mean(ious) >= 0.85
    assert sum(p.numel() for p in network.parameters()) * 4 < 1_000_000


def test_baseline_maps_the_shape_in_the_image_and_nothing_else(baseline):
    for index in range(8):
        image, classes, shapes = exact_classes("toy_gen", index, n_objects=1)
        absent = [s for s in SHAPES if s not in shapes]
        record = PromptRecord(f"r{index}", f"a {shapes[0]}", index, {"nouns": [shapes[0], *absent]})
        prediction = baseline.predict(record, Sample(image=image, meta={"words": [shapes[0], *absent, "red"]}))
        assert prediction.meta["words"] == [shapes[0], *absent, "red"]
        present = prediction.arrays[f"heatmap:{shapes[0]}"]
        assert present.dtype == np.float32 and present.shape == (32, 32)
        assert set(np.unique(present)) <= {0.0, 1.0}
        assert iou(present > 0, classes > 0) >= 0.8
        for word in [*absent, "red"]:
            assert not prediction.arrays[f"heatmap:{word}"].any(), (index, word)


def test_baseline_resizes_other_image_sizes(baseline):
    image, classes, shapes = exact_classes("toy_gen", 3, n_objects=1)
    large = image.repeat(2, axis=0).repeat(2, axis=1)
    record = PromptRecord("big", f"a {shapes[0]}", 3, {"nouns": shapes})
    heat = baseline.predict(record, Sample(image=large)).arrays[f"heatmap:{shapes[0]}"]
    assert heat.shape == (64, 64)
    assert iou(heat > 0, classes.repeat(2, axis=0).repeat(2, axis=1) > 0) >= 0.8


def test_missing_weights_name_the_file_and_the_command(tmp_path):
    from harness.registry import BASELINES

    for build in (lambda: load_segmenter(tmp_path / "nowhere"),
                  lambda: BASELINES.get("toy_segmenter")(None, weights=str(tmp_path / "nowhere"))):
        with pytest.raises(MissingWeightsError) as error:
            build()
        assert str(tmp_path / "nowhere" / WEIGHTS_FILE) in str(error.value)
        assert RETRAIN_COMMAND in str(error.value)


def test_truncated_weights_are_reported_not_loaded(tmp_path):
    data = (WEIGHTS / WEIGHTS_FILE).read_bytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(MissingWeightsError) as error:
        load_segmenter(tmp_path)
    assert str(tmp_path / WEIGHTS_FILE) in str(error.value) and RETRAIN_COMMAND in str(error.value)


def test_weights_of_another_network_are_reported(tmp_path):
    shutil.copy(WEIGHTS.parent / "evaluator" / "evaluator.safetensors", tmp_path / WEIGHTS_FILE)
    with pytest.raises(MissingWeightsError, match="do not fit"):
        load_segmenter(tmp_path)
