"""What the toy v2 instruments share: their training pools, degradations, peak decoding, a
resumable training loop and the loading of their weights.

The instruments (`judge`, `features`, `annotator`, `segmenter` in this package) are four
different networks, each trained on its own render stream (`harness.toy.v2.splits.STREAMS`).
Each is saved as `<name>.safetensors` plus `config.json` (its constructor arguments and training
record) under `weights/toy_v2/<name>/`.

The networks are hand-written: no library ships detectors or segmenters sized for 64x64 toy
renders (torchvision's are built and pretrained for photographs at hundreds of pixels).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from harness.errors import MissingWeightsError
from harness.toy.data import load_or_render_pool
from harness.toy.evaluator import degrade as degrade_v1
from harness.toy.v2.splits import scene_for_index
from harness.toy.v2.world import MAX_INSTANCES, OBJECT_COLOURS, SHAPES, SIZES, TEXTURES, Scene, render_scene

WEIGHTS_ROOT = "weights/toy_v2"
CACHE_DIR = Path("results/toy_train/data")
#: Semantic classes of a pixel: background, then one class per shape (a shape names a group).
SEMANTIC_CLASSES: tuple[str, ...] = ("background",) + SHAPES


@dataclass
class InstrumentPool:
    """Rendered scenes with per-instance truth (slots padded with -1 beyond a scene's instances)."""

    images: np.ndarray  # (N, 64, 64, 3) uint8
    instance_labels: np.ndarray  # (N, 64, 64) uint8: 0 background, k + 1 instance k
    semantic: np.ndarray  # (N, 64, 64) uint8: index into SEMANTIC_CLASSES
    centre: np.ndarray  # (N, MAX_INSTANCES, 2) float32 (x, y) pixels; -1 padding
    shape: np.ndarray  # (N, MAX_INSTANCES) int8 index into SHAPES
    colour: np.ndarray  # index into OBJECT_COLOURS
    texture: np.ndarray  # index into TEXTURES
    size: np.ndarray  # index into SIZES

    def __len__(self) -> int:
        return len(self.images)


def scene_truth(scene: Scene) -> dict[str, np.ndarray]:
    """Render a scene and list its instances' truth (the arrays of one `InstrumentPool` row)."""
    image, instance_labels = render_scene(scene)
    centre = np.full((MAX_INSTANCES, 2), -1.0, np.float32)
    attributes = {k: np.full(MAX_INSTANCES, -1, np.int8) for k in ("shape", "colour", "texture", "size")}
    shape_of = np.zeros(len(scene.instances) + 1, np.uint8)
    for k, (g, inst) in enumerate(scene.instances):
        group = scene.groups[g]
        centre[k] = inst.centre
        attributes["shape"][k] = SHAPES.index(group.shape)
        attributes["colour"][k] = OBJECT_COLOURS.index(group.colour)
        attributes["texture"][k] = TEXTURES.index(group.texture)
        attributes["size"][k] = SIZES.index(group.size)
        shape_of[k + 1] = SHAPES.index(group.shape) + 1
    return {"images": image, "instance_labels": instance_labels, "semantic": shape_of[instance_labels],
            "centre": centre, **attributes}


def render_instrument_range(args: tuple[str, int, int]) -> dict[str, np.ndarray]:
    """Rows `start..stop-1` of a stream as `InstrumentPool` arrays (the worker of `render_pool`)."""
    stream, start, stop = args
    rows = [scene_truth(scene_for_index(stream, i)) for i in range(start, stop)]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def instrument_pool(stream: str, n: int, cache_dir: Path = CACHE_DIR, workers: int = 1) -> InstrumentPool:
    """The first `n` scenes of v2 stream `stream`, cached as `v2i_<stream>_<n>.npz`."""
    return load_or_render_pool(stream, n, cache_dir, workers=workers, render_range=render_instrument_range,
                               pool_type=InstrumentPool, prefix="v2i_")


def truth_pool(stream: str, indices: list[int]) -> InstrumentPool:
    """An `InstrumentPool` of the given scene indices of `stream` (evaluation sets; not cached)."""
    rows = [scene_truth(scene_for_index(stream, i)) for i in indices]
    return InstrumentPool(**{k: np.stack([r[k] for r in rows]) for k in rows[0]})


def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1] (every instrument's input range)."""
    return torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def degrade(images: torch.Tensor, generator: torch.Generator, clean_fraction: float = 0.25) -> torch.Tensor:
    """v1's degradation (blur, colour shift, contrast, noise: imperfect generations) on all but
    `clean_fraction` of a batch, so exact renders stay in distribution too."""
    degraded = degrade_v1(images, generator)
    keep = torch.rand(images.shape[0], generator=generator) < clean_fraction
    return torch.where(keep[:, None, None, None], images, degraded)


def conv_block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


def gaussian_heatmap(centres: np.ndarray, channels: np.ndarray, n_channels: int, size: int, stride: int,
                     sigma: float) -> np.ndarray:
    """(n_channels, size, size) CenterNet targets: at each centre (x, y in input pixels) a Gaussian
    of `sigma` cells in its channel, peaking at exactly 1 in the cell holding the centre; the
    maximum where Gaussians meet."""
    heat = np.zeros((n_channels, size, size), np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    for (x, y), c in zip(centres, channels):
        cx, cy = min(int(x // stride), size - 1), min(int(y // stride), size - 1)
        heat[c] = np.maximum(heat[c], np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)))
    return heat


def decode_peaks(heatmap: torch.Tensor, threshold: float, kernel: int = 3) -> list[tuple[int, int, int, float]]:
    """Peaks of one (C, H, W) heatmap of probabilities: (channel, row, column, score) for every
    cell that is the maximum of its `kernel` x `kernel` neighbourhood within its channel and at
    least `threshold`, strongest first. A plateau yields each of its cells (ties are kept)."""
    pooled = F.max_pool2d(heatmap[None], kernel, stride=1, padding=kernel // 2)[0]
    keep = (heatmap == pooled) & (heatmap >= threshold)
    c, r, q = torch.nonzero(keep, as_tuple=True)
    scores = heatmap[c, r, q]
    order = torch.argsort(scores, descending=True, stable=True)
    return [(int(c[i]), int(r[i]), int(q[i]), float(scores[i])) for i in order]


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), normalised by the number of peaks."""
    probability = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos = -torch.log(probability) * (1 - probability) ** 2 * positive
    neg = -torch.log(1 - probability) * probability**2 * (1 - target) ** 4 * (1 - positive)
    return (pos.sum() + neg.sum()) / positive.sum().clamp(min=1)


#: Cross-entropy weight of the background class: objects cover about 7% of a scene's pixels, and
#: an unweighted loss first learns to call everything background.
BACKGROUND_WEIGHT = 0.2


def semantic_loss(logits: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over SEMANTIC_CLASSES with the background down-weighted (`BACKGROUND_WEIGHT`)."""
    weight = torch.ones(logits.shape[1])
    weight[0] = BACKGROUND_WEIGHT
    return F.cross_entropy(logits, semantic, weight=weight)


def batch_generators(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The random draws of training step `step`: a function of (seed, step) alone, so a resumed
    run draws exactly the batches an uninterrupted one would."""
    return np.random.default_rng([seed, step]), torch.Generator().manual_seed(seed * 1_000_003 + step)


def train(model: nn.Module, batch_loss: Callable[[int], torch.Tensor], steps: int, learning_rate: float, name: str,
          out_dir: Path, config: dict, checkpoint_every: int = 200) -> nn.Module:
    """AdamW with a one-cycle schedule; a checkpoint (`checkpoint.pt`: model, optimiser, schedule,
    step) every `checkpoint_every` steps, from which an interrupted run resumes; at the end
    `<name>.safetensors` and `config.json` (`config` plus the training record) in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    checkpoint_path = out_dir / "checkpoint.pt"
    first, seconds_before = 1, 0.0
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, weights_only=True)
        if state["steps"] == steps:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            first, seconds_before = int(state["step"]) + 1, float(state["seconds"])
            print(name, f"resuming after step {first - 1}", flush=True)
    start = time.time()
    model.train()
    for step in range(first, steps + 1):
        loss = batch_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        elapsed = seconds_before + time.time() - start
        if step % 50 == 0:
            print(name, json.dumps({"step": step, "loss": round(float(loss.detach()), 4), "elapsed_s": round(elapsed, 1)}),
                  flush=True)
        if step % checkpoint_every == 0 and step < steps:
            tmp = checkpoint_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "step": step, "steps": steps, "seconds": elapsed}, tmp)
            tmp.replace(checkpoint_path)
    save_file(model.state_dict(), out_dir / f"{name}.safetensors")
    record = {**config, "training": {**config.get("training", {}), "steps": steps, "learning_rate": learning_rate,
                                     "wall_seconds": round(seconds_before + time.time() - start, 1),
                                     "parameters": sum(p.numel() for p in model.parameters())}}
    (out_dir / "config.json").write_text(json.dumps(record, indent=1) + "\n")
    checkpoint_path.unlink(missing_ok=True)
    return model.eval()


