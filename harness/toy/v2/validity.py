"""Test-bed validity rows of toy world v2 that need no model: can colour alone segment the world,
and how much room does the latent grid leave to image-resolution methods?

- ``colour_kmeans``: per image, k-means on pixel RGB with K = the number of classes in the
  truth, segments matched to classes per image (Hungarian, the oracle matching of
  ``miou_hungarian`` with ``matching: image``). Goal: mIoU <= 0.45 (world v1: 0.763).
- ``latent_grid_ceiling``: each truth label map reduced to the 16x16 latent grid by majority
  and enlarged back by nearest neighbour, scored with the same metric (its segments are the
  truth's classes, so the matching is the identity). Goal: mIoU <= 0.85.

Labels are semantic: 0 = background, 1 + i = shape ``SHAPES[i]`` (one group per shape in a
scene, so a shape class is a group). mIoU is the harness's (per-class IoU from matched pixel
counts summed over images, averaged over classes); intervals are percentile bootstraps over
images. The model-dependent validity rows (guidance headroom, seen vs unseen accuracy, the
known-order checks) need the toy v2 diffusion model and its instruments.

    python -m harness.toy.v2.validity --split test --size 200 --out results/toy_validity/render_rows.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from harness.clustering import kmeans_labels
from harness.overlap import confusion_matrix, per_image_matched_counts, scores_from_counts
from harness.stats import bootstrap_ci
from harness.toy.splits import eval_indices
from harness.toy.v2.splits import scene_for_index
from harness.toy.v2.world import SHAPES, render_scene, semantic_labels

LATENT_FACTOR = 4  # 64x64 pixels -> 16x16 latent cells
NUM_CLASSES = 1 + len(SHAPES)
GOALS = {"colour_kmeans": 0.45, "latent_grid_ceiling": 0.85}


def latent_grid_labels(labels: np.ndarray, factor: int = LATENT_FACTOR) -> np.ndarray:
    """Majority class of every factor x factor cell (ties to the lower class), enlarged back by
    nearest neighbour: the best a latent-resolution label map can do."""
    height, width = labels.shape
    cells = labels.reshape(height // factor, factor, width // factor, factor).transpose(0, 2, 1, 3)
    cells = cells.reshape(height // factor, width // factor, factor * factor)
    counts = np.stack([(cells == c).sum(-1) for c in range(int(labels.max()) + 1)], axis=-1)
    return np.kron(counts.argmax(-1), np.ones((factor, factor), dtype=labels.dtype))


def colour_kmeans_labels(image: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """Per-image k-means on RGB (the harness's k-means: scikit-learn, seeded restarts)."""
    points = image.reshape(-1, 3).astype(np.float64)
    return kmeans_labels(points, clusters, seed, restarts=4).reshape(image.shape[:2]).astype(np.int32)


def render_rows(split: str, size: int, seed: int = 0, compositions: tuple[str, ...] = ("seen", "unseen"),
                resamples: int = 1000) -> pd.DataFrame:
    """One row per (composition, check): mIoU, its bootstrap interval over images, the goal."""
    rows = []
    for composition in compositions:
        truths, kmeans, grid = [], [], []
        for index in eval_indices(split, size, seed):
            scene = scene_for_index(composition, index)
            image, instances = render_scene(scene)
            truth = semantic_labels(scene, instances)
            truths.append(truth)
            kmeans.append(colour_kmeans_labels(image, len(np.unique(truth)), seed))
            grid.append(latent_grid_labels(truth))
        for check, predictions in (("colour_kmeans", kmeans), ("latent_grid_ceiling", grid)):
            # Each image is matched once; a bootstrap resample sums its images' matched counts.
            confusions = [confusion_matrix(p, t, max(int(p.max()) + 1, NUM_CLASSES), NUM_CLASSES)
                          for p, t in zip(predictions, truths)]
            counts, pixels = per_image_matched_counts(confusions)

            def statistic(idx, counts=counts, pixels=pixels):
                return scores_from_counts(*counts[idx].sum(axis=0), int(pixels[idx].sum()))["miou"]
            value = statistic(np.arange(len(truths)))
            low, high = bootstrap_ci(len(truths), statistic, resamples=resamples, seed=seed)
            rows.append({"experiment": "toy_validity", "world": "toy_v2", "dataset": f"toy2_scenes/{composition}",
                         "split": split, "check": check, "metric": "miou_hungarian_image", "value": value,
                         "ci_low": low, "ci_high": high, "n": len(truths), "goal": f"<= {GOALS[check]}",
                         "meets_goal": bool(value <= GOALS[check])})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.toy.v2.validity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="CSV to write the rows to")
    args = parser.parse_args(argv)
    rows = render_rows(args.split, args.size, args.seed)
    print(rows.drop(columns=["experiment", "world"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
