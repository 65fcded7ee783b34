"""The toy v2 feature extractor for FID, KID and precision/recall (not the judge).

A small CNN trained with SimCLR's contrastive objective (NT-Xent) on the `features_train`
stream. The two views of a scene are its render and a *twin*: the same objects rendered on
another scene's background (`twin_scene`), each then randomly cropped (scale 0.6-1), flipped and
degraded (blur, colour shift, noise: imperfect generations). A first version with plain
augmented views learned the background and nothing of the objects (a linear probe of which
shapes are present did no better than "always absent" on test renders); the twin views make the
background useless for telling scenes apart. It shares neither weights, architecture, training
stream nor objective with the judge, so the two do not share their errors. Its features are the
global max pool of the last convolution (before SimCLR's projection head; max, so that small
objects count): **d = 64** (`FEATURE_DIM`). FID on them needs N >= 2d = 128 images per set.

    python -m harness.toy.v2.features --out weights/toy_v2/features   # train and save
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torchvision.transforms import v2 as transforms

from harness.toy.data import load_or_render_pool
from harness.toy.v2.instrument_common import (
    CACHE_DIR,
    batch_generators,
    conv_block,
    degrade,
    instrument_pool,
    load_network,
    start_training,
    to_tensor,
    train,
    training_parser,
)
from harness.toy.v2.splits import scene_for_index
from harness.toy.v2.world import OBJECT_COLOURS, SHAPES, TEXTURES, Scene, render_scene

NAME = "features"
FEATURE_DIM = 64


class FeatureNet(nn.Module):
    """Float NCHW images in [-1, 1] -> (N, feature_dim) features; `project` is SimCLR's head."""

    def __init__(self, width: int = 24, feature_dim: int = FEATURE_DIM, projection_dim: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            conv_block(3, width), conv_block(width, width, stride=2), conv_block(width, 2 * width, stride=2),
            conv_block(2 * width, 2 * width), conv_block(2 * width, feature_dim, stride=2), conv_block(feature_dim, feature_dim),
        )
        self.projection = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(), nn.Linear(feature_dim, projection_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, feature_dim): global max pool of the last convolution."""
        return self.body(images).amax(dim=(2, 3))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(features)


def load_features(directory: str | Path | None = None) -> FeatureNet:
    """The trained feature network from `directory` (default `weights/toy_v2/features`)."""
    return load_network(NAME, FeatureNet, directory)


@torch.no_grad()
def extract(model: FeatureNet, images_uint8: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """(N, d) float64 features of uint8 NHWC images."""
    images_uint8 = np.asarray(images_uint8, dtype=np.uint8)
    parts = [model(to_tensor(images_uint8[s:s + batch_size])).double().numpy() for s in range(0, len(images_uint8), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, model.body[-1][0].out_channels))


def presence_targets(pool) -> np.ndarray:
    """(N, 7 + 6 + 4) float32 multi-hot: which shapes, colours and textures each scene holds."""
    out = np.zeros((len(pool.shape), len(SHAPES) + len(OBJECT_COLOURS) + len(TEXTURES)), np.float32)
    for n in range(len(pool.shape)):
        valid = pool.shape[n] >= 0
        out[n, pool.shape[n][valid]] = 1
        out[n, len(SHAPES) + pool.colour[n][valid]] = 1
        out[n, len(SHAPES) + len(OBJECT_COLOURS) + pool.texture[n][valid]] = 1
    return out


def twin_scene(stream: str, index: int) -> Scene:
    """Scene `index` of `stream` with the background of another scene of the stream (the first of
    indices 500,000 + index, ... whose background colour is none of this scene's object colours)."""
    scene = scene_for_index(stream, index)
    used = {group.colour for group in scene.groups}
    for k in range(500_000 + index, 500_100 + index):
        background = scene_for_index(stream, k).background
        if background.colour not in used:
            return replace(scene, background=background)
    return scene


@dataclass
class TwinPool:
    images: np.ndarray  # (N, 64, 64, 3) uint8: scene i of the stream
    twins: np.ndarray  # (N, 64, 64, 3) uint8: its twin


def render_twin_range(args: tuple[str, int, int]) -> dict[str, np.ndarray]:
    stream, start, stop = args
    return {"images": np.stack([render_scene(scene_for_index(stream, i))[0] for i in range(start, stop)]),
            "twins": np.stack([render_scene(twin_scene(stream, i))[0] for i in range(start, stop)])}


def twin_pool(n: int, stream: str = "features_train") -> TwinPool:
    """The first `n` scenes of `stream` and their twins, cached as `v2twins_<stream>_<n>.npz`."""
    return load_or_render_pool(stream, n, CACHE_DIR, workers=1, render_range=render_twin_range,
                               pool_type=TwinPool, prefix="v2twins_")


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy over 2N projections."""
    z = F.normalize(torch.cat([first, second]), dim=1)
    similarity = z @ z.T / temperature
    n = first.shape[0]
    similarity.fill_diagonal_(float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(similarity, positive)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view per image: resized crop (scale 0.6-1), horizontal flip, degradation."""
    crop = transforms.Compose([transforms.RandomResizedCrop(images.shape[-1], scale=(0.6, 1.0), antialias=True),
                               transforms.RandomHorizontalFlip()])
    # torchvision draws from torch's global generator: seed it from this step's generator.
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    views = torch.stack([crop(image) for image in images])
    return degrade(views, generator, clean_fraction=0.2)


def main(argv: list[str] | None = None) -> int:
    """Train the feature extractor on `features_train` renders (SimCLR) and save it."""
    parser = training_parser(NAME, __doc__, steps=300, batch_size=48, learning_rate=0.003, pool_size=3000, width=24, can_continue=False)
    parser.add_argument("--objective", choices=("simclr", "simclr+presence"), default="simclr",
                        help="SimCLR alone, or with an image-level head saying which shapes, colours and textures "
                             "are present (the head is dropped from the saved network)")
    args = parser.parse_args(argv)
    start_training(args)
    model = FeatureNet(args.width)
    pool = twin_pool(args.pool_size)
    presence = torch.from_numpy(presence_targets(instrument_pool("features_train", args.pool_size)))
    if args.objective == "simclr+presence":
        model.presence = nn.Linear(FEATURE_DIM, presence.shape[1])

    def batch_loss(step: int) -> torch.Tensor:
        rng, generator = batch_generators(args.seed, step)
        index = rng.choice(len(pool.images), args.batch_size, replace=False)
        first, second = augment(to_tensor(pool.images[index]), generator), augment(to_tensor(pool.twins[index]), generator)
        features_first, features_second = model(first), model(second)
        total = nt_xent(model.project(features_first), model.project(features_second))
        if args.objective == "simclr+presence":
            logits = model.presence(torch.cat([features_first, features_second]))
            total = total + F.binary_cross_entropy_with_logits(logits, presence[index].repeat(2, 1))
        return total

    config = {"network": {"width": args.width, "feature_dim": FEATURE_DIM},
              "training": {"stream": "features_train", "objective": f"{args.objective}: SimCLR NT-Xent (temperature 0.2) on background-swapped twin views"
                           + (" + BCE of image-level shape/colour/texture presence" if "presence" in args.objective else ""),
                           "pool_size": args.pool_size, "batch_size": args.batch_size, "seed": args.seed,
                           "threads": args.threads}}
    train(model, batch_loss, args.steps, args.learning_rate, NAME, args.out, config)
    if hasattr(model, "presence"):  # a training aid only: save the feature network without it
        del model.presence
        save_file(model.state_dict(), args.out / f"{NAME}.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
