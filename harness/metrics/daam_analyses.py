"""Metrics of DAAM's linguistic analyses (Tang et al., ACL 2023, sections 5-6); docs/daam_analyses.md.

- ``daam_pos``: generalized attribution by part of speech. Every distinct word of the prompt is
  tagged by spaCy (universal POS). A word that denotes something visible and has a ground-truth
  mask in the image is scored with DAAM's IoU (heat map bilinear to the mask size, min-max
  normalised, ``> threshold``); a word with no visible referent gets the share of its map's mass
  outside every object instead. Per tag: ``daam_pos.miou`` (95% cluster bootstrap over images), ``daam_pos.no_referent``
  (share of the tag's words with no visible referent, Wilson interval) and ``daam_pos.mass_outside``.
- ``daam_syntax``: visuosyntactic analysis. For every head-dependent pair of the spaCy parse
  (labels mapped to CoreNLP's, :mod:`harness.analysis.language`), both maps are binarised at
  ``threshold`` (0.15 on raw maps, the reference notebook's value) and IoU, IoD = |H∩D|/|D|, IoH =
  |H∩D|/|H| computed; per relation the means with 95% cluster-bootstrap intervals over images, ``n`` = the relation's count. Where
  the ground truth masks both words, the same statistics of the masks (the ceiling) are given too.
- ``cohyponym_entanglement``: generation accuracy (both objects of "a X and a Y" present) for
  cohyponym and non-cohyponym pairs (Wilson intervals), their difference (bootstrap CI over
  prompts, groups resampled independently), and the IoU of the two nouns' DAAM masks per group.
- ``adjective_entanglement``: image change inside and outside the object's region when one
  adjective is swapped (same seed), against the same prompt regenerated and a swap of an
  unrelated word; root-mean-square pixel change, a feature distance, the outside/inside ratio
  (ratio of means, bootstrap CI over records), and how far the adjective's DAAM mask spreads
  beyond its noun's.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.measures import mass_outside, region_change, set_statistics, spread_beyond
from harness.data.ground_truth import lookup, resolve_ground_truth
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, MissingWeightsError
from harness.heatmaps import DEFAULT_THRESHOLD, heatmap_to_mask, normalize_minmax, sample_heat_maps, upsample
from harness.metrics.base import Metric
from harness.overlap import mask_iou
from harness.stats import bootstrap_ci, grouped_mean_ci, mean_ci, proportion_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample

log = logging.getLogger(__name__)

TOY_ANNOTATOR = "harness.toy.annotator:ToyAnnotator"
VISIBLE_RULES = ("toy", "annotated")


def wilson_interval(successes: int, total: int) -> tuple[float | None, float | None]:
    """95% Wilson score interval of a proportion (:func:`harness.stats.proportion_ci`)."""
    return proportion_ci(int(successes), int(total), method="wilson")


def toy_denotes(word: str) -> bool:
    """Whether a toy-world word names something visible (a shape, colour, size or the background)."""
    from harness.toy.world import ALL_COLOURS, BACKGROUND_WORD, SHAPES, SIZES

    return word in SHAPES or word in ALL_COLOURS or word in SIZES or word == BACKGROUND_WORD


@lru_cache(maxsize=4096)
def _parse(prompt: str) -> Any:
    from harness.analysis.language import load_parser

    return load_parser()(prompt)


def objects_mask(record: PromptRecord, truth: dict[str, np.ndarray]) -> np.ndarray | None:
    """Union of the ground-truth masks of the record's nouns ("background" excluded); None without any."""
    nouns = (record.meta or {}).get("nouns") or []
    masks = [truth[n] for n in (str(x).lower() for x in nouns) if n != "background" and n in truth]
    if not masks:
        return None
    return np.logical_or.reduce(masks)