def weights_dir(name: str, directory: str | Path | None = None) -> Path:
    """`directory`, or `weights/toy_v2/<name>` of the repository."""
    if directory is not None:
        return Path(directory)
    from harness import REPO_ROOT

    return Path(REPO_ROOT) / WEIGHTS_ROOT / name


def load_network(name: str, build: Callable[..., nn.Module], directory: str | Path | None = None) -> nn.Module:
    """Network `name` built from its `config.json` (`build(**config["network"])`) with its
    safetensors weights, in eval mode; a missing or unreadable file raises
    :class:`MissingWeightsError` naming it and the command that trains it."""
    folder = weights_dir(name, directory)
    command = f"python -m harness.toy.v2.{name} --out {WEIGHTS_ROOT}/{name}"
    weights, config_path = folder / f"{name}.safetensors", folder / "config.json"
    for path in (config_path, weights):
        if not path.is_file():
            raise MissingWeightsError(f"toy v2 {name} file not found: {path}; train it with `{command}`")
    try:
        config = json.loads(config_path.read_text())
        model = build(**config["network"])
        model.load_state_dict(load_file(weights))
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, TypeError) as error:
        raise MissingWeightsError(f"toy v2 {name} weights in {folder} are unreadable or do not fit the network "
                                  f"({error}); train them again with `{command}`") from None
    model.config = config
    model.weights_path = weights
    return model.eval()


