"""Skew measures of an attribute's distribution (DALL-EVAL's social-bias measure and two more).

For a prompt that leaves an attribute unsaid, ``p`` is the distribution of that attribute over
the prompt's generated images whose attribute was detected (undetected images are left out of
the proportions), over ``K`` categories. Each measure is computed per prompt and then averaged
over prompts, as DALL-EVAL does with its MAD (j-min/DallEval ``biases/compute_mad.py``):

- ``mad``: mean absolute deviation, ``mean_k |p_k - mean(p)|`` (= ``mean_k |p_k - 1/K|``): 0 for
  uniform, ``2 (K - 1) / K^2`` when one category takes everything. DALL-EVAL's definition.
- ``tv``: total variation distance from uniform, ``1/2 sum_k |p_k - 1/K|`` (= ``K/2 * mad``): 0 for
  uniform, ``1 - 1/K`` for one category.
- ``entropy``: normalised Shannon entropy, ``-sum_k p_k ln p_k / ln K``: 1 for uniform, 0 for one
  category (a *lower* value is a stronger skew).

Written here because the three are one line each over numpy and no well-kept library offers
DALL-EVAL's variant of MAD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import numpy as np

MEASURES: tuple[str, ...] = ("mad", "tv", "entropy")
DEFINITIONS = {
    "mad": "DALL-EVAL's MAD: mean over categories of |p_k - mean(p)| (0 = uniform)",
    "tv": "total variation from uniform: 1/2 sum_k |p_k - 1/K| (0 = uniform, 1 - 1/K = one category)",
    "entropy": "normalised entropy: -sum_k p_k ln p_k / ln K (1 = uniform, 0 = one category)",
}


def proportions(labels: Sequence[str | None], categories: Sequence[str]) -> np.ndarray | None:
    """Proportions of ``categories`` among the detected ``labels`` (None = undetected, left out); None if none."""
    detected = [label for label in labels if label is not None]
    if not detected:
        return None
    index = {c: k for k, c in enumerate(categories)}
    counts = np.zeros(len(categories))
    for label in detected:
        counts[index[label]] += 1
    return counts / counts.sum()


def mad(p: np.ndarray) -> float:
    """DALL-EVAL's mean absolute deviation of the proportions from their mean."""
    p = np.asarray(p, dtype=float)
    return float(np.mean(np.abs(p - p.mean())))


def total_variation(p: np.ndarray) -> float:
    """Total variation distance between ``p`` and the uniform distribution."""
    p = np.asarray(p, dtype=float)
    return float(0.5 * np.abs(p - 1.0 / p.size).sum())


def normalised_entropy(p: np.ndarray) -> float:
    """Shannon entropy of ``p`` divided by ln K (scipy.stats.entropy)."""
    from scipy.stats import entropy

    p = np.asarray(p, dtype=float)
    return float(entropy(p) / np.log(p.size)) if p.size > 1 else 0.0


def skew(p: np.ndarray, measure: str) -> float:
    """One of :data:`MEASURES` of the distribution ``p``."""
    return {"mad": mad, "tv": total_variation, "entropy": normalised_entropy}[measure](p)


def skew_rows(p: np.ndarray, measure: str) -> np.ndarray:
    """:func:`skew` of every row of ``p`` (R, K) at once."""
    p = np.asarray(p, dtype=float)
    k = p.shape[1]
    if measure == "mad":
        return np.abs(p - p.mean(1, keepdims=True)).mean(1)
    if measure == "tv":
        return 0.5 * np.abs(p - 1.0 / k).sum(1)
    from scipy.stats import entropy

    return entropy(p, axis=1) / np.log(k) if k > 1 else np.zeros(len(p))


def expected_at_n(p: np.ndarray, n: int, measure: str, draws: int = 2000, seed: int = 0) -> float:
    """Expected ``measure`` of the proportions of ``n`` draws from ``p`` (Monte Carlo, seeded).

    The plug-in measures are biased for small ``n`` (n draws from a uniform distribution rarely
    look uniform), so a model is compared with a generator that copies ``p`` *at its own n*.
    """
    if n <= 0:
        return float("nan")
    counts = np.random.default_rng(seed).multinomial(int(n), np.asarray(p, dtype=float), size=int(draws))
    return float(skew_rows(counts / n, measure).mean())


