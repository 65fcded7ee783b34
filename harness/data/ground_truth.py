"""Per-word ground-truth masks for generated images.

Interface: a ground truth is any object with ``masks(record, sample) -> dict[word, bool HxW]``
(:class:`GroundTruth`), returning a mask for every word annotated in that image. A noun of the
prompt that is missing from the dict, or whose mask is empty, is *absent* from the image: the
metrics count it apart and do not score it (as the DAAM paper does).

Where a record's ground truth lives is said by its ``meta["ground_truth"]``, a small dict with a
``format`` key; :class:`RecordGroundTruth` reads it and dispatches:

``{"format": "coco", "path": FILE, "image_id": N}`` or ``{..., "file_stem": ID}``
    A COCO instances-format JSON (``images``, ``annotations``, ``categories``) whose category
    *names* are the words. Masks are polygons or RLE (compressed or not), decoded with
    pycocotools; several annotations of one word are merged (union). The image is found by
    ``image_id`` or else by the stem of its ``file_name`` (``"1234.png"`` <-> ``file_stem``
    ``"1234"``). An annotation without a usable segmentation (empty polygon list, malformed
    RLE) gives no mask: its word is reported absent, and the problem is kept in ``problems``.

``{"format": "daam_png", "path": FOLDER}``
    The DAAM COCO-Gen release layout: one folder per generated image holding
    ``<word>.gt.png`` files, the mask in the alpha channel (alpha > 0 is inside, as in
    ``daam.evaluate.load_mask``). The word is the file name before ``.gt.png``, lower case.

``{"format": "inline", "size": [H, W], "masks": {word: RLE}}``
    Small masks carried in the manifest itself (COCO compressed RLE, ``counts`` as text).

A different source (the toy world's annotator) plugs in by implementing ``masks`` and being
named in a metric's or baseline's ``ground_truth`` option as ``"module:attribute"`` (a class
or factory called with no arguments).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.registry import load_target
from harness.store.samples import Sample

log = logging.getLogger(__name__)

MASK_SUFFIX = ".gt.png"


@runtime_checkable
class GroundTruth(Protocol):
    """Anything that gives the annotated words' masks of one generated image."""

    def masks(self, record: PromptRecord, sample: Sample | None) -> dict[str, np.ndarray]:
        """word (lower case) -> bool mask (H, W) of the generated image."""
        ...


# --------------------------------------------------------------------------------------------
# COCO format
# --------------------------------------------------------------------------------------------

class CocoGroundTruth:
    """Word masks from one COCO instances-format annotations file (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        from pycocotools.coco import COCO

        self.path = Path(path).expanduser()
        document = _read_json(self.path, "COCO annotations file")
        missing = [key for key in ("images", "annotations", "categories") if not isinstance(document.get(key), list)]
        if missing:
            raise DataError(f"{self.path} is not a COCO instances-format file: it lacks the list(s) {missing} "
                            "(it needs \"images\", \"annotations\" and \"categories\"; category names are the words).")
        self.coco = COCO()
        self.coco.dataset = document
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        self.by_stem = {Path(str(image.get("file_name", ""))).stem: image["id"] for image in document["images"]}
        self.problems: list[str] = []

    def image_id(self, pointer: dict[str, Any], record: PromptRecord) -> int:
        if "image_id" in pointer:
            image_id = pointer["image_id"]
        else:
            stem = str(pointer.get("file_stem", record.id))
            if stem not in self.by_stem:
                raise DataError(f"{self.path} has no image whose file name stem is {stem!r} (record {record.id!r}).")
            image_id = self.by_stem[stem]
        if image_id not in self.coco.imgs:
            raise DataError(f"{self.path} has no image with id {image_id!r} (record {record.id!r}).")
        return image_id

    def masks_for_image(self, image_id: int) -> dict[str, np.ndarray]:
        image = self.coco.imgs[image_id]
        height, width = int(image["height"]), int(image["width"])
        masks: dict[str, np.ndarray] = {}
        for annotation in self.coco.imgToAnns.get(image_id, []):
            word = str(self.coco.cats[annotation["category_id"]]["name"]).strip().lower()
            mask = self._decode(annotation, height, width)
            if mask is None:
                continue
            masks[word] = masks[word] | mask if word in masks else mask
        return masks

    def _decode(self, annotation: dict[str, Any], height: int, width: int) -> np.ndarray | None:
        from pycocotools import mask as mask_utils

        segmentation = annotation.get("segmentation")
        try:
            if isinstance(segmentation, list):
                polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
                if not polygons:
                    raise ValueError("no polygon with at least three points")
                rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            elif isinstance(segmentation, dict) and "counts" in segmentation:
                rle = segmentation
                if isinstance(rle["counts"], list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(rle, *rle["size"])
                elif isinstance(rle["counts"], str):
                    rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            else:
                raise ValueError("no segmentation (polygons or RLE)")
            mask = mask_utils.decode(rle).astype(bool)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            self.problems.append(f"annotation {annotation.get('id')} of image {annotation.get('image_id')}: {error}")
            log.warning("%s: annotation %s has no usable mask (%s); its word counts as absent.",
                        self.path, annotation.get("id"), error)
            return None
        if mask.shape != (height, width):
            self.problems.append(f"annotation {annotation.get('id')}: mask {mask.shape} != image {(height, width)}")
            return None
        return mask

    def masks(self, record: PromptRecord, sample: Sample | None = None) -> dict[str, np.ndarray]:
        pointer = record.meta.get("ground_truth") or {}
        return self.masks_for_image(self.image_id(pointer, record))


# --------------------------------------------------------------------------------------------
# DAAM release layout (PNG alpha)
# --------------------------------------------------------------------------------------------

def read_alpha_mask(path: str | Path) -> np.ndarray:
    """A mask stored in a PNG's alpha channel (alpha > 0 is inside); grey or RGB PNGs use their value."""
    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            channel = np.asarray(image.convert("RGBA"))[..., 3]
        else:
            channel = np.asarray(image.convert("L"))
    return channel > 0


