"""Image sets: given images with ground-truth label maps, for methods that segment images.

An image set is an ordinary :class:`~harness.data.prompts.PromptSet` whose records carry, in
``meta``:

- ``image_path``: the RGB image (any format PIL reads), or ``renderer`` = the name of a renderer
  registered in ``harness.registry.RENDERERS`` (never code: ``toy_scene``) with ``renderer_args`` (a dict): a function returning a uint8 HxWx3 image (the toy world);
- ``label_path``: the ground-truth label map (PNG, one integer class id per pixel), or, for
  rendered scenes, ``renderer`` returning ``(image, labels)``;
- ``ignore_index``: the label value that marks unlabeled pixels (default 255);
- ``label_transform``: how file values become class ids: ``none``, ``reduce_zero_label``
  (ADE20K: 0 = "other" is ignored, 1..150 become 0..149) or ``cocostuff27`` (COCO-Stuff fine
  ids 0..181 mapped to the 27 coarse classes, ``datasets/cocostuff27/fine_to_coarse.csv``);
- ``num_classes``: the number of ground-truth classes.

The record's ``prompt`` is a neutral description; methods that segment given images take their
text condition from their own config (EmerDiff: the empty prompt), not from it.
Ground truth always comes back from :func:`load_record_labels` as int32 with -1 = ignore.

Builders (``dataset=`` names): ``synthetic_segments`` (flat-colour rectangles with exact label
maps; smoke runs and tests), ``ade20k_style`` (label PNGs from a folder) and ``cocostuff27``
(COCO-Stuff label maps, or COCO-format stuff + instance annotations rasterized with pycocotools).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness import REPO_ROOT
from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import DataError

log = logging.getLogger(__name__)

IGNORE = -1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
COCOSTUFF27_MAP = REPO_ROOT / "datasets" / "cocostuff27" / "fine_to_coarse.csv"
DEFAULT_CACHE = Path("results/cache/image_sets")


# ---------------------------------------------------------------------------------------------
# Reading a record's image and labels
# ---------------------------------------------------------------------------------------------
def load_record_image(record: PromptRecord) -> tuple[np.ndarray, list[str]]:
    """The record's image as uint8 HxWx3, and notes on any conversion made (e.g. RGBA -> RGB)."""
    meta = record.meta
    notes: list[str] = []
    if "image_path" in meta:
        path = Path(meta["image_path"])
        if not path.is_file():
            raise DataError(f"Image {path} of record {record.id!r} does not exist. Check the dataset path "
                            "(dataset.path=...) or rebuild the image set.")
        try:
            with Image.open(path) as pil:
                if pil.mode != "RGB":
                    notes.append(f"image {path.name} has mode {pil.mode}; converted to RGB")
                    log.info("record %s: %s", record.id, notes[-1])
                return np.asarray(pil.convert("RGB")).copy(), notes
        except OSError as error:
            raise DataError(f"Image {path} of record {record.id!r} cannot be read ({error}).") from None
    if "renderer" in meta:
        image, _ = _render(record)
        return image, notes
    raise DataError(f"Record {record.id!r} has no image: its meta needs image_path or renderer "
                    "(is dataset= an image set?).")


def load_record_labels(record: PromptRecord) -> np.ndarray:
    """Ground-truth class ids (int32 HxW), -1 where unlabeled."""
    meta = record.meta
    ignore_index = int(meta.get("ignore_index", 255))
    if "label_path" in meta:
        path = Path(meta["label_path"])
        if not path.is_file():
            raise DataError(f"Label map {path} of record {record.id!r} does not exist.")
        with Image.open(path) as pil:
            raw = np.asarray(pil).astype(np.int64)
        if raw.ndim != 2:
            raise DataError(f"Label map {path} must be single-channel (one class id per pixel), got shape {raw.shape}.")
    elif "renderer" in meta:
        _, raw = _render(record)
        raw = np.asarray(raw).astype(np.int64)
    else:
        raise DataError(f"Record {record.id!r} has no ground truth: its meta needs label_path or renderer.")
    return transform_labels(raw, meta.get("label_transform", "none"), ignore_index)


