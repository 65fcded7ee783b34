"""``maskrcnn``: torchvision's Mask R-CNN (ResNet-50-FPN, COCO) as a supervised word segmenter.

Each word is mapped to a COCO-80 class with the synonym table (harness/data/coco80_synonyms.json);
its mask is the union of the instance masks of that class scoring >= ``score_threshold``
(instance masks binarised at 0.5, torchvision's convention), stored as a 0/1 map at the image
size. Words naming no COCO class get an empty map (so they score IoU 0 under ``miou``, as a
closed-vocabulary segmenter should). The DAAM paper's Mask R-CNN used a ResNet-101 backbone
(MMDetection); torchvision ships ResNet-50-FPN, so the numbers are comparable in kind only.

Weights come from a local file only (torchvision's ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``,
loaded with ``torch.load(weights_only=True)``): ``weights=PATH``, else ``weights/`` in the
repository, else torch's hub checkpoint folder. ``weights=None`` (or ``"random"``) builds the
same network with random weights: for tests only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from harness import REPO_ROOT
from harness.baselines.segmentation import WordMapBaseline, detections_to_heatmaps, image_of, words_of
from harness.data.prompts import PromptRecord
from harness.errors import MissingWeightsError
from harness.store.samples import Sample

log = logging.getLogger(__name__)

WEIGHTS_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"
DEFAULT_WEIGHTS = "default"


def weight_candidates(weights: str) -> list[Path]:
    """Where the weights are looked for, in order."""
    if weights != DEFAULT_WEIGHTS:
        return [Path(weights).expanduser()]
    import torch

    return [REPO_ROOT / "weights" / WEIGHTS_FILE, Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE]


def find_weights(weights: str) -> Path:
    """The weights file, or a :class:`MissingWeightsError` naming it, where it looked, and how to get it."""
    candidates = weight_candidates(weights)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    places = "\n".join(f"  - {c}" for c in candidates)
    raise MissingWeightsError(
        f"Mask R-CNN weights {WEIGHTS_FILE} were not found. Looked in:\n{places}\n"
        f"Provide them: on a machine with network access download {WEIGHTS_URL} and copy it to "
        f"{REPO_ROOT / 'weights' / WEIGHTS_FILE} (or anywhere, with baseline.maskrcnn.weights=PATH)."
    )


def build_maskrcnn(weights: str | None, min_size: int, max_size: int) -> Any:
    """The torchvision network with COCO weights from a local file (random when ``weights`` is None)."""
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    network = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                    min_size=min_size, max_size=max_size)
    if weights is None:
        log.warning("maskrcnn: random weights (weights=None); use this for tests only.")
    else:
        path = find_weights(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            network.load_state_dict(state)
        except (RuntimeError, OSError, ValueError) as error:
            raise MissingWeightsError(f"{path} is not a usable {WEIGHTS_FILE} state dict ({error}). "
                                      f"Download it again from {WEIGHTS_URL}.") from None
    return network.eval()


def coco_category_names() -> list[str]:
    """torchvision's 91-entry COCO category list (index = label; 'N/A' for unused ids)."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    return list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


class MaskRCNN(WordMapBaseline):
    """Supervised baseline: Mask R-CNN instance masks, COCO class -> word by the synonym table."""

    name = "maskrcnn"
    version = "1"

    def __init__(self, model=None, weights: str | None = DEFAULT_WEIGHTS, score_threshold: float = 0.5,
                 min_size: int = 800, max_size: int = 1333, device: str | None = None) -> None:
        random_weights = weights is None or weights == "random"
        super().__init__(model, weights=None if random_weights else str(weights), score_threshold=float(score_threshold),
                         min_size=int(min_size), max_size=int(max_size))
        import torch

        self.score_threshold = float(score_threshold)
        self.network = build_maskrcnn(None if random_weights else str(weights), int(min_size), int(max_size))
        self.device = torch.device(device) if device else getattr(model, "device", None) or torch.device("cpu")
        self.network.to(self.device)
        self.categories = coco_category_names()

    @staticmethod
    def check_available(weights: str | None = DEFAULT_WEIGHTS) -> None:
        """The weight file exists (a MissingWeightsError naming where it looked), nothing loaded."""
        if not (weights is None or weights == "random"):
            find_weights(str(weights))

    def detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """labels, scores, (N, 4) xyxy boxes and (N, H, W) soft masks for one uint8 RGB image."""
        import torch

        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div(255.0).to(self.device)
        with torch.inference_mode():
            output = self.network([tensor])[0]
        return {"labels": output["labels"].cpu().numpy(), "scores": output["scores"].cpu().numpy(),
                "masks": output["masks"][:, 0].cpu().numpy(), "boxes": output["boxes"].cpu().numpy()}

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        image = image_of(record, sample)
        detections = self.detect(image)
        masks = detections["masks"]
        if masks.shape[0] == 0:
            masks = np.zeros((0, *image.shape[:2]), np.float32)
        maps = detections_to_heatmaps(words_of(record, sample), self.categories, detections["labels"],
                                      detections["scores"], masks, self.score_threshold)
        return self.prediction(record, sample, maps, detections=int((detections["scores"] >= self.score_threshold).sum()))
