"""The toy v2 supervised segmenter: the baseline that DAAM's word maps are compared with.

A U-Net (`instrument_common.UNet`) labelling every pixel of a 64x64 image with its semantic class
(background or one of the seven shapes; a shape names a group in v2 scenes). It trains on the
`segmenter_train` stream, disjoint from every instrument's stream and from the diffusion
model's, on renders degraded like generations.

    python -m harness.toy.v2.segmenter --out weights/toy_v2/segmenter   # train and save
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from harness.toy.v2.instrument_common import (
    SEMANTIC_CLASSES,
    UNet,
    batch_generators,
    continue_from,
    degrade,
    instrument_pool,
    load_network,
    semantic_loss,
    start_training,
    to_tensor,
    train,
    training_parser,
)
from harness.toy.v2.world import IMAGE_SIZE

NAME = "segmenter"


class SegmenterNet(UNet):
    """(N, 8, H, W) logits over SEMANTIC_CLASSES."""

    def __init__(self, width: int = 12):
        super().__init__(len(SEMANTIC_CLASSES), width)


def load_segmenter(directory: str | Path | None = None) -> SegmenterNet:
    """The trained segmenter from `directory` (default `weights/toy_v2/segmenter`)."""
    return load_network(NAME, SegmenterNet, directory)


@torch.no_grad()
def segment(model: SegmenterNet, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, 64, 64) int64 class maps (index into SEMANTIC_CLASSES) of uint8 NHWC 64x64 images."""
    images_uint8 = np.asarray(images_uint8, dtype=np.uint8)
    if images_uint8.ndim != 4 or images_uint8.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise HarnessError(f"the toy v2 segmenter reads uint8 images (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got {images_uint8.shape}")
    parts = [model(to_tensor(images_uint8[s:s + batch_size])).argmax(1).numpy() for s in range(0, len(images_uint8), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.int64)


def main(argv: list[str] | None = None) -> int:
    """Train the segmenter on `segmenter_train` renders and save it."""
    parser = training_parser(NAME, __doc__, steps=700, batch_size=16, learning_rate=0.004, pool_size=4000, width=16)
    args = parser.parse_args(argv)
    start_training(args)
    model = SegmenterNet(args.width)
    earlier = continue_from(args, NAME, SegmenterNet, model)
    pool = instrument_pool("segmenter_train", args.pool_size)

    def batch_loss(step: int) -> torch.Tensor:
        rng, generator = batch_generators(args.seed, step)
        index = rng.integers(0, len(pool), args.batch_size)
        images = degrade(to_tensor(pool.images[index]), generator)
        return semantic_loss(model(images), torch.from_numpy(pool.semantic[index].astype(np.int64)))

    config = {"network": {"width": args.width},
              "training": {"stream": "segmenter_train", "pool_size": args.pool_size, "batch_size": args.batch_size,
                           "seed": args.seed, "threads": args.threads, "continued_from": earlier}}
    train(model, batch_loss, args.steps, args.learning_rate, NAME, args.out, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