def transform_labels(raw: np.ndarray, transform: str, ignore_index: int = 255) -> np.ndarray:
    """File values -> class ids (int32, -1 = ignore); see the module docstring for ``transform``."""
    raw = np.asarray(raw).astype(np.int64)
    labels = raw.copy()
    invalid = raw == ignore_index
    if transform == "reduce_zero_label":
        invalid |= raw == 0
        labels = raw - 1
    elif transform == "cocostuff27":
        table = cocostuff27_table()
        inside = (raw >= 0) & (raw < len(table))
        labels = np.where(inside, table[np.clip(raw, 0, len(table) - 1)], -1)
        invalid |= ~inside | (labels < 0)
    elif transform != "none":
        raise DataError(f"Unknown label_transform {transform!r} (known: none, reduce_zero_label, cocostuff27).")
    labels[invalid] = IGNORE
    return labels.astype(np.int32)


@lru_cache(maxsize=1)
def cocostuff27_table() -> np.ndarray:
    """fine id (0..181) -> coarse id (0..26); -1 for ids with no class."""
    if not COCOSTUFF27_MAP.is_file():
        raise DataError(f"The COCO-Stuff 171->27 class map {COCOSTUFF27_MAP} is missing (git checkout -- datasets/).")
    table = np.full(182, -1, dtype=np.int64)
    with open(COCOSTUFF27_MAP, newline="") as handle:
        for row in csv.DictReader(handle):
            table[int(row["fine_id"])] = int(row["coarse_id"])
    return table


def cocostuff27_names() -> list[str]:
    """The 27 coarse class names, by coarse id."""
    names: dict[int, str] = {}
    with open(COCOSTUFF27_MAP, newline="") as handle:
        for row in csv.DictReader(handle):
            names[int(row["coarse_id"])] = row["coarse_name"]
    return [names[i] for i in range(len(names))]


def _render(record: PromptRecord) -> tuple[np.ndarray, np.ndarray]:
    from harness.registry import RENDERERS

    target = str(record.meta["renderer"])
    if target not in RENDERERS:  # a data file names a registered renderer, never code to import and call
        raise DataError(f"Record {record.id!r} names renderer {target!r}, which is not a registered renderer "
                        f"(known: {', '.join(RENDERERS.names())}); a data file cannot name code. Register a "
                        "renderer in harness.registry.RENDERERS and name it.")
    function = RENDERERS.get(target)
    result = function(**dict(record.meta.get("renderer_args", {})))
    image, labels = result if isinstance(result, tuple) else (result, None)
    if labels is None:
        raise DataError(f"Renderer {target!r} returned no label map for record {record.id!r}.")
    return np.asarray(image, dtype=np.uint8), np.asarray(labels)




def _seed_for(base_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1)[0])


