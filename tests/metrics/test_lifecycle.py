"""The metric lifecycle (harness/metrics/base.py): built once per run, its model loaded at most once
per process and shared by the method's and every baseline's copy, availability checked without
loading, ``compute`` never patched on an instance, and one figure hook."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from harness.errors import MissingWeightsError
from harness.metrics.base import Metric, build_metrics
from harness.registry import METRICS, load_once
from harness.run import run_experiment
from harness.store.rows import MetricResult

EVENTS: list[str] = []


class CountingMetric(Metric):
    """Counts its constructions, availability checks, model loads and computes in EVENTS."""

    name = "counting"

    def __init__(self, weights: str = "present") -> None:
        EVENTS.append("built")
        self.weights = weights

    def check_available(self) -> None:
        EVENTS.append("checked")
        if self.weights == "absent":
            raise MissingWeightsError("counting: no weights (a test stand-in)")

    @property
    def model(self) -> object:
        def load() -> object:
            EVENTS.append("loaded")
            return object()

        return load_once(("counting-model", id(EVENTS)), load)

    def reset(self) -> None:
        self.images = 0

    def process(self, record, sample) -> None:
        assert self.model is not None
        self.images += 1

    def compute(self) -> list[MetricResult]:
        EVENTS.append("computed")
        return [MetricResult(self.name, float(self.images), self.images)]

    def save_figures(self, run_dir: Path, records, samples, rows=None) -> list[Path]:
        EVENTS.append(f"figures:{sorted(set(rows['method']))}")
        return []


@pytest.fixture
def counting():
    EVENTS.clear()
    METRICS.register("counting", CountingMetric)
    yield
    METRICS.unregister("counting")


def test_metrics_are_built_once_and_their_model_loaded_once_per_run(counting, compose, tmp_path):
    cfg = compose(["experiment=smoke", "dataset.size=2", "generation.steps=1", f"store.root={tmp_path / 'store'}",
                   "+baseline.whole_image={}", "+baseline.centre_blob={}", "figures=true"])
    with open_dict(cfg):
        cfg.metric = OmegaConf.create({"counting": {}})
    outcome = run_experiment(cfg, tmp_path / "run")
    # one construction and one check for the run (method + 2 baselines score into fresh copies),
    # one model load shared by the three copies, one compute per scored producer
    assert EVENTS[:2] == ["built", "checked"] and EVENTS.count("built") == 1 and EVENTS.count("checked") == 1
    assert EVENTS.count("loaded") == 1
    assert EVENTS.count("computed") == 3
    # the one figure hook, called once, with the method's rows
    assert [e for e in EVENTS if e.startswith("figures")] == ["figures:['generate']"]
    rows = outcome.rows[(outcome.rows["level"] == "aggregate") & (outcome.rows["metric"] == "counting")]
    assert sorted(rows["method"]) == ["centre_blob", "generate", "whole_image"]
    assert rows["value"].tolist() == [2.0, 2.0, 2.0] and set(rows["metric_entry"]) == {"counting"}
    # a second run in the same process reuses the loaded model
    run_experiment(cfg, tmp_path / "run2")
    assert EVENTS.count("loaded") == 1


def test_compute_is_not_patched_and_entries_tag_their_rows(counting):
    (metric,) = build_metrics({"counting": {}})
    assert "compute" not in vars(metric) and "results" not in vars(metric)
    copy = metric.fresh()
    assert copy is not metric and copy.entry == "counting" and "compute" not in vars(copy)
    copy.process(None, None)
    assert metric.images == 0 and copy.images == 1  # state is the copy's own
    assert [r.extra["metric_entry"] for r in copy.results()] == ["counting"]


def test_an_unavailable_metric_stops_the_build_without_loading_or_becomes_an_empty_cell(counting):
    with pytest.raises(MissingWeightsError, match="no weights"):
        build_metrics({"counting": {"weights": "absent"}})
    (skipped,) = build_metrics({"counting": {"weights": "absent", "optional": True}})
    (row,) = skipped.results()
    assert row.n == 0 and "no weights" in row.extra["skipped_reason"] and row.extra["metric_entry"] == "counting"
    assert "loaded" not in EVENTS


def test_judges_are_checked_by_their_files_without_loading(tmp_path, monkeypatch):
    """bias_skew's VQA judge and skill_accuracy's detector judge: a missing model stops at the check,
    and the check never builds the model (transformers' pipeline and torchvision are not called)."""
    import torchvision.models.detection as detection
    import transformers

    from harness.metrics.bias import BiasSkew
    from harness.metrics.skills import SkillAccuracy

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded by an availability check")

    monkeypatch.setattr(transformers, "pipeline", refuse)
    monkeypatch.setattr(detection, "maskrcnn_resnet50_fpn", refuse)
    with pytest.raises(MissingWeightsError, match="nowhere"):
        BiasSkew(judge="vqa", judge_options={"model": str(tmp_path / "nowhere")}).check_available()
    with pytest.raises(MissingWeightsError, match="Mask R-CNN weights"):
        SkillAccuracy(judge="detector", judge_options={"weights": str(tmp_path / "none.pth")}).check_available()
    folder = tmp_path / "vqa"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    BiasSkew(judge="vqa", judge_options={"model": str(folder)}).check_available()  # found, not loaded
