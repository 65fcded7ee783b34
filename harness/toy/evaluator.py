"""The toy evaluator: a small CNN that says which (colour, shape) objects an image contains.

It is the judge of generation accuracy (is what the prompt asked for in the image?) and its
penultimate layer is the feature extractor for FID/IS in the toy world. Generated images are
not clean renders (soft edges, colour drift, speckle), so it trains on renders degraded the
same way (`degrade`).

    harness toy evaluator --out weights/toy/evaluator   # train and save
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.toy.fit import fit, load_weights
from harness.toy.splits import ALL_PAIRS

WEIGHTS_FILE = "evaluator.safetensors"
RETRAIN_COMMAND = "harness toy evaluator --out weights/toy/evaluator"


class ToyEvaluator(nn.Module):
    """Multi-label classifier over the 30 (colour, shape) pairs; input float NCHW in [-1, 1]."""

    pairs = ALL_PAIRS

    def __init__(self, width: int = 32, feature_dim: int = 128):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())

        self.body = nn.Sequential(
            # A stride-2 stem: flat shapes need little full-resolution detail, and CPU time is short.
            block(3, width, 2), block(width, 2 * width, 1), block(2 * width, 2 * width, 1),
            block(2 * width, 4 * width, 2), block(4 * width, feature_dim, 1),
        )
        self.head = nn.Linear(feature_dim, len(ALL_PAIRS))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim): max-pooled so small objects still count."""
        return self.body(images).amax(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, 30) of each (colour, shape) pair being present."""
        return self.head(self.features(images))


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random blur, colour shift, contrast change and noise, like imperfect generations."""
    n = images.shape[0]
    sigma = torch.rand(n, generator=generator) * 0.9
    kernel_x = torch.arange(-2, 3).float()
    blurred = []
    for i in range(n):
        if sigma[i] < 0.2:
            blurred.append(images[i])
            continue
        k = torch.exp(-(kernel_x**2) / (2 * sigma[i] ** 2))
        k = k / k.sum()
        kernel = (k[:, None] * k[None, :]).expand(3, 1, 5, 5)
        blurred.append(F.conv2d(F.pad(images[i : i + 1], (2, 2, 2, 2), mode="replicate"), kernel, groups=3)[0])
    out = torch.stack(blurred)
    shift = (torch.rand(n, 3, 1, 1, generator=generator) - 0.5) * 0.2
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.3
    noise = torch.randn(out.shape, generator=generator) * torch.rand(n, 1, 1, 1, generator=generator) * 0.12
    return (out * contrast + shift + noise).clamp(-1, 1)


def pair_targets(pool, index: np.ndarray) -> torch.Tensor:
    """Multi-hot (len(index), 30) targets from a ScenePool's object arrays."""
    from harness.toy.data import COLOUR_INDEX, SHAPE_INDEX

    lookup = {(COLOUR_INDEX[c], SHAPE_INDEX[s]): k for k, (c, s) in enumerate(ALL_PAIRS)}
    target = torch.zeros(len(index), len(ALL_PAIRS))
    for row, n in enumerate(index):
        for colour, shape in zip(pool.colour[n], pool.shape[n]):
            if shape >= 0:
                target[row, lookup[(int(colour), int(shape))]] = 1
    return target


def train_evaluator(pool, out_dir: Path, steps: int = 1000, batch_size: int = 64, seed: int = 0) -> ToyEvaluator:
    """Train on a ScenePool (degraded renders) and save `evaluator.safetensors` to `out_dir`."""
    from harness.toy.autoencoder import images_to_tensor

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ToyEvaluator()

    def batch_loss(step: int) -> torch.Tensor:
        index = rng.integers(0, len(pool), batch_size)
        images = degrade(images_to_tensor(pool.images[index]), generator)
        return F.binary_cross_entropy_with_logits(model(images), pair_targets(pool, index))

    return fit(model, batch_loss, steps, 2e-3, "evaluator", Path(out_dir) / WEIGHTS_FILE)


def load_evaluator(directory: Path) -> ToyEvaluator:
    """Load the evaluator from `directory`; a missing or unreadable file raises :class:`MissingWeightsError`.

    Loaded once per process per weight file (the judge of gen_accuracy, the toy annotator, the
    DALL-Eval toy reader and the FID/IS features all share it); treat it as read-only."""
    from harness.registry import load_once

    path = Path(directory) / WEIGHTS_FILE
    stat = path.stat() if path.is_file() else None
    if stat is None:  # the message of load_weights, without caching a failure
        return load_weights(ToyEvaluator(), path, "evaluator", RETRAIN_COMMAND)
    return load_once(("toy_evaluator", str(path.resolve()), stat.st_mtime_ns, stat.st_size),
                     lambda: load_weights(ToyEvaluator(), path, "evaluator", RETRAIN_COMMAND))


@torch.no_grad()
def present_pairs(model: ToyEvaluator, images_uint8: np.ndarray, threshold: float = 0.5) -> list[set[tuple[str, str]]]:
    """For uint8 NHWC images, the set of (colour, shape) pairs the evaluator finds in each."""
    from harness.toy.autoencoder import images_to_tensor

    probabilities = torch.sigmoid(model(images_to_tensor(images_uint8))).numpy()
    return [{ALL_PAIRS[k] for k in np.nonzero(row > threshold)[0]} for row in probabilities]


@torch.no_grad()
def single_object_accuracy(model: ToyEvaluator, split: str = "toy_gen", n: int = 500, degraded: bool = False) -> float:
    """Accuracy of the top pair on held-out single-object renders of `split`."""
    from harness.toy.autoencoder import images_to_tensor
    from harness.toy.splits import scene_for_index
    from harness.toy.world import render_scene

    scenes = [scene_for_index(split, i, n_objects=1) for i in range(n)]
    images = images_to_tensor(np.stack([render_scene(s)[0] for s in scenes]))
    if degraded:
        images = degrade(images, torch.Generator().manual_seed(1))
    predicted = model(images).argmax(dim=1).numpy()
    truth = [ALL_PAIRS.index((s.objects[0].colour, s.objects[0].shape)) for s in scenes]
    return float(np.mean(predicted == np.array(truth)))


def main(argv: list[str] | None = None) -> int:
    """Train the evaluator and report its held-out accuracy."""
    from harness.toy.data import load_or_render_pool

    parser = argparse.ArgumentParser(prog="harness toy evaluator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("weights/toy/evaluator"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pool-size", type=int, default=40_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pool = load_or_render_pool("judge_train", args.pool_size, Path("results/toy_train/data"), workers=args.threads)
    model = train_evaluator(pool, args.out, steps=args.steps)
    result = {split: {"clean": single_object_accuracy(model, split), "degraded": single_object_accuracy(model, split, degraded=True)}
              for split in ("toy_gen", "toy_unreal")}
    (args.out / "accuracy.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
