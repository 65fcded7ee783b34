"""`harness table --compare METHOD`: paired differences over shared images, exact small cases."""

from __future__ import annotations

import pytest

from harness.cli import main
from harness.errors import DataError
from harness.report.table import compare_table
from harness.store.rows import MetricResult, build_rows, write_rows

PROVENANCE = {"git_sha": "x", "config_hash": "y", "versions": "{}", "run_dir": "d"}


def write_run(run_dir, method, per_sample, dataset="toy_gen", metric="miou", hparams=None, extra_aggregates=()):
    identity = {"experiment": "e", "model": "toy", "dataset": dataset, "split": "test", "method": method, "seed": 0}
    rows = [{"sample_id": sample, "kind": "quality", "metric": metric, "value": value, "item": f"w{k}"}
            for sample, values in per_sample.items() for k, value in enumerate(values)]
    flat = [v for values in per_sample.values() for v in values]
    aggregates = [MetricResult(metric, sum(flat) / len(flat), len(flat)), *extra_aggregates]
    write_rows(build_rows(identity, hparams or {}, PROVENANCE, aggregates, rows), run_dir)


def test_paired_difference_is_over_per_image_means_of_shared_images(tmp_path):
    write_run(tmp_path / "daam", "daam", {"img1": [0.5, 0.7], "img2": [0.2]},
              extra_aggregates=[MetricResult("fid", 300.0, 2)])
    write_run(tmp_path / "blob", "centre_blob", {"img1": [0.1, 0.1], "img2": [0.2]})
    write_run(tmp_path / "other", "whole_image", {"img3": [0.4]})
    table = compare_table([str(tmp_path)], "daam").set_index(["metric", "predictor"])
    blob = table.loc[("miou", "centre_blob")]
    # per image: img1 0.1 - 0.6 = -0.5, img2 0.2 - 0.2 = 0; mean -0.25. With two images a resample
    # is (img1, img1) -0.5, mixed -0.25 or (img2, img2) 0, so the percentile interval is [-0.5, 0].
    assert blob["n_images"] == 2 and blob["difference"] == "-0.25 [-0.5, +0]"
    assert blob["reference_mean"] == pytest.approx(0.4) and blob["predictor_mean"] == pytest.approx(0.15)
    other = table.loc[("miou", "whole_image")]
    assert other["n_images"] == 0 and "not paired" in other["difference"]
    fid = table.loc[("fid", "(all)")]
    assert "no per-sample values" in fid["difference"]


def test_runs_of_one_method_are_told_apart_by_their_hyperparameters(tmp_path):
    write_run(tmp_path / "a", "pag", {"p1": [0.0], "p2": [1.0], "p3": [1.0]}, metric="gen_accuracy",
              hparams={"hp.pag_scale": 1.0})
    write_run(tmp_path / "b", "pag", {"p1": [1.0], "p2": [1.0], "p3": [1.0]}, metric="gen_accuracy",
              hparams={"hp.pag_scale": 3.0})
    write_run(tmp_path / "c", "plain", {"p1": [0.0], "p2": [1.0], "p3": [0.0]}, metric="gen_accuracy")
    with pytest.raises(DataError, match="several runs"):
        compare_table([str(tmp_path)], "pag")
    table = compare_table([str(tmp_path)], "pag (pag_scale=1.0)").set_index("predictor")
    assert table.loc["pag (pag_scale=3.0)", "difference"].startswith("+0.3333")
    assert table.loc["plain", "difference"].startswith("-0.3333")
    with pytest.raises(DataError, match="no per-sample rows"):
        compare_table([str(tmp_path)], "daam")


def test_cli_prints_the_paired_table(tmp_path, capsys):
    write_run(tmp_path / "daam", "daam", {"img1": [0.5], "img2": [0.3]})
    write_run(tmp_path / "blob", "centre_blob", {"img1": [0.4], "img2": [0.2]})
    assert main(["table", str(tmp_path), "--no-baselines", "--compare", "daam"]) == 0
    out = capsys.readouterr().out
    assert "Paired differences against daam" in out and "-0.1 [-0.1, -0.1]" in out
    assert main(["table", str(tmp_path), "--compare", "nobody"]) == 2
