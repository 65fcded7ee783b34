"""Dataset options of ``dataset=coco_gen`` and ``dataset=unreal_gen`` (see harness/data/coco_gen.py)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import DatasetConfig, add_schema


@dataclass
class CocoGenDatasetConfig(DatasetConfig):
    """COCO-Gen: captions sampled from a COCO captions file (``path``) with ``seed``.

    ``path`` may also be a manifest built before (``harness build-prompts``) or a folder in
    the DAAM COCO-Gen release layout (one folder per image with ``prompt.txt`` and
    ``<word>.gt.png`` masks).
    """

    name: str = "coco_gen"
    size: int | None = 1000
    min_nouns: int = 1  #: keep only captions with at least this many nouns
    unique_images: bool = True  #: at most one caption per COCO image
    #: ground truth for the generated images: a COCO-format annotations file (images matched by
    #: file-name stem = record id) or a folder in the DAAM release layout; None: none attached
    ground_truth: str | None = None


@dataclass
class UnrealGenDatasetConfig(CocoGenDatasetConfig):
    """Unreal-Gen: COCO-Gen's captions with every noun swapped for a noun of a fixed vocabulary."""

    name: str = "unreal_gen"
    vocabulary: str | None = None  #: JSON file of [singular, plural] pairs; None: the shipped one


add_schema("dataset", "coco_gen_schema", CocoGenDatasetConfig)
add_schema("dataset", "unreal_gen_schema", UnrealGenDatasetConfig)
