"""``detectron2``: an optional adapter for detectron2 instance segmenters (Mask2Former, QueryInst, ...).

The DAAM paper compares with Mask2Former and QueryInst (MMDetection models). detectron2 is not a
dependency of the harness (it is not on PyPI as a wheel); when it cannot be imported this
baseline raises :class:`BaselineUnavailableError`, a :class:`HarnessError` whose message says
how to install it, so a run that lists it stops with that one line (or skips it, where the
runner catches this error).

Options: ``config_file`` (a detectron2 YAML config), ``weights`` (a local ``.pth``/``.pkl``
checkpoint), ``setup`` (optional ``"module:function"`` called with the config before it is
merged, e.g. Mask2Former's ``add_maskformer2_config``), ``score_threshold``. Instances of the
COCO class a word names (synonym table) are merged into that word's 0/1 map, as for ``maskrcnn``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from harness.baselines.segmentation import WordMapBaseline, detections_to_heatmaps, image_of, words_of
from harness.data.coco80 import coco80_classes
from harness.data.prompts import PromptRecord
from harness.errors import BaselineUnavailableError, ConfigError, MissingWeightsError
from harness.registry import load_target
from harness.store.samples import Sample

INSTALL_HINT = ("Install detectron2 into this environment (see https://detectron2.readthedocs.io/en/latest/tutorials/"
                "install.html; e.g. `pip install 'git+https://github.com/facebookresearch/detectron2.git'`), and for "
                "Mask2Former its project code, then list baseline.detectron2 again.")




def detectron2_available() -> bool:
    """Whether ``import detectron2`` would succeed."""
    return importlib.util.find_spec("detectron2") is not None


class Detectron2Segmenter(WordMapBaseline):
    """detectron2 ``DefaultPredictor`` instance masks -> word maps (see the module docstring)."""

    name = "detectron2"
    version = "1"

    def __init__(self, model=None, config_file: str | None = None, weights: str | None = None,
                 setup: str | None = None, score_threshold: float = 0.5, device: str | None = None) -> None:
        if not detectron2_available():
            raise BaselineUnavailableError(f"The detectron2 baseline (Mask2Former/QueryInst) is skipped: detectron2 is "
                                           f"not importable here. {INSTALL_HINT}")
        if not config_file:
            raise ConfigError("baseline.detectron2 needs config_file=<detectron2 YAML config>.")
        if not weights or not Path(weights).expanduser().is_file():
            raise MissingWeightsError(f"baseline.detectron2 weights {weights!r} not found: give a local checkpoint "
                                      "file with baseline.detectron2.weights=PATH (downloads are not made).")
        super().__init__(model, config_file=config_file, weights=weights, setup=setup,
                         score_threshold=float(score_threshold))
        from detectron2.config import get_cfg
        from detectron2.engine import DefaultPredictor

        cfg = get_cfg()
        if setup:
            load_target(setup, "baseline.detectron2.setup")(cfg)
        cfg.merge_from_file(config_file)
        cfg.MODEL.WEIGHTS = str(Path(weights).expanduser())
        cfg.MODEL.DEVICE = device or str(getattr(model, "device", "cpu"))
        cfg.freeze()
        self.predictor = DefaultPredictor(cfg)
        self.score_threshold = float(score_threshold)
        # detectron2's COCO models use contiguous ids 0..79 in COCO's order.
        self.categories = coco80_classes()

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        image = image_of(record, sample)
        # DefaultPredictor takes BGR (cfg.INPUT.FORMAT) uint8 HxWx3.
        instances: Any = self.predictor(np.ascontiguousarray(image[..., ::-1]))["instances"].to("cpu")
        masks = instances.pred_masks.numpy().astype(np.float32) if len(instances) else np.zeros((0, *image.shape[:2]), np.float32)
        maps = detections_to_heatmaps(words_of(record, sample), self.categories, instances.pred_classes.numpy(),
                                      instances.scores.numpy(), masks, self.score_threshold)
        return self.prediction(record, sample, maps)