def _t_result(name: str, values: list[float], definition: str, item: str | None = None,
              bounds: tuple[float, float] | None = (0.0, 1.0)) -> MetricResult:
    """Mean with a 95% interval, clipped into ``bounds`` (the figure's range): a cluster bootstrap
    over images when ``values`` are :class:`PerImage` (items of one image are correlated), else a
    Student-t interval (one value per image)."""
    if isinstance(values, PerImage):
        mean, low, high = grouped_mean_ci(values, values.images, bounds=bounds)
        definition = definition.replace("95% t-CI", CLUSTER_CI)
        if CLUSTER_CI not in definition:
            definition = f"{definition}; {CLUSTER_CI}"
    else:
        mean, low, high = mean_ci(values, bounds=bounds)
    return MetricResult(name, mean, len(values), low, high, definition=definition,
                        extra={"item": item} if item is not None else {})


#: How the per-(image, word) figures' interval is named in their definitions.
CLUSTER_CI = "95% percentile cluster bootstrap over images (1000 resamples, seed 0)"


class PerImage(list):
    """Values of (image, item) pairs, each with its image, so the interval resamples images."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []

    def add(self, value: float, image: str) -> None:
        self.append(value)
        self.images.append(image)

    @classmethod
    def union(cls, parts: Any) -> PerImage:
        joined = cls()
        for part in parts:
            joined.extend(part)
            joined.images.extend(part.images)
        return joined


# ----------------------------------------------------------------------------------- daam_pos


class DaamPOS(Metric):
    """``daam_pos``: DAAM's attribution by part of speech (module docstring)."""

    name = "daam_pos"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, ground_truth: Any = None, visible: str = "annotated",
                 rating_task: dict[str, Any] | None = None) -> None:
        if not 0.0 <= float(threshold) < 1.0:
            raise ConfigError(f"metric.daam_pos.threshold must be in [0, 1), got {threshold}.")
        if visible not in VISIBLE_RULES:
            raise ConfigError(f"metric.daam_pos.visible must be one of {VISIBLE_RULES}, got {visible!r}.")
        self.threshold = float(threshold)
        self.visible = visible
        self.ground_truth = resolve_ground_truth(ground_truth)
        self.rating_task = dict(rating_task or {})
        self.reset()

    def reset(self) -> None:
        self.ious: dict[str, PerImage] = defaultdict(PerImage)
        self.outside: dict[str, PerImage] = defaultdict(PerImage)
        self.area_outside: dict[str, PerImage] = defaultdict(PerImage)
        self.words: dict[str, int] = defaultdict(int)
        self.no_referent: dict[str, int] = defaultdict(int)
        self.absent: dict[str, int] = defaultdict(int)

    def denotes(self, word: str, truth: dict[str, np.ndarray]) -> bool:
        return toy_denotes(word) if self.visible == "toy" else lookup(truth, word) is not None

    def process(self, record: PromptRecord, sample: Sample) -> list[dict[str, Any]]:
        from harness.analysis.language import tag_words

        truth = self.ground_truth.masks(record, sample)
        maps = sample_heat_maps(sample, lower=True)
        objects = objects_mask(record, truth)
        rows = []
        seen: set[str] = set()
        for tagged in tag_words(record.prompt, _parse(record.prompt)):
            word, pos = tagged.word, tagged.pos
            if word in seen or word not in maps:
                continue
            seen.add(word)
            self.words[pos] += 1
            if not self.denotes(word, truth):
                self.no_referent[pos] += 1
                if objects is not None:
                    share = mass_outside(upsample(maps[word], objects.shape), objects)
                    if not math.isnan(share):
                        self.outside[pos].add(share, record.id)
                        self.area_outside[pos].add(float((~objects).mean()), record.id)
                        rows.append({"metric": f"{self.name}.mass_outside", "value": share, "item": pos})
                continue
            gt = lookup(truth, word)
            if gt is None:  # denotes something, but it is not in this image
                self.absent[pos] += 1
                continue
            value = mask_iou(heatmap_to_mask(maps[word], gt.shape, self.threshold), gt)
            self.ious[pos].add(value, record.id)
            rows.append({"metric": f"{self.name}.iou", "value": value, "item": pos})
        return rows

    def compute(self) -> list[MetricResult]:
        all_ious = PerImage.union(self.ious.values())
        results = [_t_result(self.name, all_ious, f"{self._iou_definition()}; every tag")] if all_ious else []
        for pos in sorted(self.words, key=lambda p: -self.words[p]):
            if self.ious.get(pos):
                results.append(_t_result(f"{self.name}.miou", self.ious[pos], self._iou_definition(), pos))
            low, high = wilson_interval(self.no_referent[pos], self.words[pos])
            rule = "the toy vocabulary (shapes, colours, sizes, 'background')" if self.visible == "toy" else \
                "the ground truth (no mask in the image)"
            results.append(MetricResult(
                f"{self.name}.no_referent", self.no_referent[pos] / self.words[pos], self.words[pos], low, high,
                definition=f"share of the tag's (image, word) pairs whose word denotes nothing visible, by {rule}; "
                           "95% Wilson interval", extra={"item": pos}))
            if self.outside.get(pos):
                results.append(_t_result(
                    f"{self.name}.mass_outside", self.outside[pos],
                    "words with no visible referent: share of the heat map's mass (bilinear to the mask size, "
                    "clamped >= 0) outside the union of the prompt's object masks; 95% t-CI", pos))
                results.append(_t_result(
                    f"{self.name}.area_outside", self.area_outside[pos],
                    "the same pairs: share of the image's area outside the objects (what a uniform map would give "
                    "as mass_outside); 95% t-CI", pos))
            if self.absent.get(pos):
                results.append(MetricResult(f"{self.name}.absent", float(self.absent[pos]), self.words[pos],
                                            definition="words that denote something visible with no mask in "
                                                       "their image (not scored)", extra={"item": pos}))
        if not all_ious:
            results += self.nothing_to_score("no word with a visible referent had a mask in its image")
        return results

    def _iou_definition(self) -> str:
        return (f"DAAM mIoU by part of speech (spaCy universal POS): mean over (image, word with a visible referent "
                f"present) pairs of IoU(heat map bilinear to GT size, min-max normalised, > {self.threshold:g}; GT "
                "mask); 95% t-CI")

    def save_figures(self, run_dir: Path, records: list[PromptRecord], samples: Any, rows: Any = None) -> list[Path]:
        """The mIoU-per-tag bar chart, and with ``rating_task`` the human-rating task of sampled pairs."""
        from harness.analysis.figures import pos_bar_chart
        from harness.analysis.rating import export_rating_task

        paths = [pos_bar_chart(rows, Path(run_dir) / "figures" / "pos_miou.png")] if rows is not None else []
        if self.rating_task:
            paths.append(export_rating_task(Path(run_dir) / "rating_task", records, samples, **self.rating_task))
        return [path for path in paths if path]


