import pandas as pd
import pytest

from harness.errors import DataError
from harness.report.table import load_rows, pivot, render_table
from harness.store.rows import MetricResult, build_rows, write_rows

PROVENANCE = {"git_sha": "x", "config_hash": "y", "versions": "{}", "run_dir": "d"}


def write_run(run_dir, method, hparams, value, dataset="toy_gen", metric="miou"):
    identity = {"experiment": "e", "model": "toy", "dataset": dataset, "split": "test", "method": method, "seed": 0}
    rows = build_rows(identity, hparams, PROVENANCE, [MetricResult(metric, value, 10, value - 0.1, value + 0.1)], [])
    write_rows(rows, run_dir)
    return rows


def test_sweep_hyperparameters_are_shown_but_not_differences_between_methods(tmp_path):
    write_run(tmp_path / "a", "daam", {"hp.tau": 0.3}, 0.5)
    write_run(tmp_path / "b", "daam", {"hp.tau": 0.4}, 0.6)
    write_run(tmp_path / "c", "centre_blob", {"hp.radius": 0.25}, 0.2)
    table = pivot(load_rows([str(tmp_path)], with_baselines=False), formatted=False).reset_index()
    assert "hp.tau" in table.columns and "hp.radius" not in table.columns
    daam = table[table["method"] == "daam"].set_index("hp.tau")["miou"]
    assert daam.to_dict() == {0.3: 0.5, 0.4: 0.6}


def test_published_numbers_join_only_matching_dataset_and_metric(tmp_path, monkeypatch):
    write_run(tmp_path / "run", "daam", {}, 0.5, dataset="coco_gen")
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    pd.DataFrame([
        {"dataset": "coco_gen", "model": "sd2_base", "method": "daam", "metric": "miou", "value": 0.6,
         "source": "paper:x:table1"},
        {"dataset": "ade20k", "model": "sd15", "method": "emerdiff", "metric": "miou", "value": 0.3,
         "source": "paper:y:table2"},
    ]).to_csv(baselines / "papers.csv", index=False)
    monkeypatch.setattr("harness.report.table.BASELINES_DIR", baselines)
    rows = load_rows([str(tmp_path / "run")])
    assert set(rows["source"]) == {"harness", "paper:x:table1"}
    markdown = render_table(rows)
    assert markdown.index("| harness") < markdown.index("| paper:x:table1"), "ours first, then the paper"
    assert "0.5 [0.4, 0.6]" in markdown


def test_no_rows_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="No rows.parquet"):
        load_rows([str(tmp_path)])
