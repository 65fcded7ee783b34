"""The toy segmenter: a small supervised semantic segmentation net, the toy world's Mask R-CNN.

DAAM's paper compares its word maps with a supervised segmenter; in the toy world that role is
played by this net, which labels every pixel of a 32x32 image with one of
``harness.toy.world.SCENE_CLASSES`` (background or one of the five shapes). It is
hand-written because no library ships a segmenter sized for 32x32 toy images (torchvision's
are built and pretrained for ImageNet/COCO-sized photographs). Like the evaluator it trains on
renders degraded like generated images (``harness.toy.evaluator.degrade``), from the
``judge_train`` split, which holds every (colour, shape) pair, so that toy_unreal objects are
not out of distribution for it.

    harness toy segmenter --out weights/toy/segmenter   # train, score and save
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.overlap import confusion_matrix
from harness.toy.fit import fit, load_weights
from harness.toy.splits import render_toy_scene
from harness.toy.world import SCENE_CLASSES

WEIGHTS_FILE = "segmenter.safetensors"
METRICS_FILE = "metrics.json"
RETRAIN_COMMAND = "harness toy segmenter --out weights/toy/segmenter"
INPUT_SIZE = 32


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )


class ToySegmenter(nn.Module):
    """A three-level U-Net: float NCHW images in [-1, 1] -> (N, 6, H, W) class logits.

    Two poolings give the 8x8 bottleneck a receptive field wider than the largest object, so a
    pixel's shape class is decided from the whole shape; the skip connections keep the edges.
    H and W must be multiples of 4.
    """

    classes = SCENE_CLASSES

    def __init__(self, width: int = 16):
        super().__init__()
        self.encoder1 = _conv_block(3, width)
        self.encoder2 = _conv_block(width, 2 * width)
        self.bottleneck = _conv_block(2 * width, 4 * width)
        self.decoder2 = _conv_block(4 * width + 2 * width, 2 * width)
        self.decoder1 = _conv_block(2 * width + width, width)
        self.head = nn.Conv2d(width, len(SCENE_CLASSES), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits over SCENE_CLASSES."""
        skip1 = self.encoder1(images)
        skip2 = self.encoder2(F.max_pool2d(skip1, 2))
        deep = self.bottleneck(F.max_pool2d(skip2, 2))
        up2 = self.decoder2(torch.cat([F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=False), skip2], 1))
        up1 = self.decoder1(torch.cat([F.interpolate(up2, scale_factor=2.0, mode="bilinear", align_corners=False), skip1], 1))
        return self.head(up1)


def semantic_labels(pool, index: np.ndarray) -> torch.Tensor:
    """(len(index), H, W) int64 class maps (index into SCENE_CLASSES) from a ScenePool's instance labels."""
    # Instance id i + 1 is object i; its class is its shape index + 1 (0 stays background).
    lookup = np.zeros((len(index), pool.shape.shape[1] + 1), np.int64)
    lookup[:, 1:] = pool.shape[index].astype(np.int64) + 1
    instance = pool.labels[index].astype(np.int64)
    return torch.from_numpy(np.take_along_axis(lookup, instance.reshape(len(index), -1), axis=1).reshape(instance.shape))


def train_segmenter(pool, out_dir: Path, steps: int = 1500, batch_size: int = 32, learning_rate: float = 3e-3,
                    seed: int = 0) -> ToySegmenter:
    """Train on a ScenePool (renders degraded like generations) and save ``segmenter.safetensors`` in ``out_dir``."""
    from harness.toy.autoencoder import images_to_tensor
    from harness.toy.evaluator import degrade

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ToySegmenter()

    def batch_loss(step: int) -> torch.Tensor:
        index = rng.integers(0, len(pool), batch_size)
        images = images_to_tensor(pool.images[index])
        # A quarter of each batch stays clean, so exact renders are in distribution too.
        degraded = degrade(images, generator)
        keep_clean = torch.rand(batch_size, generator=generator) < 0.25
        images = torch.where(keep_clean[:, None, None, None], images, degraded)
        return F.cross_entropy(model(images), semantic_labels(pool, index))

    return fit(model, batch_loss, steps, learning_rate, "segmenter", Path(out_dir) / WEIGHTS_FILE)


