"""Selection as code: the rules on exact cases, the config round trip, and a dev run end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.selection import (
    Evaluated,
    Protocol,
    apply_selected,
    choose,
    compose,
    parse_protocol,
    run_selection,
    write_chosen,
)


def ev(value, half=None, **setting):
    low, high = (value - half, value + half) if half is not None else (None, None)
    return Evaluated(setting, value, low, high, 10)


def test_argmax_takes_the_best_and_the_first_on_ties():
    results = [ev(0.50, k=3), ev(0.60, k=4), ev(0.60, k=6), ev(0.55, k=8)]
    assert choose(results, "max", "argmax") == 1
    assert choose(results, "min", "argmax") == 0


def test_one_se_takes_the_first_setting_within_one_standard_error_of_the_best():
    # best 0.60 with interval +-0.0392 -> SE 0.02: settings >= 0.58 qualify; 0.585 is the first
    results = [ev(0.50, 0.05, k=3), ev(0.585, 0.05, k=4), ev(0.60, 0.0392, k=6), ev(0.59, 0.05, k=8)]
    assert results[2].se == pytest.approx(0.02, abs=1e-4)
    assert choose(results, "max", "one_se") == 1
    # no interval on the best (FID): falls back to the argmax / argmin
    assert choose([ev(300.0, k=1), ev(290.0, k=2)], "min", "one_se") == 1
    # goal min: within one SE above the lowest
    assert choose([ev(10.5, 1.0, k=1), ev(10.0, 1.96, k=2)], "min", "one_se") == 0


def test_protocol_must_select_on_dev_and_declare_its_grid():
    block = {"objective": {"metric": "miou"}, "grid": [{"key": "a.b", "values": [1, 2]}]}
    assert parse_protocol("x", block).settings() == [{"a.b": 1}, {"a.b": 2}]
    with pytest.raises(ConfigError, match="dev"):
        parse_protocol("x", block | {"split": "test"})
    with pytest.raises(ConfigError, match="rule"):
        parse_protocol("x", block | {"rule": "best_on_test"})
    with pytest.raises(ConfigError, match="grid"):
        parse_protocol("x", {"objective": {"metric": "miou"}})
    two = parse_protocol("x", block | {"grid": [{"key": "k", "values": [3, 4]}, {"key": "t", "values": [1, 2]}]})
    assert two.settings() == [{"k": 3, "t": 1}, {"k": 3, "t": 2}, {"k": 4, "t": 1}, {"k": 4, "t": 2}]


def test_chosen_values_are_written_and_read_back(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("# @package _global_\nexperiment: x\nselection:\n  split: dev\n")
    write_chosen(path, "x", {"method.layers": ["up_blocks.*"], "metric.miou.threshold": 0.45})
    write_chosen(path, "x", {"method.layers": ["down_blocks.*", "up_blocks.*"], "metric.miou.threshold": 0.5})
    loaded = OmegaConf.load(path)
    assert loaded.selection.split == "dev" and loaded.experiment == "x"
    assert [(e.key, OmegaConf.to_object(e.value) if OmegaConf.is_config(e.value) else e.value)
            for e in loaded.selection.chosen] == [("method.layers", ["down_blocks.*", "up_blocks.*"]),
                                                  ("metric.miou.threshold", 0.5)]
    assert path.read_text().count("chosen:") == 1


def test_chosen_values_apply_where_the_key_exists_unless_the_command_line_sets_it():
    cfg = OmegaConf.create({"method": {"name": "plain"}, "metric": {"miou": {"threshold": 0.4}},
                            "selection": {"chosen": [{"key": "method.pag_scale", "value": 5.0},
                                                     {"key": "metric.miou.threshold", "value": 0.5}]}})
    applied = apply_selected(cfg.copy())
    assert applied.metric.miou.threshold == 0.5 and "pag_scale" not in applied.method  # plain has no PAG scale
    assert apply_selected(cfg.copy(), ["metric.miou.threshold=0.3"]).metric.miou.threshold == 0.4
    pag = OmegaConf.create({"method": {"name": "pag", "pag_scale": 3.0}, "selection": cfg.selection})
    assert apply_selected(pag.copy()).method.pag_scale == 5.0
    # a sweep's group choice (method=pag) is not a value override of method.pag_scale
    assert apply_selected(pag.copy(), ["method=pag", "dataset=toy_gen"]).method.pag_scale == 5.0
    assert apply_selected(pag.copy(), ["method.pag_scale=2.0"]).method.pag_scale == 3.0  # composed value kept


def test_every_toy_experiment_declares_a_dev_protocol_and_reports_on_test():
    for name in ("daam_toy", "emerdiff_toy", "pag_toy"):
        cfg = compose([f"experiment={name}"])
        protocol = parse_protocol(name, cfg.selection)
        assert protocol.split == "dev" and cfg.dataset.split == "test"
        for key, _ in protocol.grid:  # every grid key exists in the dev run's config
            parent, _, leaf = key.rpartition(".")
            method_cfg = compose([f"experiment={name}", *([f"method={protocol.method}"] if protocol.method else [])])
            assert leaf in OmegaConf.select(method_cfg, parent), key


def test_selection_runs_on_dev_and_reuses_samples_for_metric_only_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    protocol = Protocol("daam_toy", grid=[("method.layers", [["up_blocks.*"], ["down_blocks.*", "up_blocks.*"]]),
                                          ("metric.miou.threshold", [0.3, 0.5])],
                        objective_metric="miou", objective_method="daam", size=2, dataset="toy_gen")
    extra = ["model=tiny_random", "generation.batch_size=2", "generation.steps=2", f"store.root={tmp_path / 'cache'}"]
    results = run_selection(protocol, Path(tmp_path / "runs"), extra)
    assert [r.setting for r in results] == protocol.settings()
    import pandas as pd

    rows = [pd.read_parquet(p) for p in sorted((tmp_path / "runs").rglob("rows.parquet"))]
    assert len(rows) == 4 and all(set(r["split"]) == {"dev"} for r in rows)
    assert all(set(r["method"]) == {"daam"} for r in rows)  # no baselines in dev runs
    # the threshold only changes the metric: its second setting reuses the first one's samples
    assert [r.generated for r in results] == [2, 0, 2, 0]
    assert 0.0 <= min(r.value for r in results) <= max(r.value for r in results) <= 1.0


def test_nan_never_wins_a_selection():
    nan = float("nan")
    # max() over (NaN, ...) keys would keep a leading NaN: it must be passed over, for either goal
    assert choose([ev(nan, k=1), ev(0.4, k=2), ev(0.6, k=3)], "max", "argmax") == 2
    assert choose([ev(nan, k=1), ev(0.4, k=2), ev(0.6, k=3)], "min", "argmax") == 1
    assert choose([ev(0.5, 0.1, k=1), ev(nan, k=2), ev(0.55, 0.01, k=3)], "max", "one_se") == 2
    with pytest.raises(ConfigError, match="no setting gave a finite objective"):
        choose([ev(nan, k=1), ev(nan, k=2)], "max", "argmax")


def test_select_refuses_a_test_split_after_the_overrides():
    from harness.selection import setting_config

    protocol = Protocol("daam_toy", grid=[("metric.miou.threshold", [0.3])], objective_metric="miou", size=2)
    assert setting_config(protocol, {"metric.miou.threshold": 0.3}).dataset.split == "dev"
    with pytest.raises(ConfigError, match="dev only; the overrides make dataset.split=test"):
        setting_config(protocol, {"metric.miou.threshold": 0.3}, ["dataset.split=test"])
    # the grid value is what the dev run executes, not selection.chosen (applied by the run)
    from harness.compose import resolve_run_config

    assert resolve_run_config(setting_config(protocol, {"metric.miou.threshold": 0.3})).metric.miou.threshold == 0.3


def test_evidence_records_the_full_commit_and_whether_the_tree_was_dirty():
    from harness.selection import evidence_markdown

    protocol = Protocol("x", grid=[("a", [1, 2])], objective_metric="miou")
    sha = "0123456789abcdef0123456789abcdef01234567"
    clean = evidence_markdown(protocol, [ev(0.5, a=1), ev(0.6, a=2)], 1, "harness select experiment=x", 60, sha)
    assert f"commit `{sha}`, clean working tree" in clean
    dirty = evidence_markdown(protocol, [ev(0.5, a=1), ev(0.6, a=2)], 1, "cmd", 60, f"{sha}-dirty")
    assert f"commit `{sha}`, with uncommitted changes to tracked files (dirty)" in dirty
