"""Image sets of ConceptAttention's zero-shot segmentation protocol (Helbling et al., ICML 2025).

- ``imagenet_segmentation``: ImageNet-Segmentation (Guillaumin et al., 2014; 4,276 images with
  foreground masks), read from ``dataset.path/gtsegs_ijcv.mat`` (MATLAB v7.3, read with h5py, laid
  out as in the evaluation code of Chefer et al. that ConceptAttention reuses: ``value/img`` and
  ``value/gt`` references). The target concept per image comes from ``params.class_names`` (a text
  file, one name per image in file order); without it every image's target is ``params.target``
  (default "object"). Images and masks are written once as PNGs under ``params.cache_dir``.
- ``voc_concepts``: PASCAL VOC 2012 segmentation (``dataset.path`` = the ``VOC2012`` folder with
  ``JPEGImages``, ``SegmentationClass`` and ``ImageSets/Segmentation/<split>.txt``). With
  ``params.single_class=true`` only images showing exactly one class are kept (binary protocol:
  that class vs the rest); otherwise every image, scored multi-class.

Every record is an image-set record (:mod:`harness.data.image_sets`: ``image_path``,
``label_path``, ``ignore_index``) with ``nouns`` = the concepts to map besides "background"
(the target class, or every class present), ``target`` / ``target_class`` (binary) and
``concept_classes`` (concept -> class id, "background" -> 0). The prompt, used for the one
transformer pass on the image, is ``"a photo of a <names>"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.data.image_sets import DEFAULT_CACHE, _finish, _params, _require_root, _seed_for
from harness.data.prompts import PromptRecord, PromptSet
from harness.errors import DataError

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
#: VOC's compound names as words a text encoder reads
VOC_WORDS = {"aeroplane": "airplane", "diningtable": "table", "motorbike": "motorbike", "pottedplant": "plant",
             "tvmonitor": "monitor"}


def _prompt(names: list[str]) -> str:
    return "a photo of a " + " and a ".join(names)


def build_voc_concepts(dataset_cfg: Any) -> PromptSet:
    """``dataset=voc_concepts dataset.path=VOC2012 [dataset.params.single_class=true]`` (see module docstring)."""
    params = _params(dataset_cfg)
    root = _require_root(dataset_cfg, "voc_concepts", "the PASCAL VOC 2012 folder (JPEGImages, SegmentationClass, ImageSets)")
    split = str(params.get("split", "val"))
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"{listing} does not exist: dataset.path must be the VOC2012 folder of the PASCAL VOC 2012 "
                        "release (ImageSets/Segmentation/<split>.txt, JPEGImages, SegmentationClass).")
    single = bool(params.get("single_class", False))
    records = []
    for index, image_id in enumerate(line.strip() for line in listing.read_text().splitlines() if line.strip()):
        image_path, label_path = root / "JPEGImages" / f"{image_id}.jpg", root / "SegmentationClass" / f"{image_id}.png"
        if not label_path.is_file():
            raise DataError(f"{label_path} (listed in {listing}) does not exist.")
        with Image.open(label_path) as pil:
            labels = np.asarray(pil)  # palette indices = class ids, 255 = border
        present = [int(c) for c in np.unique(labels) if 0 < c < len(VOC_CLASSES)]
        if not present or (single and len(present) != 1):
            continue
        words = [VOC_WORDS.get(VOC_CLASSES[c], VOC_CLASSES[c]) for c in present]
        meta: dict[str, Any] = {"image_path": str(image_path), "label_path": str(label_path), "ignore_index": 255,
                                "label_transform": "none", "num_classes": len(VOC_CLASSES), "nouns": words,
                                "concept_classes": {"background": 0, **dict(zip(words, present))}}
        if single:
            meta.update(target=words[0], target_class=present[0])
        records.append(PromptRecord(f"voc-{image_id}", _prompt(words), _seed_for(dataset_cfg.seed, index), meta))
    return _finish("voc_concepts", records, dataset_cfg, params, str(listing))


def build_imagenet_segmentation(dataset_cfg: Any) -> PromptSet:
    """``dataset=imagenet_segmentation dataset.path=DIR`` with ``DIR/gtsegs_ijcv.mat`` (see module docstring)."""
    params = _params(dataset_cfg)
    root = _require_root(dataset_cfg, "imagenet_segmentation", "the folder holding gtsegs_ijcv.mat")
    mat = root / str(params.get("file", "gtsegs_ijcv.mat"))
    if not mat.is_file():
        raise DataError(f"{mat} does not exist. ImageNet-Segmentation is the file gtsegs_ijcv.mat of Guillaumin et al. "
                        "(2014), as distributed with the evaluation code of Chefer et al.; put it in dataset.path.")
    try:
        import h5py
    except ImportError:
        raise DataError("Reading gtsegs_ijcv.mat (MATLAB v7.3) needs h5py: pip install h5py.") from None
    names = None
    if params.get("class_names"):
        names_path = Path(params["class_names"]).expanduser()
        if not names_path.is_file():
            raise DataError(f"dataset.params.class_names={names_path} does not exist (one class name per image, in order).")
        names = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
    cache = Path(params.get("cache_dir") or DEFAULT_CACHE / "imagenet_segmentation").expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    records = []
    limit = None if dataset_cfg.size is None else int(dataset_cfg.size)
    try:
        with h5py.File(mat, "r") as data:
            images, masks = data["value/img"], data["value/gt"]
            count = images.shape[0]
            if names is not None and len(names) != count:
                raise DataError(f"{params['class_names']} has {len(names)} names for {count} images.")
            for index in range(count if limit is None else min(limit, count)):
                image_path, label_path = cache / f"{index:05d}.png", cache / f"{index:05d}_mask.png"
                if not (image_path.is_file() and label_path.is_file()):
                    image = np.asarray(data[images[index, 0]]).transpose((2, 1, 0)).astype(np.uint8)
                    mask = np.asarray(data[masks[index, 0]]).transpose((1, 0)).astype(np.uint8)
                    Image.fromarray(image).save(image_path)
                    Image.fromarray((mask > 0).astype(np.uint8)).save(label_path)
                target = names[index] if names is not None else str(params.get("target", "object"))
                meta = {"image_path": str(image_path), "label_path": str(label_path), "ignore_index": 255,
                        "label_transform": "none", "num_classes": 2, "nouns": [target], "target": target,
                        "target_class": 1, "concept_classes": {"background": 0, target: 1}}
                records.append(PromptRecord(f"imagenet-seg-{index:05d}", _prompt([target]),
                                            _seed_for(dataset_cfg.seed, index), meta))
    except (OSError, KeyError) as error:
        raise DataError(f"{mat} is not the ImageNet-Segmentation file (value/img, value/gt): {error}") from None
    return _finish("imagenet_segmentation", records, dataset_cfg, params, str(mat))


def build_synthetic_concepts(dataset_cfg: Any) -> PromptSet:
    """``dataset=synthetic_concepts``: the ``synthetic_segments`` scenes as a concept set (smoke runs and
    tests): the colours present are the concepts, the first one the binary target. ``params.single_class``
    keeps one rectangle per scene."""
    from harness.data.image_sets import SYNTHETIC_PALETTE, build_synthetic_segments

    params = _params(dataset_cfg)
    single = bool(params.pop("single_class", True))
    scenes = build_synthetic_segments(_SceneConfig(dataset_cfg, {**params, "rectangles": 1 if single else 2}))
    names = [name for name, _ in SYNTHETIC_PALETTE]
    records = []
    for record in scenes.records:
        with Image.open(record.meta["label_path"]) as pil:
            present = [int(c) for c in np.unique(np.asarray(pil)) if c > 0]
        words = [names[c] for c in present]
        meta = {**record.meta, "nouns": words, "target": words[0], "target_class": present[0],
                "concept_classes": {"background": 0, **dict(zip(words, present))}}
        records.append(PromptRecord(record.id, _prompt(words), record.seed, meta))
    return _finish("synthetic_concepts", records, dataset_cfg, {**params, "single_class": single}, "synthetic scenes")


class _SceneConfig:
    """``dataset_cfg`` with other params (for the synthetic_segments builder)."""

    def __init__(self, dataset_cfg: Any, params: dict[str, Any]) -> None:
        self.path, self.size, self.seed, self.params = dataset_cfg.path, dataset_cfg.size, dataset_cfg.seed, params