class UNet(nn.Module):
    """A four-level U-Net: float NCHW images in [-1, 1] (sides divisible by 8) -> (N, out_channels, H, W).

    Three poolings give the 8x8 bottleneck a receptive field wider than the largest object, so
    a pixel's class is decided from the whole shape; the skip connections keep the edges.
    """

    def __init__(self, out_channels: int, width: int = 12):
        super().__init__()

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(conv_block(cin, cout), conv_block(cout, cout))

        self.encoders = nn.ModuleList([double(3, width), double(width, 2 * width), double(2 * width, 4 * width)])
        self.bottleneck = double(4 * width, 4 * width)
        self.decoders = nn.ModuleList([double(8 * width, 2 * width), double(4 * width, width), double(2 * width, width)])
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        skips, x = [], images
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = decoder(torch.cat([F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False), skip], 1))
        return self.head(x)


def training_parser(name: str, doc: str | None, *, steps: int, batch_size: int, learning_rate: float, pool_size: int,
                    width: int, can_continue: bool = True) -> argparse.ArgumentParser:
    """The options every instrument's training command shares (`python -m harness.toy.v2.<name>`)."""
    parser = argparse.ArgumentParser(prog=f"python -m harness.toy.v2.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(f"weights/toy_v2/{name}"))
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument("--pool-size", type=int, default=pool_size)
    parser.add_argument("--width", type=int, default=width)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    if can_continue:
        parser.add_argument("--init", type=Path, default=None,
                            help="continue from the weights in this folder (its training record is kept in config.json)")
    return parser


def start_training(args: argparse.Namespace) -> None:
    """Threads and seed of a training run (before the network is built, so its init is seeded)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def continue_from(args: argparse.Namespace, name: str, network_class: type, model: nn.Module) -> dict | None:
    """With --init, load the earlier weights into `model` and return their training record."""
    if getattr(args, "init", None) is None:
        return None
    previous = load_network(name, network_class, args.init)
    model.load_state_dict(previous.state_dict())
    return previous.config["training"]
