"""``kmeans_oracle_hungarian``: k-means regions named per image with the ground truth.

An oracle upper bound for k-means regions; the PiCIE+H protocol proper is ``kmeans_dataset_hungarian``.

1. Pixel features: RGB in [0, 1] and the pixel's position (y / H, x / W) times
   ``position_weight``, on the image resized (bilinear) so its longer side is at most
   ``max_side``.
2. k-means (scikit-learn, ``clusters`` clusters, ``n_init`` restarts, ``random_state=seed``)
   gives a label map, resized (nearest) back to the image size.
3. Hungarian matching (``scipy.optimize.linear_sum_assignment``, maximising the summed IoU)
   assigns at most one cluster to each word **using that word's ground-truth mask** (resized
   nearest to the image when sizes differ); a word gets its cluster as a 0/1 map, a word left
   unmatched (more words than clusters) or absent from the ground truth gets an all-zero map.

Using the ground truth to name clusters is what the unsupervised protocol does (an unsupervised
segmenter's clusters carry no names; PiCIE+H and STEGO in the DAAM paper are scored after
Hungarian matching). The paper's protocol matches cluster *ids* to classes once over the whole
dataset, which needs cluster ids that mean the same in every image (a learned segmenter); per
image k-means ids are arbitrary, so here the matching is per image. That is an oracle
assignment and so an upper bound for this clustering: read its score as "the best k-means
regions can do", not as a fair unsupervised competitor.

``kmeans_dataset_hungarian`` follows the protocol itself: one k-means over pixels sampled from
every image of the run (so a cluster id means the same in every image), then one Hungarian
matching of cluster ids to classes (the nouns' lemmas, plus "rest" for pixels no present noun
covers) on the pixel confusion counts summed over the dataset, as PiCIE and STEGO are scored.
A word gets its class's cluster in every image. Per-pixel colour and position cannot tell a
circle from a square, so on the toy world this is a floor-like unsupervised competitor, the role
PiCIE+H (31-34 mIoU) plays in the DAAM paper; the per-image oracle above is the ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from harness.baselines.segmentation import WordMapBaseline, image_of, words_of
from harness.clustering import fit_kmeans, kmeans_labels
from harness.data.ground_truth import lookup, noun_lemmas, resolve_ground_truth
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.overlap import confusion_matrix, iou
from harness.store.samples import Sample


def pixel_features(image: np.ndarray, position_weight: float) -> np.ndarray:
    """(H*W, 5) features: RGB in [0, 1] and ``position_weight`` x (y / H, x / W)."""
    height, width = image.shape[:2]
    rgb = image.reshape(-1, 3).astype(np.float64) / 255.0
    ys, xs = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
    position = np.stack([ys.ravel(), xs.ravel()], axis=1) * position_weight
    return np.concatenate([rgb, position], axis=1)


def image_kmeans_labels(image: np.ndarray, clusters: int, position_weight: float, max_side: int, seed: int,
                        n_init: int = 4, what: str = "k-means") -> np.ndarray:
    """The (H, W) cluster label map of ``image`` (clustered at most ``max_side`` pixels a side)."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    features = pixel_features(small, position_weight)
    labels = kmeans_labels(features, clusters, seed, n_init, what=what).reshape(small.shape[:2]).astype(np.int32)
    if labels.shape != (height, width):
        labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))
    return labels


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)) > 127


def hungarian_assign(labels: np.ndarray, truths: list[np.ndarray]) -> list[int | None]:
    """For each truth mask the cluster id matched to it (max total IoU), or None."""
    cluster_ids = np.unique(labels)
    if not truths:
        return []
    regions = labels[None] == cluster_ids[:, None, None]  # every present cluster: a non-empty region
    scores = np.stack([iou(regions, truth) for truth in truths])  # (truths, clusters)
    rows, columns = linear_sum_assignment(scores, maximize=True)
    assigned: list[int | None] = [None] * len(truths)
    for row, column in zip(rows, columns, strict=True):
        assigned[row] = int(cluster_ids[column])
    return assigned


class KMeansOracleHungarian(WordMapBaseline):
    """k-means over colour + position, clusters matched to words with the ground truth (module docstring)."""

    name = "kmeans_oracle_hungarian"
    version = "1"

    def __init__(self, model=None, clusters: int = 5, position_weight: float = 0.5, max_side: int = 96,
                 n_init: int = 4, seed: int = 0, ground_truth: Any = None) -> None:
        if int(clusters) < 1:
            raise ConfigError(f"baseline.kmeans_oracle_hungarian.clusters must be >= 1, got {clusters}.")
        options = {"clusters": int(clusters), "position_weight": float(position_weight), "max_side": int(max_side),
                   "n_init": int(n_init), "seed": int(seed)}
        if isinstance(ground_truth, str):
            options["ground_truth"] = ground_truth
        super().__init__(model, **options)
        self.settings = options
        self.ground_truth = resolve_ground_truth(ground_truth)

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        image = image_of(record, sample)
        words = words_of(record, sample)
        labels = image_kmeans_labels(image, self.settings["clusters"], self.settings["position_weight"],
                                     self.settings["max_side"], self.settings["seed"], self.settings["n_init"],
                                     what=f"baseline {self.name} on record {record.id!r}")
        truth = self.ground_truth.masks(record, sample)
        lemmas = noun_lemmas(record)
        present = []
        for word in words:
            mask = lookup(truth, word, lemmas.get(word.lower()))
            if mask is not None:
                present.append((word, resize_mask(mask, labels.shape)))
        assigned = dict(zip((w for w, _ in present), hungarian_assign(labels, [m for _, m in present]), strict=True))
        maps = {}
        for word in words:
            cluster = assigned.get(word)
            maps[word] = (labels == cluster).astype(np.float32) if cluster is not None else np.zeros(labels.shape, np.float32)
        return self.prediction(record, sample, maps, clusters=int(labels.max()) + 1)