def load_segmenter(directory: Path) -> ToySegmenter:
    """Load the segmenter from ``directory``; a missing or unreadable file raises :class:`MissingWeightsError`."""
    return load_weights(ToySegmenter(), Path(directory) / WEIGHTS_FILE, "segmenter", RETRAIN_COMMAND)


@torch.no_grad()
def segment(model: ToySegmenter, images_uint8: np.ndarray) -> np.ndarray:
    """(N, H, W) int64 class maps (index into SCENE_CLASSES) for uint8 NHWC images of any size.

    Images that are not 32x32 are resized to 32x32 for the net (antialiased bilinear), and the
    prediction is resized back with nearest neighbours.
    """
    from harness.toy.autoencoder import images_to_tensor

    images_uint8 = np.asarray(images_uint8)
    height, width = images_uint8.shape[1:3]
    images = images_to_tensor(np.ascontiguousarray(images_uint8))
    if (height, width) != (INPUT_SIZE, INPUT_SIZE):
        images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    classes = model(images).argmax(dim=1)
    if (height, width) != (INPUT_SIZE, INPUT_SIZE):
        classes = F.interpolate(classes[:, None].float(), size=(height, width), mode="nearest")[:, 0].long()
    return classes.numpy()


def scores_from_confusion(confusion: np.ndarray) -> dict[str, object]:
    """Pixel accuracy, per-class IoU (pixels pooled over the set) and their mean over SCENE_CLASSES.

    ``confusion`` is :func:`harness.overlap.confusion_matrix` (either orientation); the
    scores are the unsupervised-segmentation metrics' with the identity matching (segment k = class k).
    """
    from harness.overlap import matched_counts, scores_from_counts

    confusion = np.asarray(confusion)
    scores = scores_from_counts(*matched_counts(confusion, np.arange(len(confusion))), int(confusion.sum()))
    return {"pixel_accuracy": scores["pixel_accuracy"],
            "iou": {name: float(value) for name, value in zip(SCENE_CLASSES, scores["iou"])},
            "miou": scores["miou"]}


def held_out_scores(model: ToySegmenter, split: str = "toy_gen", n: int = 500, degraded: bool = False,
                    seed: int = 1) -> dict[str, object]:
    """Scores against the renderer's exact labels on scenes 0..n-1 of ``split`` (1-3 objects).

    Degraded images go through ``degrade`` (seeded by ``seed``) and are quantised to uint8, as a
    generated image would be, before they are segmented.
    """
    from harness.toy.autoencoder import images_to_tensor
    from harness.toy.evaluator import degrade

    rendered = [render_toy_scene(split, i) for i in range(n)]
    images = np.stack([image for image, _ in rendered])
    truth = np.stack([labels for _, labels in rendered])
    if degraded:
        tensor = degrade(images_to_tensor(images), torch.Generator().manual_seed(seed))
        images = ((tensor.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    predicted = np.concatenate([segment(model, images[i : i + 100]) for i in range(0, n, 100)])
    return {"split": split, "n_images": n, "degraded": degraded, **scores_from_confusion(confusion_matrix(predicted, truth, len(SCENE_CLASSES), len(SCENE_CLASSES)).T)}


def main(argv: list[str] | None = None) -> int:
    """Train the segmenter, score it on held-out renders and save weights and ``metrics.json``."""
    from harness.toy.data import load_or_render_pool

    parser = argparse.ArgumentParser(prog="harness toy segmenter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("weights/toy/segmenter"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--split", default="judge_train", help="training split (default: judge_train, every pair)")
    parser.add_argument("--pool-size", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pool = load_or_render_pool(args.split, args.pool_size, Path("results/toy_train/data"), workers=args.threads)
    start = time.time()
    model = train_segmenter(pool, args.out, steps=args.steps, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, seed=args.seed)
    metrics = {
        "training": {"split": args.split, "pool_size": args.pool_size, "steps": args.steps,
                     "batch_size": args.batch_size, "learning_rate": args.learning_rate, "seed": args.seed,
                     "seconds": round(time.time() - start, 1),
                     "parameters": sum(p.numel() for p in model.parameters())},
        "note": "IoU per class pools the pixels of all images; miou is their mean over the 6 classes.",
        "held_out": [held_out_scores(model, split, degraded=degraded)
                     for split in ("toy_gen", "toy_unreal") for degraded in (True, False)],
    }
    (args.out / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
    for row in metrics["held_out"]:
        print(json.dumps({k: row[k] for k in ("split", "degraded", "pixel_accuracy", "miou")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
