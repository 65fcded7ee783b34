"""Distribution metrics beyond FID, on a declared feature space: ``kid``, ``prdc``, ``cmmd``, ``fd_dinov2``.

Each keeps the generated images' features (not the images) and compares them with a reference
set's features (``real_images`` folder or ``real_source`` callable, as ``fid``), in the space of
a declared extractor (``features=``: ``dinov2``, ``clip_l14_336``, ``inception_*``,
``toy_evaluator`` on the toy world, ``pixels`` for tests; harness/metrics/features.py). Every row
says the extractor, its resize, N (generated and reference) and the feature dimension d.

``kid``
    Kernel Inception Distance (Binkowski et al., ICLR 2018): torchmetrics'
    ``KernelInceptionDistance`` (unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3), mean and standard deviation over ``subsets`` random subsets of
    ``subset_size`` (seeded). Rows ``kid`` (value, with the subset std in ``kid_std``).
``prdc``
    Precision, recall, density and coverage (Naeem et al., ICML 2020) with k nearest neighbours:
    the authors' ``prdc`` package. Rows ``precision``, ``recall``, ``density``, ``coverage``.
``cmmd``
    CMMD (Jayasumana et al., CVPR 2024): MMD^2 with a Gaussian RBF kernel of bandwidth
    ``sigma`` (10) on unit-norm embeddings (CLIP ViT-L/14-336 by default), x ``scale`` (1000).
    No maintained library ships it; :func:`cmmd_from_embeddings` follows the authors' reference
    code (google-research ``cmmd/distance.py``: every kernel mean includes the diagonal).
``fd_dinov2``
    The Fréchet distance in DINOv2 ViT-L/14 space (Stein et al., NeurIPS 2023): the ``fid``
    metric with ``features=dinov2`` under its own name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.data.prompts import PromptRecord
from harness.errors import DataError
from harness.metrics.base import Metric
from harness.metrics.features import FeatureExtractor, build_extractor
from harness.metrics.fid import FID, RealImages, extract_features
from harness.store.rows import MetricResult
from harness.store.samples import Sample

log = logging.getLogger(__name__)

FEATURES_FORMAT = 1


# ----------------------------------------------------------------------------------------------
# Functional core (features in, numbers out)
# ----------------------------------------------------------------------------------------------


def kid_from_features(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased KID over random subsets, by torchmetrics (seeded, caller's RNG untouched)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    from harness.metrics.fid import _Passthrough

    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    size = min(int(subset_size), len(real_t), len(fake_t))
    if size < 2:
        raise DataError(f"KID needs at least 2 generated and 2 reference features, got {len(fake_t)} and {len(real_t)}.")
    metric = KernelInceptionDistance(feature=_Passthrough(real_t.shape[1]), subsets=int(subsets), subset_size=size)
    metric.update(real_t, real=True)
    metric.update(fake_t, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        mean, std = metric.compute()
    return float(mean), float(std)


def cmmd_from_embeddings(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """CMMD between embedding sets ``x`` (N, d) and ``y`` (M, d), as the authors' reference code computes it.

    MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y) with k = exp(-||a - b||^2 / (2 sigma^2)),
    every mean over all pairs (diagonal included), times ``scale``. Written here because no
    maintained library provides it.
    """
    x_t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    gamma = 1.0 / (2.0 * float(sigma) ** 2)

    def kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * torch.cdist(a, b).square()).mean()

    return float(scale * (kernel_mean(x_t, x_t) + kernel_mean(y_t, y_t) - 2 * kernel_mean(x_t, y_t)))


def prdc_from_features(real: np.ndarray, fake: np.ndarray, nearest_k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage by the authors' ``prdc`` package."""
    from prdc import compute_prdc

    if min(len(real), len(fake)) <= nearest_k:
        raise DataError(f"prdc with k={nearest_k} needs more than {nearest_k} generated and reference features, "
                        f"got {len(fake)} and {len(real)}.")
    values = compute_prdc(real_features=np.asarray(real, dtype=np.float64),
                          fake_features=np.asarray(fake, dtype=np.float64), nearest_k=int(nearest_k))
    return {name: float(value) for name, value in values.items()}