# -------------------------------------------------------------------------------- daam_syntax

SCALES = ("raw", "minmax")


class DaamSyntax(Metric):
    """``daam_syntax``: set statistics of head and dependent maps per relation (module docstring)."""

    name = "daam_syntax"

    def __init__(self, threshold: float = 0.15, scale: str = "raw", ground_truth: Any = None,
                 top: int = 10) -> None:
        if scale not in SCALES:
            raise ConfigError(f"metric.daam_syntax.scale must be one of {SCALES}, got {scale!r}.")
        self.threshold, self.scale, self.top = float(threshold), scale, int(top)
        self.ground_truth = resolve_ground_truth(ground_truth) if ground_truth is not None else None
        self.reset()

    def reset(self) -> None:
        self.stats: dict[str, dict[str, PerImage]] = defaultdict(lambda: defaultdict(PerImage))
        self.ceiling: dict[str, dict[str, PerImage]] = defaultdict(lambda: defaultdict(PerImage))
        self.skipped = 0

    def binarise(self, heat_map: np.ndarray) -> np.ndarray:
        heat = np.asarray(heat_map, dtype=np.float64)
        return (normalize_minmax(heat) if self.scale == "minmax" else heat) > self.threshold

    def process(self, record: PromptRecord, sample: Sample) -> list[dict[str, Any]]:
        from harness.analysis.language import dependency_pairs

        maps = sample_heat_maps(sample, lower=True)
        truth = self.ground_truth.masks(record, sample) if self.ground_truth is not None else {}
        rows = []
        for pair in dependency_pairs(record.prompt, _parse(record.prompt)):
            if pair.head not in maps or pair.dependent not in maps:
                self.skipped += 1
                continue
            stats = set_statistics(self.binarise(maps[pair.head]), self.binarise(maps[pair.dependent]))
            for key in ("iou", "iod", "ioh"):
                value = getattr(stats, key)
                self.stats[pair.relation][key].add(value, record.id)
                rows.append({"metric": f"{self.name}.{key}", "value": value, "item": pair.relation})
            head_gt, dependent_gt = lookup(truth, pair.head), lookup(truth, pair.dependent)
            if head_gt is not None and dependent_gt is not None:
                gt = set_statistics(head_gt, dependent_gt)
                for key in ("iou", "iod", "ioh"):
                    self.ceiling[pair.relation][key].add(getattr(gt, key), record.id)
                    rows.append({"metric": f"{self.name}.gt_{key}", "value": getattr(gt, key), "item": pair.relation})
        return rows

    def compute(self) -> list[MetricResult]:
        scale = "raw maps (as the method stores them)" if self.scale == "raw" else "min-max normalised maps"
        names = {"iou": "|H∩D|/|H∪D|", "iod": "|H∩D|/|D|", "ioh": "|H∩D|/|H|"}
        every = PerImage.union(relation["iou"] for relation in self.stats.values())
        if not every:
            return self.nothing_to_score("no head-dependent pair had heat maps for both words")
        results = [_t_result(self.name, every, f"mean over every (image, head-dependent pair) of |H∩D|/|H∪D|, maps "
                                               f"binarised > {self.threshold:g} on {scale}; all relations; 95% t-CI")]
        ranked = sorted(self.stats, key=lambda r: (-len(self.stats[r]["iou"]), r))
        for rank, relation in enumerate(ranked, start=1):
            for key, formula in names.items():
                results.append(_t_result(
                    f"{self.name}.m{key}", self.stats[relation][key],
                    f"mean over (image, head-dependent pair) of {formula}, maps binarised > {self.threshold:g} on "
                    f"{scale}; n = the relation's count (rank {rank} by count); 95% t-CI", relation))
            for key, formula in names.items():
                if self.ceiling[relation][key]:
                    results.append(_t_result(
                        f"{self.name}.gt_m{key}", self.ceiling[relation][key],
                        f"the same {formula} on the ground-truth masks of head and dependent (the ceiling); "
                        "pairs where both words have a mask; 95% t-CI", relation))
        results.append(MetricResult(f"{self.name}.skipped_pairs", float(self.skipped), self.skipped,
                                    definition="head-dependent pairs with a word that has no heat map (punctuation)"))
        return results

    def save_figures(self, run_dir: Path, records: list[PromptRecord], samples: Any, rows: Any = None) -> list[Path]:
        """The table of relations with the largest and smallest overlap (``top`` of each)."""
        from harness.analysis.figures import relation_table

        return [p for p in relation_table(rows, Path(run_dir) / "figures", top=self.top) if p] if rows is not None else []