def read_daam_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """``word -> mask`` of one image folder of the DAAM release layout (``<word>.gt.png`` files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"Ground-truth folder {folder} does not exist (DAAM release layout: one folder per image "
                        f"with <word>{MASK_SUFFIX} files).")
    masks: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob(f"*{MASK_SUFFIX}")):
        word = path.name[: -len(MASK_SUFFIX)].strip().lower()
        try:
            mask = read_alpha_mask(path)
        except OSError as error:
            raise DataError(f"{path} is not a readable PNG ({error}).") from None
        masks[word] = masks[word] | mask if word in masks else mask
    return masks


class DaamReleaseGroundTruth:
    """Word masks from ``meta["ground_truth"]["path"]`` (or ``root/<record id>``) in the DAAM layout."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else None

    def masks(self, record: PromptRecord, sample: Sample | None = None) -> dict[str, np.ndarray]:
        pointer = record.meta.get("ground_truth") or {}
        folder = pointer.get("path") or (self.root / record.id if self.root else None)
        if folder is None:
            raise DataError(f"Record {record.id!r} has no ground-truth folder (meta.ground_truth.path).")
        return read_daam_folder(folder)


# --------------------------------------------------------------------------------------------
# Inline RLE (small sets, tests)
# --------------------------------------------------------------------------------------------

def encode_inline(masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """``meta["ground_truth"]`` for masks carried in the manifest (COCO compressed RLE as text)."""
    from pycocotools import mask as mask_utils

    if not masks:
        return {"format": "inline", "size": None, "masks": {}}
    shapes = {m.shape for m in masks.values()}
    if len(shapes) != 1:
        raise ValueError(f"all masks of one image must have one shape, got {sorted(shapes)}")
    encoded = {}
    for word, mask in masks.items():
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        encoded[word.lower()] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
    return {"format": "inline", "size": list(next(iter(shapes))), "masks": encoded}


def decode_inline(pointer: dict[str, Any]) -> dict[str, np.ndarray]:
    from pycocotools import mask as mask_utils

    out = {}
    for word, rle in (pointer.get("masks") or {}).items():
        out[word.lower()] = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)
    return out


# --------------------------------------------------------------------------------------------
# Dispatch on the record's pointer
# --------------------------------------------------------------------------------------------

class RecordGroundTruth:
    """The default ground truth: follows each record's ``meta["ground_truth"]`` pointer.

    Readers of COCO files are cached by path, so a file is parsed once per run.
    """

    FORMATS = ("coco", "daam_png", "inline")

    def __init__(self) -> None:
        self._coco: dict[str, CocoGroundTruth] = {}

    def masks(self, record: PromptRecord, sample: Sample | None = None) -> dict[str, np.ndarray]:
        pointer = record.meta.get("ground_truth")
        if not pointer:
            raise DataError(f"Record {record.id!r} has no ground truth (meta.ground_truth). Build the prompt set "
                            "with dataset.ground_truth=FILE|DIR, or from a DAAM release folder.")
        kind = pointer.get("format")
        if kind == "coco":
            path = str(Path(pointer["path"]).expanduser())
            if path not in self._coco:
                self._coco[path] = CocoGroundTruth(path)
            return self._coco[path].masks(record, sample)
        if kind == "daam_png":
            return read_daam_folder(pointer["path"])
        if kind == "inline":
            return decode_inline(pointer)
        raise DataError(f"Record {record.id!r}: unknown ground-truth format {kind!r}; known: {', '.join(self.FORMATS)}.")

    @property
    def problems(self) -> list[str]:
        return [problem for reader in self._coco.values() for problem in reader.problems]


def resolve_ground_truth(spec: Any = None) -> GroundTruth:
    """A ground truth from an option: None -> :class:`RecordGroundTruth`; ``"module:attr"`` ->
    that class or factory, called with no arguments; an object with ``masks`` -> itself."""
    if spec is None or spec == "record":
        return RecordGroundTruth()
    if isinstance(spec, str):
        spec = load_target(spec, "ground_truth", "'record'")()
    if not isinstance(spec, GroundTruth):
        raise ConfigError(f"ground_truth {spec!r} has no masks(record, sample) method.")
    return spec


def noun_lemmas(record: PromptRecord) -> dict[str, str]:
    """noun -> lemma from ``meta["nouns"]``/``meta["noun_lemmas"]`` (empty when they do not align:
    both lists hold unique words, so two nouns with one lemma make them differ in length)."""
    meta = record.meta if isinstance(record.meta, dict) else {}
    nouns, lemmas = meta.get("nouns") or [], meta.get("noun_lemmas") or []
    if len(nouns) != len(lemmas):
        return {}
    return {str(noun).lower(): str(lemma).lower() for noun, lemma in zip(nouns, lemmas, strict=True)}


def lookup(masks: dict[str, np.ndarray], word: str, lemma: str | None = None) -> np.ndarray | None:
    """The mask of ``word`` (case-insensitive), else of its ``lemma``; None when absent or empty."""
    for key in (word.lower(), (lemma or "").lower()):
        mask = masks.get(key) if key else None
        if mask is not None and mask.any():
            return mask
    return None


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"The {what} {path} does not exist.")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"The {what} {path} is not valid JSON ({error}).") from None
    if not isinstance(document, dict):
        raise DataError(f"The {what} {path} must hold a JSON object.")
    return document
