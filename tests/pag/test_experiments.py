"""experiment=pag_toy (smoke, with a stand-in toy evaluator plugged in) and pag_coco's missing-file errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from harness.errors import DataError, MissingWeightsError
from harness.run import run_experiment


class StandInEvaluator:
    """What harness.toy.evaluator will provide: features, class log-probabilities and a judge."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    def class_log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.features(images)[:, :3] * 5.0, dim=1)

    def judge(self, image: np.ndarray, record) -> float:
        return float(image.mean() > 0)

    def identity(self) -> str:
        return "stand-in-evaluator"


@pytest.fixture
def stand_in_evaluator(monkeypatch):
    import harness.metrics.features as features

    module = types.ModuleType("harness.toy.evaluator")
    module.load_evaluator = lambda device="cpu": StandInEvaluator()
    monkeypatch.setitem(sys.modules, "harness.toy.evaluator", module)
    monkeypatch.setattr(features, "_BUILT", {})


def test_pag_toy_smoke_rows_and_sweep_report(compose, stand_in_evaluator, tmp_path):
    from harness.report.plots import sweep_report

    base = compose(["experiment=pag_toy"])
    assert "model=tiny_random" in base.smoke_overrides
    summaries = {}
    for index, method in enumerate(["plain", "cfg_pag"]):
        cfg = compose(["experiment=pag_toy", "model=tiny_random", f"method={method}", "smoke=true",
                       f"store.root={tmp_path / 'cache'}", f"metric.fid.stats_cache={tmp_path / 'stats'}",
                       "metric.fid.real_source_options.n=12", "metric.inception_score.splits=1"])
        outcome = run_experiment(cfg, tmp_path / "sweep" / str(index))
        aggregates = outcome.rows[outcome.rows["level"] == "aggregate"].set_index("metric")
        summaries[method] = aggregates
        assert {"fid", "inception_score", "gen_accuracy", "seconds_per_image", "unet_calls_per_image"} <= set(aggregates.index)
        assert "stand-in-evaluator" in aggregates.loc["fid", "definition"]
        assert "antialias=True" in aggregates.loc["fid", "definition"]
        assert aggregates.loc["gen_accuracy", "value"] == 1.0
    assert summaries["plain"].loc["unet_calls_per_image", "value"] == 2  # 2 smoke steps x 1 branch
    assert summaries["cfg_pag"].loc["unet_calls_per_image", "value"] == 6  # 2 steps x 3 branches
    assert summaries["plain"].loc["fid", "value"] != summaries["cfg_pag"].loc["fid", "value"]
    figures = sweep_report(tmp_path / "sweep", [{"x": "method", "metric": "fid"}], print_table=False)
    assert [f.name for f in figures] == ["fid_vs_method.png"] and figures[0].is_file()
    table = (tmp_path / "sweep" / "table.md").read_text()
    assert "plain" in table and "cfg_pag" in table


def test_pag_coco_names_each_missing_file(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative data paths resolve here, where nothing exists
    common = [f"store.root={tmp_path / 'cache'}"]
    with pytest.raises(DataError, match="captions_val2014.json"):
        run_experiment(compose(["experiment=pag_coco", *common]), tmp_path / "a")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="sd15"):
        run_experiment(compose(["experiment=pag_coco", "dataset=smoke_prompts", *common]), tmp_path / "b")
    with pytest.raises(DataError, match="datasets/coco/val2014 does not exist"):
        run_experiment(compose(["experiment=pag_coco", "dataset=smoke_prompts", "model=tiny_random", *common]),
                       tmp_path / "c")