class KMeansDatasetHungarian(WordMapBaseline):
    """One k-means over the whole run, cluster ids matched to noun classes once (module docstring)."""

    name = "kmeans_dataset_hungarian"
    version = "1"
    #: predictions depend on every sample of the run: the runner calls :meth:`fit` first and keys
    #: the cached predictions by the whole set of samples
    dataset_level = True
    REST = "<rest>"

    def __init__(self, model=None, clusters: int = 6, position_weight: float = 0.5, max_side: int = 96,
                 pixels_per_image: int = 512, n_init: int = 4, seed: int = 0, ground_truth: Any = None) -> None:
        if int(clusters) < 1:
            raise ConfigError(f"baseline.kmeans_dataset_hungarian.clusters must be >= 1, got {clusters}.")
        options = {"clusters": int(clusters), "position_weight": float(position_weight), "max_side": int(max_side),
                   "pixels_per_image": int(pixels_per_image), "n_init": int(n_init), "seed": int(seed)}
        if isinstance(ground_truth, str):
            options["ground_truth"] = ground_truth
        super().__init__(model, **options)
        self.settings = options
        self.ground_truth = resolve_ground_truth(ground_truth)
        self.kmeans: Any = None
        self.fitted: set[str] = set()
        self.assignment: dict[str, int] = {}

    def _small(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        scale = min(1.0, self.settings["max_side"] / max(height, width))
        if scale >= 1.0:
            return image
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))

    def fit(self, records: list[PromptRecord], samples: Mapping[str, Sample]) -> None:
        """Cluster pixels of every image with one k-means, then match cluster ids to classes once.

        ``samples`` maps record ids to samples; it is read one record at a time in two passes
        (the runner passes a lazy view of the store), and nothing per image is kept: memory is
        the pooled pixels and the confusion counts, not the samples.
        """
        rng = np.random.default_rng(self.settings["seed"])
        pool = []
        for record in records:  # pass 1: a fixed number of pixels of every image
            points = pixel_features(self._small(image_of(record, samples[record.id])), self.settings["position_weight"])
            take = min(len(points), self.settings["pixels_per_image"])
            pool.append(points[rng.choice(len(points), take, replace=False)])
        pool = np.concatenate(pool)
        clusters = self.settings["clusters"]
        model = fit_kmeans(pool, clusters, self.settings["seed"], self.settings["n_init"],
                           what=f"baseline {self.name} (pixels pooled over the run)")
        self.kmeans = model
        self.fitted = set()
        classes: list[str] = [self.REST]
        confusion = np.zeros((clusters, len(classes)), np.int64)  # rows: cluster ids, columns: classes
        for record in records:  # pass 2: cluster ids against classes, counted
            sample = samples[record.id]
            labels = self._labels(image_of(record, sample))
            target = np.zeros(labels.shape, np.int64)  # class index; 0 = rest
            truth = self.ground_truth.masks(record, sample)
            lemmas = noun_lemmas(record)
            for word in words_of(record, sample):
                lemma = lemmas.get(word.lower(), word.lower())
                mask = lookup(truth, word, lemma)
                if mask is not None:
                    if lemma not in classes:
                        classes.append(lemma)
                    target[resize_mask(mask, labels.shape)] = classes.index(lemma)
            # the class list grows as nouns appear: widen the summed counts to it, then add this image's
            confusion = np.pad(confusion, ((0, 0), (0, len(classes) - confusion.shape[1])))
            confusion += confusion_matrix(labels, target, clusters, len(classes))
            self.fitted.add(record.id)
        rows, cols = linear_sum_assignment(confusion, maximize=True)
        self.assignment = {classes[c]: int(r) for r, c in zip(rows, cols, strict=True)}

    def _labels(self, image: np.ndarray) -> np.ndarray:
        """Cluster id of every pixel of ``image`` (at its size) under the fitted k-means."""
        small = self._small(image)
        points = pixel_features(small, self.settings["position_weight"])
        labels = self.kmeans.predict(points).reshape(small.shape[:2]).astype(np.int32)
        if small.shape[:2] != image.shape[:2]:
            labels = np.asarray(Image.fromarray(labels).resize(image.shape[:2][::-1], Image.NEAREST))
        return labels

    def predict(self, record: PromptRecord, sample: Sample) -> Sample:
        if record.id not in self.fitted:
            raise DataError(f"baseline {self.name}: record {record.id!r} was not part of fit(); it is fitted "
                            "on the whole run's samples before predicting.")
        labels = self._labels(image_of(record, sample))
        lemmas = noun_lemmas(record)
        maps = {}
        for word in words_of(record, sample):
            cluster = self.assignment.get(lemmas.get(word.lower(), word.lower()))
            maps[word] = (labels == cluster).astype(np.float32) if cluster is not None else np.zeros(labels.shape, np.float32)
        return self.prediction(record, sample, maps, clusters=len(set(self.assignment.values())))
