"""The toy v2 annotator: masks of generated images, without the judge network.

A U-Net (`instrument_common.UNet`) trained on the `annotator_train` stream with three outputs per
pixel, in the manner of Panoptic-DeepLab: the semantic class (background or one of the seven
shapes; a shape names a group, so a class mask is a group's mask), an instance-centre heatmap
(a Gaussian of 2 px at each instance centre) and the offset from the pixel to its instance's
centre. `annotate` returns the semantic map and an instance map: the centre peaks are the
instances, and every object pixel joins the peak of its own class nearest to the centre it
votes for. `word_masks` turns them into the masks of a caption's words by the world's rules
(numeral, adjectives and noun: their group's union; background words: label 0).

    python -m harness.toy.v2.annotator --out weights/toy_v2/annotator   # train and save
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.toy.v2.instrument_common import (
    SEMANTIC_CLASSES,
    UNet,
    batch_generators,
    continue_from,
    decode_peaks,
    degrade,
    focal_loss,
    instrument_pool,
    load_network,
    semantic_loss,
    start_training,
    to_tensor,
    train,
    training_parser,
)
from harness.toy.v2.world import BACKGROUND_COLOURS, IMAGE_SIZE, NOUN_OF

NAME = "annotator"
CENTRE_SIGMA = 2.0  # pixels
OFFSET_SCALE = 16.0  # offsets are predicted in units of 16 px
#: Centre-heatmap probability at which a peak is an instance, and the peak window (fixed before validation).
PEAK_THRESHOLD = 0.3
PEAK_KERNEL = 7


class AnnotatorNet(UNet):
    """(N, 8 + 1 + 2, H, W): semantic logits, centre-heat logit, centre offset (x, y) / 16."""

    def __init__(self, width: int = 12):
        super().__init__(len(SEMANTIC_CLASSES) + 3, width)


@dataclass
class Annotation:
    semantic: np.ndarray  # (H, W) int64 index into SEMANTIC_CLASSES
    instances: np.ndarray  # (H, W) int64: 0 background, k + 1 instance k (order: peak strength)
    instance_class: list[int]  # class of instance k

    def class_mask(self, shape: str) -> np.ndarray:
        return self.semantic == SEMANTIC_CLASSES.index(shape)


def load_annotator(directory: str | Path | None = None) -> AnnotatorNet:
    """The trained annotator network from `directory` (default `weights/toy_v2/annotator`)."""
    return load_network(NAME, AnnotatorNet, directory)


def group_instances(semantic: np.ndarray, centre_heat: np.ndarray, offsets: np.ndarray,
                    threshold: float = PEAK_THRESHOLD, kernel: int = PEAK_KERNEL) -> tuple[np.ndarray, list[int]]:
    """Instance map from a semantic map (H, W), centre probabilities (H, W) and offsets (2, H, W) in
    pixels. Peaks on object pixels are instances; each object pixel joins the nearest peak of its
    class to `pixel + offset`; a class with pixels but no peak becomes one instance."""
    height, width = semantic.shape
    peaks = [(r, c) for _, r, c, _ in decode_peaks(torch.from_numpy(centre_heat[None]).float(), threshold, kernel)
             if semantic[r, c] != 0]
    instances = np.zeros((height, width), np.int64)
    classes: list[int] = []
    ys, xs = np.mgrid[0:height, 0:width]
    vote_x, vote_y = xs + offsets[0], ys + offsets[1]
    for cls in np.unique(semantic[semantic != 0]):
        mine = [(r, c) for r, c in peaks if semantic[r, c] == cls] or [None]
        where = semantic == cls
        if mine == [None]:
            classes.append(int(cls))
            instances[where] = len(classes)
            continue
        centres = np.array(mine, float)  # (P, 2) rows, columns
        distance = (vote_y[where][:, None] - centres[None, :, 0]) ** 2 + (vote_x[where][:, None] - centres[None, :, 1]) ** 2
        nearest = distance.argmin(axis=1)
        first = len(classes)
        classes.extend([int(cls)] * len(mine))
        instances[where] = first + 1 + nearest
    # Peaks that won no pixel leave gaps: renumber 1..K.
    used = [k for k in range(1, len(classes) + 1) if (instances == k).any()]
    remap = np.zeros(len(classes) + 1, np.int64)
    remap[used] = np.arange(1, len(used) + 1)
    return remap[instances], [classes[k - 1] for k in used]


@torch.no_grad()
def annotate(model: AnnotatorNet, images_uint8: np.ndarray, batch_size: int = 64) -> list[Annotation]:
    """Semantic and instance masks of uint8 NHWC 64x64 images."""
    images_uint8 = np.asarray(images_uint8, dtype=np.uint8)
    if images_uint8.ndim != 4 or images_uint8.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise HarnessError(f"the toy v2 annotator reads uint8 images (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got {images_uint8.shape}")
    out = []
    n_classes = len(SEMANTIC_CLASSES)
    for start in range(0, len(images_uint8), batch_size):
        raw = model(to_tensor(images_uint8[start:start + batch_size]))
        semantic = raw[:, :n_classes].argmax(1).numpy()
        heat = torch.sigmoid(raw[:, n_classes]).numpy()
        offsets = raw[:, n_classes + 1:].numpy() * OFFSET_SCALE
        for n in range(len(semantic)):
            instances, classes = group_instances(semantic[n], heat[n], offsets[n])
            out.append(Annotation(semantic[n], instances, classes))
    return out


def word_masks(annotation: Annotation, prompt: str) -> list[np.ndarray | None]:
    """Per word of a v2 caption, its mask in `annotation` (None for words that denote nothing):
    a noun phrase's numeral, adjectives and noun denote its shape's class mask; the background
    colour and "background" denote the background."""
    words = prompt.lower().split()
    masks: list[np.ndarray | None] = [None] * len(words)
    phrase_start = 0
    for i, word in enumerate(words):
        if word in NOUN_OF:
            mask = annotation.class_mask(NOUN_OF[word])
            for j in range(phrase_start, i + 1):
                if words[j] not in ("a", "an"):
                    masks[j] = mask
            phrase_start = i + 1
        elif word in ("and", "to", "the", "left", "right", "of", "above", "below", "on"):
            phrase_start = i + 1
        elif word == "background" or (word in BACKGROUND_COLOURS and i + 1 < len(words) and words[i + 1] == "background"):
            masks[i] = annotation.semantic == 0
    return masks


# ----------------------------------------------------------------------------- training


def targets(pool, index: np.ndarray) -> dict[str, torch.Tensor]:
    size = pool.images.shape[1]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    heat = np.zeros((len(index), size, size), np.float32)
    offsets = np.zeros((len(index), 2, size, size), np.float32)
    for row, n in enumerate(index):
        labels = pool.instance_labels[n]
        for k in np.nonzero(pool.shape[n] >= 0)[0]:
            cx, cy = pool.centre[n, k]
            peak = np.zeros((size, size), np.float32)
            peak[min(int(round(cy)), size - 1), min(int(round(cx)), size - 1)] = 1.0
            gauss = np.exp(-((xs - round(cx)) ** 2 + (ys - round(cy)) ** 2) / (2 * CENTRE_SIGMA**2))
            heat[row] = np.maximum(heat[row], np.maximum(gauss, peak))
            where = labels == k + 1
            offsets[row, 0][where] = (cx - xs[where]) / OFFSET_SCALE
            offsets[row, 1][where] = (cy - ys[where]) / OFFSET_SCALE
    return {"semantic": torch.from_numpy(pool.semantic[index].astype(np.int64)), "heat": torch.from_numpy(heat),
            "offsets": torch.from_numpy(offsets)}


def loss(model: AnnotatorNet, images: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
    raw = model(images)
    n_classes = len(SEMANTIC_CLASSES)
    foreground = (target["semantic"] > 0).float()[:, None]
    offset_error = (F.l1_loss(raw[:, n_classes + 1:], target["offsets"], reduction="none") * foreground).sum()
    # The centre heatmap's focal loss is large early on; a tenth of it lets the classes learn first.
    return (semantic_loss(raw[:, :n_classes], target["semantic"]) + 0.1 * focal_loss(raw[:, n_classes], target["heat"])
            + offset_error / foreground.sum().clamp(min=1))


def main(argv: list[str] | None = None) -> int:
    """Train the annotator on `annotator_train` renders and save it."""
    parser = training_parser(NAME, __doc__, steps=800, batch_size=16, learning_rate=0.004, pool_size=4000, width=16)
    args = parser.parse_args(argv)
    start_training(args)
    model = AnnotatorNet(args.width)
    earlier = continue_from(args, NAME, AnnotatorNet, model)
    pool = instrument_pool("annotator_train", args.pool_size)

    def batch_loss(step: int) -> torch.Tensor:
        rng, generator = batch_generators(args.seed, step)
        index = rng.integers(0, len(pool), args.batch_size)
        return loss(model, degrade(to_tensor(pool.images[index]), generator), targets(pool, index))

    config = {"network": {"width": args.width}, "peak_threshold": PEAK_THRESHOLD, "peak_kernel": PEAK_KERNEL,
              "training": {"stream": "annotator_train", "pool_size": args.pool_size, "batch_size": args.batch_size,
                           "seed": args.seed, "threads": args.threads, "continued_from": earlier}}
    train(model, batch_loss, args.steps, args.learning_rate, NAME, args.out, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