def mean_over_prompts(groups: dict[str, Sequence[str | None]], categories: Sequence[str], measure: str) -> float:
    """``measure`` per prompt (its images' detected labels), averaged over prompts with any detection."""
    values = [skew(p, measure) for p in (proportions(labels, categories) for labels in groups.values()) if p is not None]
    return float(np.mean(values)) if values else float("nan")


# ----------------------------------------------------------------------------- the metric

from typing import Any  # noqa: E402

from harness.data.prompts import PromptRecord  # noqa: E402
from harness.errors import ConfigError  # noqa: E402
from harness.metrics.base import Metric  # noqa: E402
from harness.store.rows import MetricResult  # noqa: E402
from harness.store.samples import Sample  # noqa: E402

JUDGES = {"toy": "harness.dalleval.bias_toy:ToyAttributeReader",
          "vqa": "harness.dalleval.vqa_judge:VQAAttributeReader"}


def build_attribute_reader(reader: Any, options: dict[str, Any] | None = None) -> Any:
    """``toy`` (exact toy reader), ``vqa`` (a VQA model, local weights) or ``module:Class``."""
    from harness.registry import build_plugin

    return build_plugin(reader, JUDGES, "metric.bias_skew.judge", options, shared=True)


#: The interval of the model's measures (harness.stats.bias_corrected_bootstrap_ci).
INTERVAL = ("95% bias-corrected bootstrap over images (percentiles shifted by the resamples' mean minus the "
            "estimate; contains the estimate)")


