"""A metric or baseline that cannot run stops the run (before generation) unless marked optional;
an optional one that was skipped is an empty cell in the table with its reason in the rows.
Reported parameters are the ones used: k-means never lowers K behind the caller's back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.baselines.emerdiff_baselines import KMeansColours
from harness.cli import main
from harness.clustering import kmeans_labels
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.metrics.base import build_metrics
from harness.overlap import iou
from harness.report.table import render_table
from harness.store.samples import Sample

MISSING_JUDGE = "harness.toy.no_such_evaluator"


def _run(tmp_path: Path, *overrides: str) -> list[str]:
    return ["run", "experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}", f"store.root={tmp_path / 'cache'}",
            "print_summary=false", "generation.steps=1", "dataset.size=2", *overrides]


def _stored(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_metric_without_its_model_stops_the_run_before_generation(capsys, tmp_path):
    code = main(_run(tmp_path, "metric=[mean_intensity,gen_accuracy]",
                     f"metric.gen_accuracy.evaluator_module={MISSING_JUDGE}"))
    error = capsys.readouterr().err
    assert code == 2
    assert f"gen_accuracy cannot run: the evaluator module '{MISSING_JUDGE}' does not exist" in error
    assert "Traceback" not in error
    assert _stored(tmp_path / "cache") == []  # nothing was generated
    assert not (tmp_path / "run" / "summary.csv").exists()


def test_an_optional_metric_that_cannot_run_is_an_empty_cell_with_its_reason(capsys, tmp_path):
    code = main(_run(tmp_path, "metric=[mean_intensity,gen_accuracy]",
                     f"metric.gen_accuracy.evaluator_module={MISSING_JUDGE}", "+metric.gen_accuracy.optional=true",
                     "+baseline.detectron2.optional=true"))
    assert code == 0, capsys.readouterr().err
    rows = pd.read_parquet(tmp_path / "run" / "rows.parquet")
    aggregate = rows[rows["level"] == "aggregate"].set_index(["method", "metric"])
    skipped = aggregate.loc[("generate", "gen_accuracy")]
    assert math.isnan(skipped["value"]) and skipped["n"] == 0
    assert MISSING_JUDGE in skipped["skipped_reason"]
    assert aggregate.loc[("generate", "mean_intensity"), "value"] > 0  # the rest still ran
    assert pd.isna(aggregate.loc[("generate", "mean_intensity"), "skipped_reason"])
    # the optional baseline that cannot run: one NaN row per metric, with the reason
    for metric in ("mean_intensity", "gen_accuracy"):
        row = aggregate.loc[("detectron2", metric)]
        assert math.isnan(row["value"]) and "detectron2 is not importable" in row["skipped_reason"]
    table = render_table(rows)
    line = next(line for line in table.splitlines() if "| generate" in line)
    assert "nan" not in table.lower().replace("n/a", "")
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert "" in cells  # gen_accuracy's cell is empty


def test_optional_must_be_a_boolean_and_options_are_still_checked():
    with pytest.raises(ConfigError, match="optional must be true or false"):
        build_metrics({"mean_intensity": {"optional": "yes"}})
    with pytest.raises(ConfigError, match="got options"):
        build_metrics({"gen_accuracy": {"optional": True, "no_such_option": 1}})


def test_kmeans_refuses_more_clusters_than_distinct_points():
    points = np.repeat(np.eye(3), 10, axis=0)  # 3 distinct points, 30 rows
    assert set(kmeans_labels(points, 3, seed=0, restarts=1)) == {0, 1, 2}
    with pytest.raises(DataError, match="K=4 clusters but the data has only 3 distinct points"):
        kmeans_labels(points, 4, seed=0, restarts=1)


def test_kmeans_colours_reports_the_k_it_used_or_stops():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 200  # two colours
    record = PromptRecord("r0", "", 0)
    prediction = KMeansColours(None).predict(record, Sample(image=image, meta={"clusters": 2}))
    assert prediction.meta == {"clusters": 2, "clusters_asked": 2} and len(np.unique(prediction.arrays["labels"])) == 2
    lowered = KMeansColours(None).predict(record, Sample(image=image, meta={"clusters": 5}))
    assert lowered.meta == {"clusters": 2, "clusters_asked": 5}  # the K used, beside the K asked for
    assert KMeansColours(None).params()["cap_at_distinct"] is True  # the rule is in the hp columns
    with pytest.raises(DataError, match="kmeans_colours on record 'r0': K=3 clusters but the data has only 2"):
        KMeansColours(None, cap_at_distinct=False).predict(record, Sample(image=image, meta={"clusters": 3}))


def test_one_iou_for_single_masks_and_stacks():
    truth = np.zeros((4, 4), bool)
    truth[:2] = True
    masks = np.stack([truth, ~truth, np.ones((4, 4), bool), np.zeros((4, 4), bool)])
    np.testing.assert_allclose(iou(masks, truth), [1.0, 0.0, 0.5, 0.0])
    assert iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0  # both empty