def small_sample_note(count: int, num_features: int) -> str | None:
    """The row's note when N < 2d: a Fréchet distance is then strongly biased; compare with KID."""
    if count >= 2 * num_features:
        return None
    return f"N={count} < 2d={2 * num_features}: the Fréchet distance is biased at this N; compare methods by KID"


def reference_features(real: RealImages, extractor: FeatureExtractor, cache_dir: Path | None,
                       batch_size: int = 16) -> np.ndarray:
    """The reference set's features (N, d), cached under ``cache_dir`` by content, extractor and preprocessing."""
    description = {"format": FEATURES_FORMAT, "content": real.content_hash(), "extractor": extractor.identity(),
                   "resize": extractor.resize_description(), "crop_size": real.crop_size}
    key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir / f"features-{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            log.warning("Cached reference features %s are damaged (%s); recomputing.", path, error)
    features = extract_features(iter(real), extractor, batch_size)
    if len(features) == 0:
        raise DataError(f"The real-image set {real.describe()} has no readable image.")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.tmp.npy")
        np.save(temporary, features)
        path.with_suffix(".json").write_text(json.dumps({**description, "source": real.describe(),
                                                         "n": len(features)}, indent=1, sort_keys=True))
        temporary.replace(path)
    return features


# ----------------------------------------------------------------------------------------------
# The metrics
# ----------------------------------------------------------------------------------------------


class FeatureSetMetric(Metric):
    """Base: generated images' features against a reference set's, in a declared feature space."""

    default_features = "toy_evaluator"

    def __init__(self, features: str | None = None, weights_path: str | None = None, antialias: bool = True,
                 real_images: str | None = None, real_source: str | None = None,
                 real_source_options: dict[str, Any] | None = None, real_crop_size: int | None = None,
                 max_real: int | None = None, on_unreadable: str = "skip",
                 stats_cache: str | None = "results/cache/fid_stats", batch_size: int = 16, device: str = "auto",
                 pixel_size: int = 8, evaluator_module: str = "harness.toy.evaluator") -> None:
        self.features_name = features or self.default_features
        self.extractor_options = {"weights_path": weights_path, "antialias": antialias, "device": device,
                                  "evaluator_module": evaluator_module, "pixel_size": pixel_size}
        self.real = RealImages(real_images, real_source, real_source_options, on_unreadable, real_crop_size, max_real)
        self.stats_cache = Path(stats_cache).expanduser() if stats_cache else None
        self.batch_size = int(batch_size)
        if self.real.folder is not None:
            self.real.files()

    @cached_property
    def extractor(self) -> FeatureExtractor:
        return build_extractor(self.features_name, **self.extractor_options)

    def check_available(self) -> None:
        self.extractor  # noqa: B018  (loads the network, or raises MissingWeightsError naming where it looked)

    def reset(self) -> None:
        self.fake: list[np.ndarray] = []
        self.pending: list[np.ndarray] = []

    def process(self, record: PromptRecord, sample: Sample) -> None:
        if sample.image is not None:
            self.pending.append(sample.image)
            if len(self.pending) >= self.batch_size:
                self._flush()
        return None

    def _flush(self) -> None:
        if self.pending:
            self.fake.append(extract_features(iter(self.pending), self.extractor, self.batch_size))
            self.pending = []

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """(reference, generated) features."""
        self._flush()
        fake = np.concatenate(self.fake) if self.fake else np.zeros((0, self.extractor.num_features))
        real = reference_features(self.real, self.extractor, self.stats_cache, self.batch_size)
        return real, fake

    def describe(self, real: np.ndarray, fake: np.ndarray) -> str:
        extractor = self.extractor
        return (f"features={self.features_name} ({extractor.identity()}; resize {extractor.resize_description()}; "
                f"d={extractor.num_features}); {len(fake)} generated vs {len(real)} reference images "
                f"({self.real.describe()})")

    def extra(self, real: np.ndarray) -> dict[str, Any]:
        return {"feature_dim": int(self.extractor.num_features), "n_reference": int(len(real))}