class BiasSkew(Metric):
    """``bias_skew``: per attribute, how far the generated distribution is from uniform.

    Records carry ``meta["bias"] = {"objects": [noun, ...], "attributes": [name, ...]}``. The judge
    (option ``judge``: ``toy``, ``vqa`` or ``module:Class``, with ``judge_options``) reads each object's attributes (one label or None per attribute). A *group* is one (prompt,
    object position) for object attributes, one prompt for ``background``; each measure
    (:data:`MEASURES`) is computed per group on the detected labels and averaged over groups.

    Rows: ``bias.<attribute>.<measure>`` (bias-corrected bootstrap over images, :data:`INTERVAL`), with
    ``reference="toy_train"`` also ``.train`` (the same groups under the training distribution,
    :func:`harness.dalleval.bias_toy.training_distribution`), ``.train_at_n`` (the expected measure
    of a generator that copies the training distribution, with the model's detected count per group:
    the plug-in measures are biased upwards at small n, so this is the fair comparison) and
    ``.amplification`` (model minus ``train_at_n``; ``train_at_n`` carries the 2.5-97.5% range of the
    copying generator's draws: a model figure outside it skews differently from its data. The
    model's own percentile bootstrap sits above the plug-in estimate for these measures, since
    resampled sets look more skewed, so it is not used for that comparison); ``bias.<attribute>.mad[<noun>]`` per object noun (groups of
    that noun; object attributes), with ``.train_at_n``; ``bias.<attribute>.detected`` = fraction of objects whose attribute was read.
    ``estimate=True`` (detected attributes, e.g. a VQA model's answers) marks every definition as
    an estimate of the attribute, not its ground truth.
    """

    name = "bias_skew"

    def __init__(self, judge: Any = "toy", judge_options: dict[str, Any] | None = None,
                 measures: list[str] | None = None, reference: str | None = None, reference_scenes: int = 20000,
                 resamples: int = 1000, per_noun: bool = True, estimate: bool | None = None) -> None:
        self.measures = list(measures or MEASURES)
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown:
            raise ConfigError(f"metric.bias_skew.measures: unknown {unknown}; known: {', '.join(MEASURES)}")
        if reference not in (None, "toy_train"):
            raise ConfigError(f"metric.bias_skew.reference={reference!r}: use null or toy_train.")
        self.reader_name, self.reader_options = judge, dict(judge_options or {})
        self.reference, self.reference_scenes = reference, int(reference_scenes)
        self.resamples, self.per_noun = int(resamples), bool(per_noun)
        self.estimate = (not isinstance(judge, str) or judge != "toy") if estimate is None else bool(estimate)

    def check_available(self) -> None:
        """Find the judge's files now, without loading them: missing weights stop the run before it generates."""
        from harness.registry import check_plugin

        check_plugin(self.reader_name, JUDGES, "metric.bias_skew.judge", self.reader_options)

    @cached_property
    def reader(self) -> Any:
        """The judge, built on first use (it may load weights)."""
        return build_attribute_reader(self.reader_name, self.reader_options)

    def reset(self) -> None:
        # (image index, group key, noun, n_objects, attribute, label or None)
        self.entries: list[tuple[int, tuple, str, int, str, str | None]] = []
        self.images = 0

    def process(self, record: PromptRecord, sample: Sample) -> list[dict[str, Any]] | None:
        meta = record.meta if isinstance(record.meta, dict) else {}
        if "bias" not in meta or sample.image is None:
            return None
        objects, attributes = list(meta["bias"]["objects"]), list(meta["bias"]["attributes"])
        read = self.reader.read_attributes(np.asarray(sample.image), record)
        image = self.images
        self.images += 1
        out = []
        for position, (noun, labels) in enumerate(zip(objects, read)):
            for attribute in attributes:
                if attribute == "background" and position > 0:
                    continue  # one background per image
                group = (record.prompt, None if attribute == "background" else position)
                label = labels.get(attribute)
                self.entries.append((image, group, noun, len(objects), attribute, label))
                out.append({"metric": f"bias_label.{attribute}", "value": float(label is not None),
                            "item": f"{noun}={label if label is not None else 'undetected'}"})
        return out

    # -- aggregation ------------------------------------------------------------------------------
    def _statistic(self, attribute: str, measure: str, keep: list[int]) -> tuple[np.ndarray, np.ndarray, Any]:
        """(image ids, group ids, fn(indices of images) -> measure) for the entries ``keep``."""
        categories = self.reader.categories(attribute)
        entries = [self.entries[k] for k in keep]
        groups = sorted({e[1] for e in entries}, key=str)
        group_id = {g: k for k, g in enumerate(groups)}
        image_ids = np.array([e[0] for e in entries])
        gids = np.array([group_id[e[1]] for e in entries])
        cats = np.array([-1 if e[5] is None else categories.index(e[5]) for e in entries])
        n_images, n_groups, n_cats = self.images, len(groups), len(categories)

        def value(image_sample: np.ndarray) -> float:
            weights = np.bincount(image_sample, minlength=n_images)[image_ids]
            detected = cats >= 0
            table = np.bincount(gids[detected] * n_cats + cats[detected], weights=weights[detected],
                                minlength=n_groups * n_cats).reshape(n_groups, n_cats)
            totals = table.sum(1)
            values = [skew(row / total, measure) for row, total in zip(table, totals) if total > 0]
            return float(np.mean(values)) if values else float("nan")

        return image_ids, gids, value

    def _interval(self, value_fn: Any) -> tuple[float | None, float | None]:
        """The plug-in measures are biased upwards at small n: a bias-corrected bootstrap interval,
        which contains the estimate (a plain percentile interval often lies wholly above it)."""
        from harness.stats import bias_corrected_bootstrap_ci

        return bias_corrected_bootstrap_ci(self.images, value_fn, resamples=self.resamples, bounds=(0.0, 1.0))

    def _reference(self, attribute: str, measure: str, keep: list[int], draws: int = 2000,
                   ) -> tuple[float, float, float, float]:
        """(measure under the training distribution; for a generator copying it with the model's detected
        count per group: the expected measure and its 2.5% and 97.5% quantiles), means over groups."""
        from harness.dalleval.bias_toy import training_distribution

        population, simulated = [], []
        for g, group in enumerate(sorted({self.entries[k][1] for k in keep}, key=str)):
            members = [self.entries[k] for k in keep if self.entries[k][1] == group]
            _, _, noun, n_objects, _, _ = members[0]
            n_detected = sum(e[5] is not None for e in members)
            p, total = training_distribution(attribute, noun, n_objects, self.reference_scenes)
            if total and n_detected:
                population.append(skew(p, measure))
                counts = np.random.default_rng([0, g]).multinomial(n_detected, p, size=draws)
                simulated.append(skew_rows(counts / n_detected, measure))
        if not population:
            return (float("nan"),) * 4
        null = np.mean(simulated, axis=0)  # the mean over groups, draw by draw
        return (float(np.mean(population)), float(null.mean()), float(np.quantile(null, 0.025)),
                float(np.quantile(null, 0.975)))

    def compute(self) -> list[MetricResult]:
        if not self.entries:
            return self.nothing_to_score("no record carries meta.bias (objects and attributes) with an image")
        results = []
        note = (" ESTIMATE: attributes detected by a model, not ground truth." if self.estimate
                else " Attributes read exactly from the image (toy world).")
        identity = self.reader.identity() if hasattr(self.reader, "identity") else self.reader_name
        everything = np.arange(self.images)
        for attribute in dict.fromkeys(e[4] for e in self.entries):
            keep = [k for k, e in enumerate(self.entries) if e[4] == attribute]
            detected = sum(self.entries[k][5] is not None for k in keep)
            results.append(MetricResult(f"bias.{attribute}.detected", detected / len(keep), len(keep),
                                        definition=f"fraction of objects whose {attribute} the reader ({identity}) read.{note}"))
            for measure in self.measures:
                _, _, value = self._statistic(attribute, measure, keep)
                model = value(everything)
                low, high = self._interval(value)
                base = f"{DEFINITIONS[measure]}; per (prompt, object) group over detected images, mean over groups"
                results.append(MetricResult(f"bias.{attribute}.{measure}", model, detected, low, high,
                                            definition=f"{base}; {INTERVAL}.{note}"))
                if self.reference == "toy_train":
                    train, train_at_n, null_low, null_high = self._reference(attribute, measure, keep)
                    results.append(MetricResult(
                        f"bias.{attribute}.{measure}.train", train, self.reference_scenes,
                        definition=(f"{base}, under the training distribution ({self.reference_scenes} sampled train "
                                    f"scenes per object count, objects whose caption leaves {attribute} unsaid)")))
                    results.append(MetricResult(
                        f"bias.{attribute}.{measure}.train_at_n", train_at_n, detected, null_low, null_high,
                        definition=(f"{base}: a generator that copies the training distribution, with the model's "
                                    "detected count per group (2000 multinomial draws): mean, and 2.5%-97.5% range of "
                                    "the draws (a model outside the range skews differently from its data)")))
                    results.append(MetricResult(
                        f"bias.{attribute}.{measure}.amplification", model - train_at_n, detected,
                        definition=(f"model minus train_at_n of {measure} (> 0 for mad/tv, < 0 for entropy: the model "
                                    "skews more than its data); compare the model's figure with train_at_n's range")))
                if not self.per_noun or measure != "mad" or attribute == "background":
                    continue
                for noun in dict.fromkeys(self.entries[k][2] for k in keep):
                    sub = [k for k in keep if self.entries[k][2] == noun]
                    _, _, value_noun = self._statistic(attribute, measure, sub)
                    low_n, high_n = self._interval(value_noun)
                    n_noun = sum(self.entries[k][5] is not None for k in sub)
                    results.append(MetricResult(f"bias.{attribute}.{measure}[{noun}]", value_noun(everything), n_noun,
                                                low_n, high_n,
                                                definition=f"{base}, groups of '{noun}' only; {INTERVAL}.{note}"))
                    if self.reference == "toy_train":
                        _, at_n, at_low, at_high = self._reference(attribute, measure, sub)
                        results.append(MetricResult(f"bias.{attribute}.{measure}[{noun}].train_at_n", at_n, n_noun,
                                                    at_low, at_high,
                                                    definition=(f"{base}, groups of '{noun}', a generator copying the "
                                                                "training distribution at the model's n: mean, 2.5-97.5% range")))
        headline = [r.value for r in results if r.metric.count(".") == 2 and r.metric.endswith(".mad")
                    and r.metric.startswith("bias.") and not np.isnan(r.value)]
        if headline:
            results.insert(0, MetricResult(self.name, float(np.mean(headline)), len(headline), definition=(
                "DALL-EVAL's MAD (per prompt group, mean over groups), averaged over the attributes read "
                f"({len(headline)}); read the per-attribute rows.{note}")))
        for result in results:  # an empty cell says why (harness.store.rows.SKIPPED_REASON_COLUMN)
            if not math.isfinite(result.value):
                result.extra.setdefault("skipped_reason", "no (prompt, object) group has a detected attribute "
                                                          "(or a reference) to measure")
        return results
