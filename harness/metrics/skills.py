"""``skill_accuracy``: per-skill accuracy of a text-to-image model (DALL-EVAL / PaintSkills / GenEval).

Each record carries GenEval-style tags (``meta["skill"]``, ``meta["include"]``); a *reader* turns
the generated image into seen objects and :func:`harness.dalleval.judge.judge_skill` decides
pass or fail. Readers (``judge=``):

- ``toy``: :class:`harness.dalleval.toy_reader.ToySceneReader`, the toy annotator's regions and the
  toy evaluator's shapes: exact on renders.
- ``detector``: :class:`harness.dalleval.detector_judge.DetectorReader`, torchvision Mask R-CNN
  (local weights) with colour from the masked pixels' hue and position from box centres.
- any ``"module:Class"`` whose instances have ``read_objects(image, record) -> list[SeenObject]``.

Aggregates: ``skill.<name>`` = passed / judged prompts of that skill (and
``skill.spatial_relation.given_objects``: the relation alone, on images showing both objects), with a binomial interval
(``interval``: ``wilson`` (default) or ``clopper_pearson``; both lie inside [0, 1]). Skills in
``not_applicable`` get a row with no value (NaN) and the reason as its definition: the toy grammar
has no numerals, so its counting cell is empty, not invented.

Binding attention (when samples hold DAAM maps, ``heatmap:<colour word>``): for each colour word
of a colour-binding prompt, the share of the word's map mass (upsampled to the image, clamped
>= 0) over all seen objects' regions that falls on the regions of the object it names (its
shape). Reported as ``binding_attention.passed`` / ``.failed`` (mean, 95% percentile bootstrap),
so a failed binding shows whether the colour word attended to the wrong object. The failed
samples' overlays (image and every word's map) go to ``<run>/failures/figures/``
(``failure_figures``: auto = the run folder under ``harness run``; a path; or null).
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harness.dalleval.judge import SKILLS, check_tags, judge_skill
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.metrics.base import Metric
from harness.stats import bootstrap_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample

INTERVALS = {"wilson": "wilson", "clopper_pearson": "exact"}


def binomial_ci(successes: int, trials: int, confidence: float = 0.95,
                method: str = "wilson") -> tuple[float | None, float | None]:
    """A binomial proportion interval (``wilson`` or ``clopper_pearson``, by scipy through
    :func:`harness.stats.proportion_ci`); (None, None) for no trials."""
    from harness.stats import proportion_ci

    if method not in INTERVALS:
        raise ConfigError(f"interval={method!r}: use one of {', '.join(INTERVALS)}.")
    return proportion_ci(int(successes), int(trials), confidence, INTERVALS[method])


JUDGES = {"toy": "harness.dalleval.toy_reader:ToySceneReader",
          "detector": "harness.dalleval.detector_judge:DetectorReader"}


def build_reader(judge: Any, options: dict[str, Any] | None = None) -> Any:
    """The reader behind ``judge``: ``toy``, ``detector`` or ``module:Class``."""
    from harness.registry import build_plugin

    return build_plugin(judge, JUDGES, "metric.skill_accuracy.judge", options, shared=True)


def read_objects(reader: Any, image: np.ndarray, record: PromptRecord) -> tuple[list, list[np.ndarray] | None]:
    """(seen objects, their region masks or None) from any reader."""
    if hasattr(reader, "read_objects"):
        return list(reader.read_objects(image, record)), None
    reading = reader.read(image)
    return list(reading.objects), list(reading.regions)


class SkillAccuracy(Metric):
    """Per-skill pass rate with binomial intervals (module docstring)."""

    name = "skill_accuracy"

    def __init__(self, judge: str = "toy", judge_options: dict[str, Any] | None = None, interval: str = "wilson",
                 confidence: float = 0.95, not_applicable: dict[str, str] | None = None,
                 failure_figures: str | None = "auto", max_failure_figures: int = 48) -> None:
        if interval not in INTERVALS:
            raise ConfigError(f"metric.skill_accuracy.interval={interval!r}: use one of {', '.join(INTERVALS)}.")
        for skill in not_applicable or {}:
            if skill not in SKILLS:
                raise ConfigError(f"metric.skill_accuracy.not_applicable: unknown skill {skill!r}; known: {', '.join(SKILLS)}")
        self.judge, self.judge_options = judge, dict(judge_options or {})
        self.interval, self.confidence = interval, float(confidence)
        self.not_applicable = dict(not_applicable or {})
        self.failure_figures, self.max_failure_figures = failure_figures, int(max_failure_figures)

    def check_available(self) -> None:
        """Find the judge's files now, without loading them: a missing checkpoint stops the run
        before it generates."""
        from harness.registry import check_plugin

        check_plugin(self.judge, JUDGES, "metric.skill_accuracy.judge", self.judge_options)

    @cached_property
    def reader(self) -> Any:
        """The judge, built on first use (it may load weights)."""
        return build_reader(self.judge, self.judge_options)

    def reset(self) -> None:
        self.passed: dict[str, list[int]] = {}
        self.binding_share: dict[str, list[float]] = {"passed": [], "failed": []}
        self.failures: list[tuple[PromptRecord, Sample]] = []

    def process(self, record: PromptRecord, sample: Sample) -> list[dict[str, Any]] | None:
        meta = record.meta if isinstance(record.meta, dict) else {}
        if "skill" not in meta or sample.image is None:
            return None
        skill, include = meta["skill"], list(meta.get("include") or [])
        check_tags(skill, include, f"record {record.id!r}: ")
        image = np.asarray(sample.image)
        seen, regions = read_objects(self.reader, image, record)
        passed = bool(judge_skill(skill, include, seen))
        self.passed.setdefault(skill, []).append(int(passed))
        if skill == "spatial_relation" and judge_skill("colour_binding", include, seen):
            # the relation alone, on images that show both asked objects (chance: 1/2 by symmetry)
            self.passed.setdefault("spatial_relation.given_objects", []).append(int(passed))
        out = [{"metric": f"skill.{skill}", "value": float(passed), "item": record.prompt}]
        if not passed and sample.arrays and len(self.failures) < self.max_failure_figures:
            self.failures.append((record, sample))
        if skill == "colour_binding" and regions is not None:
            for word, share in binding_shares(sample, include, seen, regions, image.shape[:2]).items():
                self.binding_share["passed" if passed else "failed"].append(share)
                out.append({"metric": "binding_attention", "value": share, "item": word})
        return out

    def compute(self) -> list[MetricResult]:
        if not self.passed:
            return self.nothing_to_score("no record carries skill tags (meta.skill / meta.include) or an image")
        results = []
        method = "Wilson score" if self.interval == "wilson" else "Clopper-Pearson exact"
        for skill in [s for s in SKILLS if s in self.passed] + sorted(set(self.passed) - set(SKILLS)):
            values = self.passed[skill]
            low, high = binomial_ci(sum(values), len(values), self.confidence, self.interval)
            what = (f"fraction of {skill} prompts whose image passes the judge" if skill != "spatial_relation.given_objects"
                    else "fraction of spatial-relation prompts whose image shows both asked objects (class and colour) "
                         "that also satisfy the relation; a layout blind to the relation scores 1/2 (mirror symmetry)")
            results.append(MetricResult(
                f"skill.{skill}", sum(values) / len(values), len(values), low, high,
                definition=f"{what} ({self._identity()}); {int(self.confidence * 100)}% {method} binomial interval"))
        judged = [v for skill, values in self.passed.items() if skill in SKILLS for v in values]
        low, high = binomial_ci(sum(judged), len(judged), self.confidence, self.interval)
        results.insert(0, MetricResult(
            self.name, sum(judged) / len(judged), len(judged), low, high,
            definition=(f"fraction of all skill prompts (skills {', '.join(s for s in SKILLS if s in self.passed)}) whose "
                        f"image passes the judge ({self._identity()}); {int(self.confidence * 100)}% {method} interval; "
                        "pooled over skills, so it depends on the mix: read the per-skill rows")))
        for skill, reason in self.not_applicable.items():
            if skill not in self.passed:
                results.append(MetricResult(f"skill.{skill}", math.nan, 0, definition=reason,
                                            extra={"skipped_reason": reason}))
        for outcome, shares in self.binding_share.items():
            if shares:
                array = np.asarray(shares)
                mean = float(array.mean())
                low, high = bootstrap_ci(len(array), lambda index, values=array: float(values[index].mean()))
                results.append(MetricResult(
                    f"binding_attention.{outcome}", mean, len(shares), low, high,
                    definition=(f"colour-binding prompts judged {outcome}: per colour word, share of its DAAM map mass "
                                "over the seen objects' regions that lies on the object of the shape it names; 95% percentile bootstrap over words")))
        return results

    def save_figures(self, run_dir: Path, records: list[PromptRecord], samples: Any, rows: Any = None) -> list[Path]:
        """DAAM overlays (image + every word's map) of the failed samples, into ``failures/`` of the
        run folder (``failure_figures: auto``) or the folder given: why a skill failed."""
        if self.failure_figures in (None, "", "none") or not self.failures:
            return []
        from harness.heatmaps import save_overlays

        folder = Path(run_dir) / "failures" if self.failure_figures == "auto" else Path(self.failure_figures)
        return save_overlays(folder, [r for r, _ in self.failures], [s for _, s in self.failures])

    def _identity(self) -> str:
        reader = self.__dict__.get("reader")  # the judge if it was built; never built just for a name
        return reader.identity() if reader is not None and hasattr(reader, "identity") else str(self.judge)


def binding_shares(sample: Sample, include: list[dict[str, Any]], seen: list, regions: list[np.ndarray],
                   size: tuple[int, int]) -> dict[str, float]:
    """colour word -> share of its heat-map mass on its named shape's regions (of all objects' mass)."""
    from harness.heatmaps import sample_heat_maps, upsample

    maps = sample_heat_maps(sample)
    if not maps or not regions:
        return {}
    everything = np.zeros(size, dtype=bool)
    for region in regions:
        everything |= region
    out = {}
    colours = [a.get("color") for a in include]
    classes = [a["class"] for a in include]
    for asked in include:
        word = asked.get("color")
        # a colour or shape named twice has no single object to attend to
        if word is None or word not in maps or colours.count(word) > 1 or classes.count(asked["class"]) > 1:
            continue
        named = np.zeros(size, dtype=bool)
        for obj, region in zip(seen, regions):
            if obj.cls == asked["class"]:
                named |= region
        heat = np.clip(upsample(maps[word], size), 0, None)
        total = float(heat[everything].sum())
        if total <= 0:
            continue
        out[word] = float(heat[named].sum()) / total
    return out
