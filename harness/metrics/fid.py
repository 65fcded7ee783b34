"""``fid``: Fréchet Inception Distance with a declared feature extractor and cached reference statistics.

The computation is torchmetrics' ``FrechetInceptionDistance(feature=<nn.Module>)`` (statistics
in float64). What decides the number is stated in every row (``definition`` and ``hp.fid_*``):
the extractor and its weights' checksum, the resize (``antialias``), the reference set (its
content hash, size and skipped files) and the sample count. FIDs from different extractors,
resizes or sample counts (5K / 30K / 50K) are not comparable.

Reference statistics (feature sum, sum of outer products and count, float64) of a real-image
set are computed once and cached under ``stats_cache`` as ``<key>.npz``; the key is the SHA-256
of the images' content (file bytes, or array bytes for a generated reference set), the
extractor identity and the preprocessing, so any change recomputes them.

Real images come from a folder (``real_images``, searched recursively) or from a callable
(``real_source: "module:function"`` with ``real_source_options``), which returns uint8 images
``(N, H, W, 3)`` or an object with such an ``images`` attribute (e.g. the toy world's rendered
scenes: ``harness.toy.data:render_pool``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.metrics.base import Metric
from harness.metrics.features import (
    FeatureExtractor,
    InceptionFidelity,
    InceptionTorchScript,
    build_extractor,
    images_to_tensor,
    resolve_extractor_name,
)
from harness.store.rows import MetricResult
from harness.store.samples import Sample

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
STATS_FORMAT = 1


class _Passthrough(torch.nn.Module):
    """A 'feature extractor' that returns its input: lets torchmetrics accumulate given features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid_metric(num_features: int) -> Any:
    """A torchmetrics FID whose ``update`` takes (N, d) features (float64 statistics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    # Features are handed over in float64, so sums, covariances and the result stay float64.
    return FrechetInceptionDistance(feature=_Passthrough(num_features), reset_real_features=False)


def frechet_distance_from_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """FID between two feature sets (N, d), through torchmetrics in float64."""
    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    metric = fid_metric(real_t.shape[1])
    metric.update(real_t, real=True)
    metric.update(fake_t, real=False)
    return float(metric.compute())


def minimum_samples_note(count: int, num_features: int) -> str | None:
    """A warning when ``count`` samples cannot give a full-rank ``num_features``-d covariance."""
    if count > num_features:
        return None
    return (f"FID from {count} samples with {num_features}-d features: the covariance has rank at most "
            f"{max(count - 1, 0)} < {num_features}, so the value is unstable and biased upwards. "
            f"Use at least {num_features + 1} samples (papers use 10,000-50,000).")


# ----------------------------------------------------------------------------------------------
# Real-image sets and their cached statistics
# ----------------------------------------------------------------------------------------------


class RealImages:
    """A reference set: yields uint8 HxWx3 arrays, with a content hash and a skipped-file count."""

    def __init__(self, folder: str | None = None, source: str | None = None,
                 source_options: dict[str, Any] | None = None, on_unreadable: str = "skip",
                 crop_size: int | None = None, limit: int | None = None) -> None:
        if (folder is None) == (source is None):
            raise ConfigError("metric.fid needs exactly one of real_images=<folder> or real_source=<module:function>.")
        if on_unreadable not in ("skip", "error"):
            raise ConfigError(f"metric.fid.on_unreadable must be skip or error, not {on_unreadable!r}.")
        self.folder = Path(folder).expanduser() if folder else None
        self.source = source
        self.source_options = dict(source_options or {})
        self.on_unreadable = on_unreadable
        self.crop_size = crop_size
        self.limit = limit
        self.skipped: list[str] = []
        self._arrays: np.ndarray | None = None
        self._files: list[Path] | None = None

    def describe(self) -> str:
        return str(self.folder) if self.folder else f"{self.source}({json.dumps(self.source_options, sort_keys=True)})"

    def files(self) -> list[Path]:
        if self._files is None:
            folder = self.folder
            if not folder.is_dir():
                raise DataError(f"The real-image folder {folder} does not exist (metric.fid.real_images). "
                                "Point it at a folder of reference images (PNG/JPEG).")
            files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                others = sum(1 for p in folder.rglob("*") if p.is_file())
                raise DataError(f"The real-image folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                f"it has {others} other file(s). FID needs a reference set.")
            self._files = files[: self.limit] if self.limit else files
        return self._files

    def arrays(self) -> np.ndarray:
        if self._arrays is None:
            from harness.registry import load_target

            function = load_target(self.source, "metric.fid.real_source")
            result = function(**self.source_options)
            images = np.asarray(getattr(result, "images", result))
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise DataError(f"{self.source} returned {images.dtype} {images.shape}; expected uint8 (N, H, W, 3).")
            if len(images) == 0:
                raise DataError(f"{self.source} returned no images: FID needs a reference set.")
            self._arrays = images[: self.limit] if self.limit else images
        return self._arrays

    def content_hash(self) -> str:
        """SHA-256 over the images' bytes (files in sorted order, or the source's arrays)."""
        digest = hashlib.sha256()
        if self.folder is not None:
            for path in self.files():
                digest.update(str(path.relative_to(self.folder)).encode() + b"\0")
                with open(path, "rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        digest.update(block)
        else:
            arrays = self.arrays()
            digest.update(str(arrays.shape).encode())
            digest.update(np.ascontiguousarray(arrays).tobytes())
        return digest.hexdigest()

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        if not self.crop_size:
            return image
        # Centre crop to a square, then one PIL bicubic (antialiased) resize to crop_size.
        pil = Image.fromarray(image)
        side = min(pil.size)
        left, top = (pil.width - side) // 2, (pil.height - side) // 2
        pil = pil.crop((left, top, left + side, top + side)).resize((self.crop_size, self.crop_size), Image.BICUBIC)
        return np.asarray(pil)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.skipped = []
        if self.folder is None:
            for image in self.arrays():
                yield self._prepare(image)
            return
        for path in self.files():
            try:
                with Image.open(path) as pil:
                    image = np.asarray(pil.convert("RGB"))
            except (UnidentifiedImageError, OSError, ValueError) as error:
                if self.on_unreadable == "error":
                    raise DataError(f"The real image {path} cannot be read ({error}). Remove it, or set "
                                    "metric.fid.on_unreadable=skip to skip unreadable files with a count.") from None
                self.skipped.append(path.name)
                continue
            yield self._prepare(image)


def extract_features(images: Iterator[np.ndarray], extractor: FeatureExtractor, batch_size: int) -> np.ndarray:
    """Features of a stream of images, batching consecutive images of one size."""
    outputs: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            outputs.append(extractor(images_to_tensor(batch)).double().numpy())
            batch.clear()

    for image in images:
        if batch and (image.shape != batch[0].shape or len(batch) >= batch_size):
            flush()
        batch.append(image)
    flush()
    if not outputs:
        return np.zeros((0, extractor.num_features))
    return np.concatenate(outputs)


def reference_statistics(real: RealImages, extractor: FeatureExtractor, cache_dir: Path | None,
                         batch_size: int = 16) -> dict[str, Any]:
    """``{"sum", "cov_sum", "n", "skipped", "key"}`` of the real set, from the cache when present."""
    description = {"format": STATS_FORMAT, "content": real.content_hash(), "extractor": extractor.identity(),
                   "resize": extractor.resize_description(), "crop_size": real.crop_size}
    key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir / f"{key}.npz" if cache_dir else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                stats = {"sum": data["sum"], "cov_sum": data["cov_sum"], "n": int(data["n"]),
                         "skipped": int(data["skipped"]), "key": key}
            log.info("FID reference statistics from cache %s (%d images)", path, stats["n"])
            return stats
        except (OSError, KeyError, ValueError) as error:
            log.warning("Cached FID statistics %s are damaged (%s); recomputing.", path, error)
    features = extract_features(iter(real), extractor, batch_size)
    if real.skipped:
        log.warning("FID reference set %s: skipped %d unreadable file(s) (%s%s).", real.describe(), len(real.skipped),
                    ", ".join(real.skipped[:5]), ", ..." if len(real.skipped) > 5 else "")
    if len(features) == 0:
        raise DataError(f"The real-image set {real.describe()} has no readable image "
                        f"({len(real.skipped)} unreadable file(s) skipped).")
    stats = {"sum": features.sum(axis=0), "cov_sum": features.T @ features, "n": len(features),
             "skipped": len(real.skipped), "key": key}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(temporary, sum=stats["sum"], cov_sum=stats["cov_sum"], n=stats["n"], skipped=stats["skipped"])
        (path.with_suffix(".json")).write_text(json.dumps({**description, "source": real.describe(), "n": stats["n"],
                                                           "skipped": stats["skipped"]}, indent=1, sort_keys=True))
        temporary.replace(path)
    return stats


# ----------------------------------------------------------------------------------------------
# The metric
# ----------------------------------------------------------------------------------------------


class FID(Metric):
    """FID of the run's images against a real-image set (one aggregate row).

    Options: ``features`` (inception_torchscript | inception_fidelity | auto | toy_evaluator | pixels),
    ``weights_path``, ``antialias`` (the resize to 299: True = torchmetrics >= 1.8 default,
    False = the TF1-style resize of older papers), ``real_images`` (folder) or ``real_source``
    (+ ``real_source_options``), ``real_crop_size`` (centre crop + bicubic resize of the real
    images), ``max_real``, ``on_unreadable`` (skip | error), ``stats_cache`` (folder),
    ``batch_size``, ``device``.
    """

    name = "fid"
    kind = "quality"

    def __init__(self, features: str = "inception_torchscript", weights_path: str | None = None,
                 antialias: bool = True, real_images: str | None = None, real_source: str | None = None,
                 real_source_options: dict[str, Any] | None = None, real_crop_size: int | None = None,
                 max_real: int | None = None, on_unreadable: str = "skip",
                 stats_cache: str | None = "results/cache/fid_stats", batch_size: int = 16,
                 device: str = "auto", pixel_size: int = 8, evaluator_module: str = "harness.toy.evaluator") -> None:
        features = resolve_extractor_name(features, weights_path)  # "auto" -> the one found here
        self.features_name = features
        self.extractor_options = {"weights_path": weights_path, "antialias": antialias, "device": device,
                                  "evaluator_module": evaluator_module, "pixel_size": pixel_size}
        self.real = RealImages(real_images, real_source, real_source_options, on_unreadable, real_crop_size, max_real)
        self.stats_cache = Path(stats_cache).expanduser() if stats_cache else None
        self.batch_size = int(batch_size)
        self.antialias = bool(antialias)
        # Cheap checks now, so a wrong path stops the run before any sample is generated.
        if self.real.folder is not None:
            self.real.files()
        if features == "inception_fidelity":
            InceptionFidelity.locate(weights_path)
        elif features == "inception_torchscript":
            InceptionTorchScript.locate(weights_path)
        elif features == "toy_evaluator":  # small: load it now (a missing module or weights fails here)
            self.extractor  # noqa: B018

    def check_available(self) -> None:
        if self.features_name in ("dinov2", "clip_l14_336"):  # a missing model stops the run before generating
            self.extractor  # noqa: B018

    @cached_property
    def extractor(self) -> FeatureExtractor:
        """Built on first use (a feature extractor may load weights)."""
        return build_extractor(self.features_name, **self.extractor_options)

    def reset(self) -> None:
        self.pending: list[np.ndarray] = []
        # Running statistics of the generated images' features (torchmetrics keeps their float64
        # sum and sum of outer products), so memory does not grow with the number of samples.
        self.fake_statistics: Any = None

    def process(self, record: PromptRecord, sample: Sample) -> None:
        if sample.image is None:
            return None
        self.pending.append(sample.image)
        if len(self.pending) >= self.batch_size or (self.pending and sample.image.shape != self.pending[0].shape):
            self._flush()
        return None

    def _flush(self) -> None:
        if self.pending:
            features = extract_features(iter(self.pending), self.extractor, self.batch_size)
            self.pending = []
            if self.fake_statistics is None:
                self.fake_statistics = fid_metric(self.extractor.num_features)
            self.fake_statistics.update(torch.as_tensor(features, dtype=torch.float64), real=False)

    @property
    def fake_count(self) -> int:
        """Generated images fed so far (flushed ones)."""
        return 0 if self.fake_statistics is None else int(self.fake_statistics.fake_features_num_samples)

    def compute(self) -> list[MetricResult]:
        self._flush()
        count = self.fake_count
        if count < 2:
            return self.nothing_to_score(f"{count} generated image(s); FID needs at least 2")
        extractor = self.extractor
        stats = reference_statistics(self.real, extractor, self.stats_cache, self.batch_size)
        metric = self.fake_statistics
        metric.real_features_sum = torch.as_tensor(stats["sum"], dtype=torch.float64)
        metric.real_features_cov_sum = torch.as_tensor(stats["cov_sum"], dtype=torch.float64)
        metric.real_features_num_samples = torch.tensor(stats["n"], dtype=torch.long)
        if stats["n"] < 2:
            raise DataError(f"The real-image set {self.real.describe()} has {stats['n']} readable image(s); FID needs at least 2.")
        value = float(metric.compute())
        notes = [note for note in (minimum_samples_note(count, extractor.num_features),
                                   minimum_samples_note(stats["n"], extractor.num_features)) if note]
        if count < 2 * extractor.num_features:
            notes.append(f"N={count} < 2d={2 * extractor.num_features}: the Fréchet distance is biased at this N; "
                         "compare methods by KID")
        for note in dict.fromkeys(notes):
            log.warning("fid: %s", note)
        definition = (f"FID [features={self.features_name} antialias={self.antialias}] (torchmetrics FrechetInceptionDistance, float64 running statistics) of {count} generated vs "
                      f"{stats['n']} real images; features {extractor.identity()}; resize "
                      f"{extractor.resize_description()}; real set {self.real.describe()} "
                      f"(stats {stats['key']}, {stats['skipped']} unreadable skipped"
                      f"{', crop ' + str(self.real.crop_size) if self.real.crop_size else ''})"
                      + "".join(f"; WARNING: {note}" for note in dict.fromkeys(notes)))
        # The extractor, resize and reference set go in the definition (not hp.* columns) so that
        # the table keeps one line per run configuration.
        return [MetricResult(self.name, value, count, definition=definition,
                             extra={"feature_dim": int(extractor.num_features), "n_reference": int(stats["n"]),
                                    "below_2d": bool(count < 2 * extractor.num_features)})]