# ------------------------------------------------------------------------ cohyponym_entanglement

JUDGES = ("toy_evaluator", "maskrcnn", "none")


class CohyponymEntanglement(Metric):
    """``cohyponym_entanglement``: accuracy of "a X and a Y" for cohyponym vs other pairs (module docstring)."""

    name = "cohyponym_entanglement"

    def __init__(self, judge: str = "toy_evaluator", weights: str | None = None, score_threshold: float = 0.5,
                 threshold: float = DEFAULT_THRESHOLD, resamples: int = 2000, seed: int = 0) -> None:
        if judge not in JUDGES:
            raise ConfigError(f"metric.cohyponym_entanglement.judge must be one of {JUDGES}, got {judge!r}.")
        self.judge_name, self.weights, self.score_threshold = judge, weights, float(score_threshold)
        self.threshold, self.resamples, self.seed = float(threshold), int(resamples), int(seed)
        self._judge = self._build_judge()
        self.reset()

    def _build_judge(self) -> Any:
        if self.judge_name == "none":
            return None
        if self.judge_name == "toy_evaluator":
            from harness.metrics.features import DEFAULT_EVALUATOR_MODULE, load_evaluator

            evaluator = load_evaluator(DEFAULT_EVALUATOR_MODULE, "cpu", self.weights)
            if evaluator is None:
                raise MissingWeightsError("judge=toy_evaluator needs the toy evaluator (weights/toy/evaluator).")
            return lambda image, record: bool(evaluator.judge(image, record))
        from harness.data.coco80 import coco80_class
        from harness.registry import BASELINES, load_once

        # the judge is the registered Mask R-CNN baseline (a plugin this metric asks the registry for)
        options = {"score_threshold": self.score_threshold, **({"weights": self.weights} if self.weights else {})}
        detector = load_once(("baseline", "maskrcnn", tuple(sorted(options.items()))),
                             lambda: BASELINES.get("maskrcnn")(**options))

        def judge(image: np.ndarray, record: PromptRecord) -> bool:
            found = detector.detect(np.asarray(image))
            present = {detector.categories[int(label)] for label, score in zip(found["labels"], found["scores"])
                       if score >= self.score_threshold}
            return all(coco80_class(noun) in present for noun in record.meta["nouns"])

        return judge

    def reset(self) -> None:
        self.correct: dict[bool, list[float]] = {True: [], False: []}
        self.overlap: dict[bool, list[float]] = {True: [], False: []}

    def process(self, record: PromptRecord, sample: Sample) -> list[dict[str, Any]]:
        meta = record.meta or {}
        if "cohyponym" not in meta:
            raise ConfigError(f"record {record.id!r} has no meta['cohyponym']; use a cohyponym pair dataset.")
        group = bool(meta["cohyponym"])
        label = "cohyponym" if group else "non_cohyponym"
        rows = []
        if self._judge is not None and sample.image is not None:
            value = float(self._judge(sample.image, record))
            self.correct[group].append(value)
            rows.append({"metric": f"{self.name}.correct", "value": value, "item": label})
        maps = sample_heat_maps(sample, lower=True)
        first, second = (str(n).lower() for n in meta["nouns"][:2])
        if first in maps and second in maps:
            size = tuple(np.asarray(maps[first]).shape)
            overlap = mask_iou(heatmap_to_mask(maps[first], size, self.threshold), heatmap_to_mask(maps[second], size, self.threshold))
            self.overlap[group].append(overlap)
            rows.append({"metric": f"{self.name}.noun_overlap", "value": overlap, "item": label})
        return rows

    def compute(self) -> list[MetricResult]:
        results = []
        judge = {"toy_evaluator": "the toy evaluator (every asked shape found)",
                 "maskrcnn": f"torchvision Mask R-CNN (both classes detected, score >= {self.score_threshold:g})"}
        for group, label in ((True, "cohyponym"), (False, "non_cohyponym")):
            values = self.correct[group]
            if values:
                low, high = wilson_interval(int(sum(values)), len(values))
                results.append(MetricResult(f"{self.name}.accuracy", float(np.mean(values)), len(values), low, high,
                                            definition=f"share of '{label}' prompts whose image shows both objects, "
                                                       f"judged by {judge.get(self.judge_name)}; 95% Wilson interval",
                                            extra={"item": label}))
            if self.overlap[group]:
                results.append(_t_result(
                    f"{self.name}.noun_overlap", self.overlap[group],
                    f"IoU of the two nouns' DAAM masks (min-max normalised, > {self.threshold:g}) in '{label}' "
                    "prompts; 95% t-CI", label))
        cohyponym, other = np.array(self.correct[True]), np.array(self.correct[False])
        if not (cohyponym.size and other.size):
            reason = ("judge=none: generation accuracy is not judged" if self._judge is None
                      else "the run has no judged prompts of one of the groups")
            return results + self.nothing_to_score(reason)
        if cohyponym.size and other.size:
            difference = float(cohyponym.mean() - other.mean())
            low, high = two_sample_bootstrap(cohyponym, other, self.resamples, self.seed)
            results.append(MetricResult(
                self.name, difference, int(cohyponym.size + other.size), low, high,
                definition="accuracy(cohyponym pairs) - accuracy(other pairs); 95% percentile bootstrap CI, the two "
                           f"groups of prompts resampled independently ({self.resamples} resamples)"))
        return results