def _params(dataset_cfg: Any) -> dict[str, Any]:
    params = getattr(dataset_cfg, "params", None) or {}
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(params):
            return OmegaConf.to_container(params, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(params)


def _finish(name: str, records: list[PromptRecord], dataset_cfg: Any, params: dict[str, Any], source: str) -> PromptSet:
    if not records:
        raise DataError(f"The image set {name!r} from {source} is empty.")
    if dataset_cfg.size is not None:
        records = records[: int(dataset_cfg.size)]
    return validate_prompt_set(PromptSet(name, records, builder=name, params=params), source)


# ---------------------------------------------------------------------------------------------
# synthetic_segments: flat-colour rectangles with exact label maps
# ---------------------------------------------------------------------------------------------
#: class id -> (name, RGB); class 0 is the background.
SYNTHETIC_PALETTE: list[tuple[str, tuple[int, int, int]]] = [
    ("background", (235, 235, 235)),
    ("red", (215, 40, 40)),
    ("green", (40, 170, 60)),
    ("blue", (40, 80, 215)),
    ("yellow", (235, 205, 40)),
    ("purple", (140, 50, 170)),
]


def render_synthetic_scene(seed: int, height: int = 32, width: int = 32, rectangles: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One scene: a background and up to ``rectangles`` non-overlapping axis-aligned rectangles,
    each a different class (colour). Returns (uint8 HxWx3 image, int32 HxW labels)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), dtype=np.int32)
    classes = rng.permutation(np.arange(1, len(SYNTHETIC_PALETTE)))[:rectangles]
    # Split the image into vertical bands so rectangles never overlap (exact, simple labels).
    bands = np.linspace(0, width, len(classes) + 1).astype(int)
    for class_id, left, right in zip(classes, bands[:-1], bands[1:]):
        band = right - left
        rect_w = int(rng.integers(max(2, band // 2), band + 1))
        rect_h = int(rng.integers(max(2, height // 3), height - height // 8 + 1))
        x0 = left + int(rng.integers(0, band - rect_w + 1))
        y0 = int(rng.integers(0, height - rect_h + 1))
        labels[y0:y0 + rect_h, x0:x0 + rect_w] = class_id
    colours = np.array([rgb for _, rgb in SYNTHETIC_PALETTE], dtype=np.uint8)
    return colours[labels], labels


def build_synthetic_segments(dataset_cfg: Any) -> PromptSet:
    """``dataset=synthetic_segments``: deterministic flat-colour scenes written as PNG files.

    Options (``dataset.params``): ``height``/``width`` (32), ``rectangles`` per scene (2).
    Files go to ``dataset.path`` (default ``results/cache/image_sets/synthetic_segments/<hash>``);
    existing identical files are reused.
    """
    params = {"height": 32, "width": 32, "rectangles": 2, **_params(dataset_cfg)}
    size = int(dataset_cfg.size) if dataset_cfg.size is not None else 8
    spec = {"seed": int(dataset_cfg.seed), "size": size, **params}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(dataset_cfg.path) if dataset_cfg.path else DEFAULT_CACHE / "synthetic_segments" / digest
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(size):
        seed = _seed_for(dataset_cfg.seed, index)
        image, labels = render_synthetic_scene(seed, int(params["height"]), int(params["width"]), int(params["rectangles"]))
        image_path = folder / f"scene-{index:04d}.png"
        label_path = folder / f"scene-{index:04d}.labels.png"
        _write_png_if_changed(image_path, image)
        _write_png_if_changed(label_path, labels.astype(np.uint8))
        records.append(PromptRecord(
            f"synthetic-{index:04d}", "flat colour rectangles on a plain background", seed,
            {"image_path": str(image_path.resolve()), "label_path": str(label_path.resolve()),
             "ignore_index": 255, "label_transform": "none", "num_classes": len(SYNTHETIC_PALETTE),
             "class_names": [name for name, _ in SYNTHETIC_PALETTE]},
        ))
    return validate_prompt_set(PromptSet("synthetic_segments", records, builder="synthetic_segments",
                                         params={**spec, "path": str(folder)}), "the synthetic_segments builder")


def _write_png_if_changed(path: Path, array: np.ndarray) -> None:
    if path.is_file():
        with Image.open(path) as pil:
            if np.array_equal(np.asarray(pil), array):
                return
    temporary = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(temporary, format="PNG")
    temporary.replace(path)


# ---------------------------------------------------------------------------------------------
# ade20k_style: images and label PNGs from folders
# ---------------------------------------------------------------------------------------------
def build_ade20k_style(dataset_cfg: Any) -> PromptSet:
    """``dataset=ade20k_style dataset.path=ROOT``: ``ROOT/<images_dir>/*.jpg`` with label PNGs of the
    same stem in ``ROOT/<labels_dir>`` (ADEChallengeData2016 layout by default: 0 = other/ignored,
    1..150 = classes, ``reduce_zero_label``)."""
    params = {"images_dir": "images/validation", "labels_dir": "annotations/validation",
              "reduce_zero_label": True, "num_classes": 150, **_params(dataset_cfg)}
    root = _require_root(dataset_cfg, "ade20k_style",
                         "the ADE20K folder (ADEChallengeData2016: images/validation/*.jpg and annotations/validation/*.png)")
    images_dir, labels_dir = root / params["images_dir"], root / params["labels_dir"]
    for folder, what in ((images_dir, "images"), (labels_dir, "label maps")):
        if not folder.is_dir():
            raise DataError(f"The {what} folder {folder} does not exist (dataset=ade20k_style, dataset.path={root}). "
                            f"Set dataset.params.{'images_dir' if what == 'images' else 'labels_dir'}=... relative to dataset.path.")
    records = []
    for index, image_path in enumerate(sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)):
        label_path = labels_dir / f"{image_path.stem}.png"
        if not label_path.is_file():
            raise DataError(f"Image {image_path} has no label map {label_path}.")
        records.append(PromptRecord(image_path.stem, "a photo", _seed_for(dataset_cfg.seed, index),
                                    {"image_path": str(image_path.resolve()), "label_path": str(label_path.resolve()),
                                     "ignore_index": 255,
                                     "label_transform": "reduce_zero_label" if params["reduce_zero_label"] else "none",
                                     "num_classes": int(params["num_classes"])}))
    return _finish("ade20k_style", records, dataset_cfg, params, str(images_dir))


def _require_root(dataset_cfg: Any, name: str, what: str) -> Path:
    if not dataset_cfg.path:
        raise DataError(f"dataset={name} needs dataset.path=<{what}>. No such data ships with the harness.")
    root = Path(dataset_cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset.path={root} does not exist; it should be {what}.")
    return root


# ---------------------------------------------------------------------------------------------
# cocostuff27: COCO-Stuff with the 27 coarse classes
# ---------------------------------------------------------------------------------------------
def build_cocostuff27(dataset_cfg: Any) -> PromptSet:
    """``dataset=cocostuff27 dataset.path=COCO_ROOT``: COCO images with COCO-Stuff labels, scored on
    the 27 coarse classes.

    Ground truth, either (a) ``params.labels_dir``: COCO-Stuff ``stuffthingmaps`` PNGs (fine ids,
    255 unlabeled), or (b) ``params.stuff_annotations`` (+ ``params.instance_annotations``):
    COCO-format JSON (``stuff_val2017.json``, ``instances_val2017.json``), rasterized with
    pycocotools into ``params.cache_dir`` (stuff first, things painted over it; "other" (183) is
    unlabeled). ``params.image_list``: optional text file of image ids (e.g. STEGO's curated
    ``Coco164kFull_Stuff_Coarse_7.txt``, the usual 2,175-image val subset).
    """
    params = {"images_dir": "val2017", "labels_dir": None, "stuff_annotations": None,
              "instance_annotations": None, "image_list": None, "cache_dir": None, **_params(dataset_cfg)}
    root = _require_root(dataset_cfg, "cocostuff27", "the COCO root folder holding val2017/ and the COCO-Stuff annotations")
    images_dir = root / params["images_dir"]
    if not images_dir.is_dir():
        raise DataError(f"The COCO images folder {images_dir} does not exist (set dataset.params.images_dir).")
    wanted = None
    if params["image_list"]:
        list_path = root / params["image_list"]
        if not list_path.is_file():
            raise DataError(f"dataset.params.image_list={list_path} does not exist.")
        wanted = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    if params["labels_dir"]:
        labels_dir = root / params["labels_dir"]
        if not labels_dir.is_dir():
            raise DataError(f"The COCO-Stuff label folder {labels_dir} does not exist (stuffthingmaps_trainval2017/val2017).")
    elif params["stuff_annotations"]:
        labels_dir = _rasterize_coco(root, params)
    else:
        raise DataError("dataset=cocostuff27 needs dataset.params.labels_dir=<stuffthingmaps folder> or "
                        "dataset.params.stuff_annotations=<stuff_val2017.json> (+ instance_annotations).")
    stems = wanted if wanted is not None else sorted(p.stem for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    records = []
    for index, stem in enumerate(stems):
        image_path = images_dir / f"{stem}.jpg"
        label_path = labels_dir / f"{stem}.png"
        if not image_path.is_file() or not label_path.is_file():
            raise DataError(f"COCO-Stuff image {image_path} or its label map {label_path} is missing.")
        records.append(PromptRecord(stem, "a photo", _seed_for(dataset_cfg.seed, index),
                                    {"image_path": str(image_path.resolve()), "label_path": str(label_path.resolve()),
                                     "ignore_index": 255, "label_transform": "cocostuff27", "num_classes": 27,
                                     "class_names": cocostuff27_names()}))
    return _finish("cocostuff27", records, dataset_cfg, params, str(images_dir))


def _rasterize_coco(root: Path, params: dict[str, Any]) -> Path:
    """COCO-format stuff (+ instance) annotations -> fine-id label PNGs (pycocotools)."""
    from pycocotools.coco import COCO

    files = [root / params["stuff_annotations"]]
    if params["instance_annotations"]:
        files.append(root / params["instance_annotations"])
    for path in files:
        if not path.is_file():
            raise DataError(f"COCO annotation file {path} does not exist.")
    digest = hashlib.sha256(json.dumps([str(p) for p in files] + [p.stat().st_size for p in files]).encode()).hexdigest()[:12]
    out = Path(params["cache_dir"]) if params["cache_dir"] else DEFAULT_CACHE / "cocostuff27" / digest
    out.mkdir(parents=True, exist_ok=True)
    apis = [COCO(str(path)) for path in files]
    for image_id, info in apis[0].imgs.items():
        target = out / f"{Path(info['file_name']).stem}.png"
        if target.is_file():
            continue
        labels = np.full((info["height"], info["width"]), 255, dtype=np.uint8)
        for api in apis:  # stuff first, then things over it
            for ann in api.loadAnns(api.getAnnIds(imgIds=[image_id], iscrowd=None)):
                category = int(ann["category_id"])
                if not 1 <= category <= 182:  # 183 = "other": left unlabeled
                    continue
                labels[api.annToMask(ann).astype(bool)] = category - 1
        _write_png_if_changed(target, labels)
    return out