class KID(FeatureSetMetric):
    """``kid``: unbiased KID with its subset standard deviation (torchmetrics)."""

    name = "kid"

    def __init__(self, subsets: int = 100, subset_size: int = 1000, seed: int = 0, **options: Any) -> None:
        super().__init__(**options)
        self.subsets, self.subset_size, self.seed = int(subsets), int(subset_size), int(seed)

    def compute(self) -> list[MetricResult]:
        real, fake = self.features()
        if len(fake) < 2:
            return self.nothing_to_score(f"{len(fake)} generated image(s); KID needs at least 2")
        mean, std = kid_from_features(real, fake, self.subsets, self.subset_size, self.seed)
        size = min(self.subset_size, len(real), len(fake))
        definition = (f"KID (torchmetrics KernelInceptionDistance, unbiased MMD^2, kernel (x.y/d+1)^3), mean over "
                      f"{self.subsets} subsets of {size} (std in kid_std); {self.describe(real, fake)}")
        return [MetricResult("kid", mean, len(fake), definition=definition, extra={**self.extra(real), "kid_std": std}),
                MetricResult("kid_std", std, len(fake), definition="standard deviation of KID over its subsets",
                             extra=self.extra(real))]


class PRDC(FeatureSetMetric):
    """``prdc``: precision, recall, density, coverage (the authors' package)."""

    name = "prdc"

    def __init__(self, nearest_k: int = 5, **options: Any) -> None:
        super().__init__(**options)
        self.nearest_k = int(nearest_k)

    def compute(self) -> list[MetricResult]:
        real, fake = self.features()
        if len(fake) <= self.nearest_k:
            return self.nothing_to_score(f"{len(fake)} generated image(s); prdc with k={self.nearest_k} needs more")
        values = prdc_from_features(real, fake, self.nearest_k)
        described = self.describe(real, fake)
        return [MetricResult(name, value, len(fake), definition=f"{name} (Naeem et al. 2020, prdc package, "
                             f"k={self.nearest_k}); {described}", extra=self.extra(real))
                for name, value in values.items()]


class CMMD(FeatureSetMetric):
    """``cmmd``: MMD^2 with a Gaussian RBF kernel on unit-norm embeddings, x1000 (CLIP ViT-L/14-336 by default)."""

    name = "cmmd"
    default_features = "clip_l14_336"

    def __init__(self, sigma: float = 10.0, scale: float = 1000.0, **options: Any) -> None:
        super().__init__(**options)
        self.sigma, self.scale = float(sigma), float(scale)

    def compute(self) -> list[MetricResult]:
        real, fake = self.features()
        if len(fake) < 2:
            return self.nothing_to_score(f"{len(fake)} generated image(s); CMMD needs at least 2")

        def unit(a: np.ndarray) -> np.ndarray:  # CLIP embeddings are compared on the unit sphere
            return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

        value = cmmd_from_embeddings(unit(real), unit(fake), self.sigma, self.scale)
        definition = (f"CMMD (Jayasumana et al. 2024; Gaussian RBF sigma={self.sigma:g} on unit-norm embeddings, "
                      f"x{self.scale:g}, kernel means with the diagonal as the reference code); "
                      f"{self.describe(real, fake)}")
        return [MetricResult("cmmd", value, len(fake), definition=definition, extra=self.extra(real))]


class FDDINOv2(FID):
    """``fd_dinov2``: the Fréchet distance in DINOv2 ViT-L/14 space (``fid`` with ``features=dinov2``)."""

    name = "fd_dinov2"

    def __init__(self, features: str = "dinov2", **options: Any) -> None:
        super().__init__(features=features, **options)

__all__ = ["CMMD", "FDDINOv2", "KID", "PRDC", "cmmd_from_embeddings", "kid_from_features", "prdc_from_features",
           "reference_features", "small_sample_note"]