def two_sample_bootstrap(first: np.ndarray, second: np.ndarray, resamples: int = 2000,
                         seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of mean(first) - mean(second), groups resampled independently (scipy)."""
    if first.size < 2 or second.size < 2 or resamples <= 0:
        return None, None
    from scipy import stats

    result = stats.bootstrap((first, second), lambda a, b: np.mean(a) - np.mean(b), n_resamples=int(resamples),
                             method="percentile", vectorized=False, rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)


# ------------------------------------------------------------------------ adjective_entanglement

REGIONS = ("annotator", "daam")
CONDITIONS = ("adjective", "unrelated", "same")


class AdjectiveEntanglement(Metric):
    """``adjective_entanglement``: where an image changes when one adjective is swapped (module docstring)."""

    name = "adjective_entanglement"

    def __init__(self, region: str = "annotator", features: str = "toy_evaluator", threshold: float = DEFAULT_THRESHOLD,
                 resamples: int = 1000, seed: int = 0) -> None:
        if region not in REGIONS:
            raise ConfigError(f"metric.adjective_entanglement.region must be one of {REGIONS}, got {region!r}.")
        self.region, self.threshold = region, float(threshold)
        self.resamples, self.seed = int(resamples), int(seed)
        self.features_name = features
        from harness.metrics.features import build_extractor

        self.extractor = build_extractor(features, device="cpu")
        self.annotator = resolve_ground_truth(TOY_ANNOTATOR) if region == "annotator" else None
        self.reset()

    def reset(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {c: defaultdict(list) for c in CONDITIONS}
        self.spread: dict[str, list[float]] = defaultdict(list)
        self.unscored = 0

    def object_region(self, record: PromptRecord, sample: Sample, prompt: str, image: np.ndarray,
                      maps: dict[str, np.ndarray] | None) -> np.ndarray | None:
        """The swapped object's region in one image of the pair (None when it is not found)."""
        swap = record.meta["swap"]
        if self.region == "annotator":
            annotation = self.annotator.annotate(image, prompt)
            return annotation.object_mask(int(swap["object"]))
        noun = str(swap["noun"]).lower()
        if not maps or noun not in maps:
            return None
        mask = heatmap_to_mask(maps[noun], image.shape[:2], self.threshold)
        return mask if mask.any() else None

    def feature_distance(self, before: np.ndarray, after: np.ndarray, keep: np.ndarray) -> float:
        from harness.analysis.measures import masked_image
        from harness.metrics.features import images_to_tensor

        batch = images_to_tensor([masked_image(before, keep), masked_image(after, keep)])
        features = self.extractor(batch).double().numpy()
        return float(np.linalg.norm(features[0] - features[1]))

    def process(self, record: PromptRecord, sample: Sample) -> list[dict[str, Any]]:
        meta = record.meta or {}
        if "swap" not in meta:
            raise ConfigError(f"record {record.id!r} has no meta['swap']; use an adjective-swap dataset.")
        original = np.asarray(sample.image)
        maps = sample_heat_maps(sample, lower=True)
        base_region = self.object_region(record, sample, record.prompt, original, maps)
        rows = []
        for condition in CONDITIONS:
            key = f"image:{condition}"
            if key not in sample.arrays:
                continue
            other = np.asarray(sample.arrays[key])
            prompt = sample.meta["variants"][condition]
            other_maps = {k[len("heatmap_" + condition + ":"):]: v for k, v in sample.arrays.items()
                          if k.startswith(f"heatmap_{condition}:")}
            other_region = self.object_region(record, sample, prompt, other, other_maps)
            regions = [r for r in (base_region, other_region) if r is not None]
            if not regions:
                if condition == "adjective":
                    self.unscored += 1
                continue
            region = np.logical_or.reduce(regions)
            if region.all():
                continue
            change = region_change(original, other, region)
            figures = {"inside": change.inside, "outside": change.outside,
                       "feature_inside": self.feature_distance(original, other, region),
                       "feature_outside": self.feature_distance(original, other, ~region)}
            for name, value in figures.items():
                self.values[condition][name].append(value)
                rows.append({"metric": f"{self.name}.{name}", "value": value, "item": condition})
        adjective, noun = str(meta["swap"]["word"]).lower(), str(meta["swap"]["noun"]).lower()
        if adjective in maps and noun in maps:
            size = tuple(np.asarray(maps[noun]).shape)
            adjective_mask = heatmap_to_mask(maps[adjective], size, self.threshold)
            spread = spread_beyond(adjective_mask, heatmap_to_mask(maps[noun], size, self.threshold))
            self.spread["noun_map"].append(spread)
            rows.append({"metric": f"{self.name}.spread_beyond_noun", "value": spread, "item": "adjective"})
            if base_region is not None:
                beyond = spread_beyond(heatmap_to_mask(maps[adjective], base_region.shape, self.threshold), base_region)
                self.spread["object"].append(beyond)
                rows.append({"metric": f"{self.name}.spread_beyond_object", "value": beyond, "item": "adjective"})
        return rows

    def compute(self) -> list[MetricResult]:
        region = ("the toy annotator's region of the object (union over the two images)" if self.region == "annotator"
                  else f"the noun's DAAM mask (> {self.threshold:g}; union over the two images)")
        results = []
        for condition in CONDITIONS:
            values = self.values[condition]
            if not values.get("inside"):
                continue
            for name, what in (("inside", "RMS per-pixel RGB change (L2, [0,1] scale) inside"),
                               ("outside", "RMS per-pixel RGB change (L2, [0,1] scale) outside"),
                               ("feature_inside", f"{self.features_name} feature distance (L2) of the images with "
                                                  "everything but the region greyed, inside"),
                               ("feature_outside", f"{self.features_name} feature distance (L2) with the region "
                                                   "greyed, outside")):
                results.append(_t_result(f"{self.name}.{name}", values[name],
                                         f"{what} {region}; swap '{condition}'; 95% t-CI over records (clipped at 0)",
                                         condition, bounds=(0.0, math.inf)))
            for numerator, denominator, name in (("outside", "inside", "ratio"),
                                                 ("feature_outside", "feature_inside", "feature_ratio")):
                top, bottom = np.array(values[numerator]), np.array(values[denominator])
                if bottom.sum() <= 0:
                    continue  # no change anywhere (the same-prompt control): no ratio

                def ratio(indices: np.ndarray, top: np.ndarray = top, bottom: np.ndarray = bottom) -> float:
                    below = bottom[indices].sum()
                    return float(top[indices].sum() / below) if below > 0 else math.nan

                low, high = bootstrap_ci(len(top), ratio, self.resamples, seed=self.seed)
                if condition == "adjective" and name == "ratio":
                    results.append(MetricResult(
                        self.name, float(top.sum() / bottom.sum()), len(top), low, high,
                        definition="the adjective swap's outside/inside ratio of RMS pixel change (ratio of means; "
                                   "the same figure as ratio[adjective]); 95% percentile bootstrap CI over records",
                        extra={"item": condition}))
                results.append(MetricResult(
                    f"{self.name}.{name}", float(top.sum() / bottom.sum()), len(top), low, high,
                    definition=f"mean {numerator} / mean {denominator} change (ratio of means), swap '{condition}'; "
                               "95% percentile bootstrap CI over records", extra={"item": condition}))
        if self.spread.get("noun_map"):
            results.append(_t_result(f"{self.name}.spread_beyond_noun", self.spread["noun_map"],
                                     f"share of the adjective's DAAM mask (> {self.threshold:g}) outside its noun's "
                                     "DAAM mask; 95% t-CI", "adjective"))
        if self.spread.get("object"):
            results.append(_t_result(f"{self.name}.spread_beyond_object", self.spread["object"],
                                     f"share of the adjective's DAAM mask (> {self.threshold:g}) outside {region}; "
                                     "95% t-CI", "adjective"))
        if not any(r.metric == self.name for r in results):
            return results + self.nothing_to_score("no adjective swap changed the object's region (no ratio)")
        results.append(MetricResult(f"{self.name}.unscored", float(self.unscored), self.unscored,
                                    definition="records whose object was found in neither image (not scored)"))
        return results
