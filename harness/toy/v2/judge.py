"""The toy v2 judge: a CenterNet-style detector that reads every object, and the caption check.

The network maps a 64x64 image to a 16x16 grid (stride 4) with, per cell, one centre heatmap
per shape (CenterNet: a Gaussian around each instance centre, penalty-reduced focal loss) and
colour, texture and size logits read at the centre cell. `detect` decodes it into a list of
:class:`Detection` (shape, colour, texture, size, centre). `judge_caption` then checks a caption
against the detections group by group: the count, each instance's spoken attributes (attribute
binding is per instance: "two striped red circles" needs both circles striped and red) and the
spatial relations between single-instance groups, from the detected centres with the world's
rule (`RELATION_MARGIN`). It trains on the `judge_train` stream only.

    python -m harness.toy.v2.judge --out weights/toy_v2/judge   # train and save
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from harness.toy.v2.instrument_common import (
    batch_generators,
    conv_block,
    decode_peaks,
    degrade,
    focal_loss,
    gaussian_heatmap,
    instrument_pool,
    load_network,
    start_training,
    to_tensor,
    train,
    training_parser,
)
from harness.toy.v2.world import (
    BACKGROUND_COLOURS,
    IMAGE_SIZE,
    NOUN_OF,
    NUMERALS,
    OBJECT_COLOURS,
    RELATIONS,
    SHAPES,
    SIZES,
    TEXTURES,
    _relation_holds,
)

NAME = "judge"
STRIDE = 4
GRID = IMAGE_SIZE // STRIDE
HEAT_SIGMA = 1.0  # cells
#: Heatmap probability at which a peak is an instance (fixed before validation).
PEAK_THRESHOLD = 0.3


class JudgeNet(nn.Module):
    """Float NCHW images in [-1, 1] (64x64) -> dict of (N, C, 16, 16) logits: `heat` (one channel
    per shape), `colour`, `texture`, `size`.

    Fill textures have periods of 3.5-5.5 px, which two stride-2 stages alias away, so a second
    branch stays at full resolution (dilated, receptive field ~11 px) and is average-pooled to
    the grid before the heads; a first version without it read textures right for about half of
    the instances on test renders.
    """

    def __init__(self, width: int = 24, texture_width: int = 16):
        super().__init__()
        self.stem = conv_block(3, width)
        self.texture_branch = nn.Sequential(conv_block(width, texture_width), conv_block(texture_width, texture_width, dilation=2))
        self.body = nn.Sequential(
            conv_block(width, width, stride=2), conv_block(width, 2 * width, stride=2),
            # Dilations widen the receptive field past a large object (radius 11.5 px, ~3 cells).
            conv_block(2 * width, 2 * width), conv_block(2 * width, 2 * width, dilation=2),
            conv_block(2 * width, 2 * width, dilation=4), conv_block(2 * width, 2 * width),
        )
        self.fuse = conv_block(2 * width + texture_width, 2 * width)
        self.heads = nn.ModuleDict({
            "heat": nn.Conv2d(2 * width, len(SHAPES), 1), "colour": nn.Conv2d(2 * width, len(OBJECT_COLOURS), 1),
            "texture": nn.Conv2d(2 * width, len(TEXTURES), 1), "size": nn.Conv2d(2 * width, len(SIZES), 1),
        })
        nn.init.constant_(self.heads["heat"].bias, -2.19)  # CenterNet's prior: sigmoid = 0.1

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = self.stem(images)
        texture = F.avg_pool2d(self.texture_branch(stem), STRIDE)
        features = self.fuse(torch.cat([self.body(stem), texture], 1))
        return {k: head(features) for k, head in self.heads.items()}


@dataclass(frozen=True)
class Detection:
    """One detected instance; `centre` is (x, y) in pixels (pixel i's centre at coordinate i)."""

    shape: str
    colour: str
    texture: str
    size: str
    centre: tuple[float, float]
    score: float


def load_judge(directory: str | Path | None = None) -> JudgeNet:
    """The trained judge network from `directory` (default `weights/toy_v2/judge`)."""
    return load_network(NAME, JudgeNet, directory)


def decode(outputs: dict[str, torch.Tensor], threshold: float = PEAK_THRESHOLD) -> list[list[Detection]]:
    """Detections per image from the network's outputs (logits). A peak within one cell of a
    stronger peak of another shape is the same object read twice and is dropped; the centre is
    the heat-weighted mean of the peak's 3x3 neighbourhood."""
    heat = torch.sigmoid(outputs["heat"])
    result = []
    for n in range(heat.shape[0]):
        kept: list[Detection] = []
        cells: list[tuple[int, int]] = []
        for channel, row, column, score in decode_peaks(heat[n], threshold):
            if any(abs(row - r) <= 1 and abs(column - c) <= 1 for r, c in cells):
                continue
            r0, r1, c0, c1 = max(row - 1, 0), min(row + 2, GRID), max(column - 1, 0), min(column + 2, GRID)
            window = heat[n, channel, r0:r1, c0:c1]
            ys, xs = torch.meshgrid(torch.arange(r0, r1).float(), torch.arange(c0, c1).float(), indexing="ij")
            weight = window / window.sum()
            # Cell c holds pixel coordinates [4c - 0.5, 4c + 3.5): its centre is 4c + 1.5.
            x, y = float((weight * xs).sum()) * STRIDE + 1.5, float((weight * ys).sum()) * STRIDE + 1.5
            read = {k: int(outputs[k][n, :, row, column].argmax()) for k in ("colour", "texture", "size")}
            kept.append(Detection(SHAPES[channel], OBJECT_COLOURS[read["colour"]], TEXTURES[read["texture"]],
                                  SIZES[read["size"]], (x, y), score))
            cells.append((row, column))
        result.append(kept)
    return result


@torch.no_grad()
def detect(model: JudgeNet, images_uint8: np.ndarray, batch_size: int = 64) -> list[list[Detection]]:
    """Detections for uint8 NHWC 64x64 images."""
    images_uint8 = np.asarray(images_uint8, dtype=np.uint8)
    if images_uint8.ndim != 4 or images_uint8.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise HarnessError(f"the toy v2 judge reads uint8 images (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got {images_uint8.shape}")
    out: list[list[Detection]] = []
    for start in range(0, len(images_uint8), batch_size):
        out += decode(model(to_tensor(images_uint8[start:start + batch_size])))
    return out


# ----------------------------------------------------------------------------- captions


@dataclass(frozen=True)
class AskedGroup:
    """What a caption asks of one group; None for an attribute it does not speak."""

    shape: str
    count: int
    colour: str | None = None
    texture: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class AskedCaption:
    groups: tuple[AskedGroup, ...]
    relations: tuple[str, ...]  # relations[i] links groups i and i + 1
    background: str | None = None


_COUNT_WORDS = {"a": 1, "an": 1, **{word: n for n, word in NUMERALS.items()}}


def parse_caption(text: str) -> AskedCaption:
    """Read a caption of the v2 grammar (`harness.toy.v2.world.caption`) into asked groups."""
    words = text.lower().split()

    def fail(reason: str) -> HarnessError:
        return HarnessError(f"cannot read toy v2 caption {text!r}: {reason}")

    groups: list[AskedGroup] = []
    relations: list[str] = []
    background = None
    i = 0
    while i < len(words):
        if words[i] not in _COUNT_WORDS:
            raise fail(f"expected a determiner or numeral at word {i + 1} ({words[i]!r})")
        count = _COUNT_WORDS[words[i]]
        i += 1
        spoken: dict[str, str] = {}
        while i < len(words) and words[i] not in NOUN_OF:
            word = words[i]
            kind = ("size" if word in SIZES else "texture" if word in TEXTURES else "colour" if word in OBJECT_COLOURS
                    else None)
            if kind is None or kind in spoken:
                raise fail(f"unexpected word {word!r} in a noun phrase")
            spoken[kind] = word
            i += 1
        if i == len(words):
            raise fail("a noun phrase without a noun")
        groups.append(AskedGroup(NOUN_OF[words[i]], count, **spoken))
        i += 1
        if i == len(words):
            break
        if words[i] == "on":  # "on a <colour> background" ends the caption
            tail = words[i:]
            if len(tail) != 4 or tail[1] not in ("a", "an") or tail[2] not in BACKGROUND_COLOURS or tail[3] != "background":
                raise fail(f"expected 'on a <colour> background', got {' '.join(tail)!r}")
            background = tail[2]
            break
        for relation in RELATIONS:
            parts = relation.split()
            if words[i:i + len(parts)] == parts:
                relations.append(relation)
                i += len(parts)
                break
        else:
            raise fail(f"expected a relation ({', '.join(RELATIONS)}) at word {i + 1} ({words[i]!r})")
    if not groups:
        raise fail("no noun phrase")
    if len(relations) != len(groups) - 1:
        raise fail("a relation without a following noun phrase")
    return AskedCaption(tuple(groups), tuple(relations), background)


@dataclass
class Verdict:
    """The judge's reading of one image against one caption."""

    correct: bool
    count_correct: list[bool] = field(default_factory=list)  # per asked group
    binding_correct: list[bool] = field(default_factory=list)  # per group: every instance has the spoken attributes
    relations_correct: list[bool | None] = field(default_factory=list)  # None: "and" (nothing to check)
    extra_shapes: list[str] = field(default_factory=list)  # detected shapes the caption does not mention


def judge_caption(caption: AskedCaption | str, detections: list[Detection], image_size: int = IMAGE_SIZE) -> Verdict:
    """Whether `detections` show what `caption` asks, group by group (one group per shape).

    A group is right when exactly `count` instances of its shape are detected and every one of
    them has each spoken attribute (colour, texture, size). A spatial relation is right when both
    of its groups are right and the single instances' centres satisfy it. Objects the caption
    does not mention are listed (`extra_shapes`) but do not make the verdict wrong: a caption
    need not name everything in an image.
    """
    asked = parse_caption(caption) if isinstance(caption, str) else caption
    count_ok, binding_ok, centre_of = [], [], []
    for group in asked.groups:
        found = [d for d in detections if d.shape == group.shape]
        count_ok.append(len(found) == group.count)
        binding_ok.append(bool(found) and all(
            (group.colour is None or d.colour == group.colour) and (group.texture is None or d.texture == group.texture)
            and (group.size is None or d.size == group.size) for d in found))
        centre_of.append(found[0].centre if len(found) == 1 else None)
    relations_ok: list[bool | None] = []
    for i, relation in enumerate(asked.relations):
        if relation == "and":
            relations_ok.append(None)
            continue
        both = count_ok[i] and count_ok[i + 1] and centre_of[i] is not None and centre_of[i + 1] is not None
        relations_ok.append(bool(both and _relation_holds(relation, centre_of[i], centre_of[i + 1], image_size)))
    mentioned = {g.shape for g in asked.groups}
    extra = sorted({d.shape for d in detections} - mentioned)
    correct = all(count_ok) and all(binding_ok) and all(r is not False for r in relations_ok)
    return Verdict(correct, count_ok, binding_ok, relations_ok, extra)


def detections_match_truth(detections: list[Detection], truth: list[tuple[str, str, str, str]]) -> bool:
    """Whether the detected (shape, colour, texture, size) multiset equals the truth's exactly."""
    return Counter((d.shape, d.colour, d.texture, d.size) for d in detections) == Counter(truth)


# ----------------------------------------------------------------------------- training


def targets(pool, index: np.ndarray) -> dict[str, torch.Tensor]:
    heat = np.stack([gaussian_heatmap(pool.centre[n][pool.shape[n] >= 0], pool.shape[n][pool.shape[n] >= 0],
                                      len(SHAPES), GRID, STRIDE, HEAT_SIGMA) for n in index])
    valid = pool.shape[index] >= 0
    cells = np.clip((pool.centre[index] // STRIDE).astype(np.int64), 0, GRID - 1)
    return {"heat": torch.from_numpy(heat), "valid": torch.from_numpy(valid), "cells": torch.from_numpy(cells),
            **{k: torch.from_numpy(getattr(pool, k)[index].astype(np.int64)) for k in ("colour", "texture", "size")}}


def loss(model: JudgeNet, images: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(images)
    total = focal_loss(out["heat"], target["heat"])
    batch, slot = torch.nonzero(target["valid"], as_tuple=True)
    x, y = target["cells"][batch, slot, 0], target["cells"][batch, slot, 1]
    # Attributes are read at the peak cell, which may land a cell off the centre: supervise the
    # centre's 3x3 neighbourhood (nine times the signal of the centre cell alone).
    for k in ("colour", "texture", "size"):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = (y + dy).clamp(0, GRID - 1), (x + dx).clamp(0, GRID - 1)
                total = total + F.cross_entropy(out[k][batch, :, yy, xx], target[k][batch, slot]) / 9
    return total


def main(argv: list[str] | None = None) -> int:
    """Train the judge on `judge_train` renders and save it."""
    parser = training_parser(NAME, __doc__, steps=800, batch_size=24, learning_rate=0.004, pool_size=6000, width=24, can_continue=False)
    parser.add_argument("--texture-width", type=int, default=16)
    args = parser.parse_args(argv)
    start_training(args)
    model = JudgeNet(args.width, args.texture_width)
    pool = instrument_pool("judge_train", args.pool_size)

    def batch_loss(step: int) -> torch.Tensor:
        rng, generator = batch_generators(args.seed, step)
        index = rng.integers(0, len(pool), args.batch_size)
        return loss(model, degrade(to_tensor(pool.images[index]), generator), targets(pool, index))

    config = {"network": {"width": args.width, "texture_width": args.texture_width}, "peak_threshold": PEAK_THRESHOLD,
              "training": {"stream": "judge_train", "pool_size": args.pool_size, "batch_size": args.batch_size,
                           "seed": args.seed, "threads": args.threads}}
    train(model, batch_loss, args.steps, args.learning_rate, NAME, args.out, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
