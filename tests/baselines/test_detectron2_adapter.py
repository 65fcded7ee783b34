"""The detectron2 adapter's working path, against a stand-in ``detectron2`` package with its interface.

detectron2 is not installable here (no wheel on PyPI), so a small module with the same surface
(``detectron2.config.get_cfg`` -> a config node with ``merge_from_file``/``freeze`` and
``MODEL.WEIGHTS``/``MODEL.DEVICE``; ``detectron2.engine.DefaultPredictor(cfg)(bgr_image)`` ->
``{"instances": Instances}`` with ``pred_masks``, ``pred_classes``, ``scores``, ``to()``, ``len()``)
is injected through ``sys.modules``. Its predictor finds the pixels that are red in the image it
is given, read as BGR (as detectron2's default ``INPUT.FORMAT``), so the test also checks the
adapter's channel order.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.data.coco80 import coco80_classes
from harness.data.prompts import PromptRecord
from harness.store.samples import Sample

DOG, CAT = coco80_classes().index("dog"), coco80_classes().index("cat")


class StandInConfig(SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(MODEL=SimpleNamespace(WEIGHTS="", DEVICE="cuda"), merged=[], frozen=False, set_up=False)

    def merge_from_file(self, path: str) -> None:
        assert not self.frozen
        self.merged.append(path)

    def freeze(self) -> None:
        self.frozen = True


class StandInInstances:
    def __init__(self, masks: torch.Tensor, classes: list[int], scores: list[float]) -> None:
        self.pred_masks = masks
        self.pred_classes = torch.tensor(classes, dtype=torch.int64)
        self.scores = torch.tensor(scores, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.scores)

    def to(self, device: str) -> StandInInstances:
        assert device == "cpu"
        return self


class StandInPredictor:
    """Instance 1: the red pixels (class dog, score 0.9); instance 2: the whole image (class cat, score 0.3)."""

    configs: list = []

    def __init__(self, cfg: StandInConfig) -> None:
        assert cfg.frozen
        self.configs.append(cfg)

    def __call__(self, bgr: np.ndarray) -> dict:
        assert bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.flags["C_CONTIGUOUS"]
        red = (bgr[..., 2] > 128) & (bgr[..., 0] < 128)
        masks = torch.from_numpy(np.stack([red, np.ones_like(red)]))
        return {"instances": StandInInstances(masks, [DOG, CAT], [0.9, 0.3])}


@pytest.fixture
def stand_in_detectron2(monkeypatch):
    package = types.ModuleType("detectron2")
    package.__spec__ = importlib.machinery.ModuleSpec("detectron2", None, is_package=True)
    config = types.ModuleType("detectron2.config")
    config.get_cfg = StandInConfig
    engine = types.ModuleType("detectron2.engine")
    engine.DefaultPredictor = StandInPredictor
    setup = types.ModuleType("stand_in_mask2former")
    setup.add_config = lambda cfg: setattr(cfg, "set_up", True)
    for name, module in [("detectron2", package), ("detectron2.config", config), ("detectron2.engine", engine),
                         ("stand_in_mask2former", setup)]:
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(StandInPredictor, "configs", [])
    return StandInPredictor


def test_adapter_turns_instances_into_word_maps(stand_in_detectron2, tmp_path):
    from harness.baselines.base import build_baselines
    from harness.baselines.detectron2_adapter import Detectron2Segmenter, detectron2_available

    assert detectron2_available()
    weights = tmp_path / "model_final.pkl"
    weights.write_bytes(b"weights")
    [baseline] = build_baselines({"detectron2": {"config_file": "mask2former.yaml", "weights": str(weights),
                                                 "setup": "stand_in_mask2former:add_config", "device": "cpu"}}, None)
    assert isinstance(baseline, Detectron2Segmenter)
    [cfg] = stand_in_detectron2.configs
    assert cfg.merged == ["mask2former.yaml"] and cfg.set_up and cfg.frozen
    assert cfg.MODEL.WEIGHTS == str(weights) and cfg.MODEL.DEVICE == "cpu"

    image = np.zeros((6, 8, 3), np.uint8)
    image[1:4, 2:6] = (220, 10, 10)  # a red block (RGB)
    image[4:, :2] = (10, 10, 220)  # a blue block: what a predictor reading RGB as BGR would call red
    record = PromptRecord("r0", "a dog next to a cat and a lamp", 0, {"nouns": ["dog", "cat", "lamp"]})
    prediction = baseline.predict(record, Sample(image=image))
    expected = np.zeros((6, 8), np.float32)
    expected[1:4, 2:6] = 1.0
    np.testing.assert_array_equal(prediction.arrays["heatmap:dog"], expected)  # RGB -> BGR handled
    np.testing.assert_array_equal(prediction.arrays["heatmap:cat"], np.zeros((6, 8)))  # score 0.3 < 0.5
    np.testing.assert_array_equal(prediction.arrays["heatmap:lamp"], np.zeros((6, 8)))  # not a COCO class
    assert prediction.meta["words"] == ["dog", "cat", "lamp"] and prediction.meta["baseline"] == "detectron2"
    assert baseline.params()["score_threshold"] == 0.5

    lenient = Detectron2Segmenter(None, config_file="c.yaml", weights=str(weights), score_threshold=0.2)
    np.testing.assert_array_equal(lenient.predict(record, Sample(image=image)).arrays["heatmap:cat"], np.ones((6, 8)))


def test_adapter_names_missing_weights_and_config(stand_in_detectron2, tmp_path):
    from harness.baselines.detectron2_adapter import Detectron2Segmenter
    from harness.errors import ConfigError, MissingWeightsError

    with pytest.raises(ConfigError, match="config_file"):
        Detectron2Segmenter(None, weights=str(tmp_path / "w.pkl"))
    with pytest.raises(MissingWeightsError, match="w.pkl"):
        Detectron2Segmenter(None, config_file="c.yaml", weights=str(tmp_path / "w.pkl"))
