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
    """What harness.toy.evaluator provides: features, class log-probabilities and a judge.

    The judge's answer depends on the image's content (1 when the red channel outweighs the
    blue one); every image it judged is kept in ``seen`` so a test can recompute the answer.
    """

    seen: list = []

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    def class_log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.features(images)[:, :3] * 5.0, dim=1)

    @staticmethod
    def reddish(image: np.ndarray) -> float:
        return float(image[..., 0].astype(float).mean() > image[..., 2].astype(float).mean())

    def judge(self, image: np.ndarray, record) -> float:
        self.seen.append((record.id, np.array(image)))
        return self.reddish(image)

    def identity(self) -> str:
        return "stand-in-evaluator"


@pytest.fixture
def stand_in_evaluator(monkeypatch):

    module = types.ModuleType("harness.toy.evaluator")
    module.load_evaluator = lambda device="cpu": StandInEvaluator()
    monkeypatch.setitem(sys.modules, "harness.toy.evaluator", module)
    monkeypatch.setattr(StandInEvaluator, "seen", [])


def test_pag_toy_smoke_rows_and_sweep_report(compose, stand_in_evaluator, tmp_path):
    from harness.report.plots import sweep_report

    base = compose(["experiment=pag_toy"])
    assert "model=tiny_random" in base.smoke_overrides
    summaries = {}
    for index, method in enumerate(["plain", "cfg_pag"]):
        cfg = compose(["experiment=pag_toy", "model=tiny_random", f"method={method}", "smoke=true",
                       f"store.root={tmp_path / 'cache'}", f"metric.fid.stats_cache={tmp_path / 'stats'}",
                       "metric.fid.real_source_options.n=12", "metric.inception_score.splits=1",
                       # the toy evaluator's features (a stand-in here), not the smoke overrides' pixels
                       "metric.fid.features=toy_evaluator", "metric.diversity.features=toy_evaluator"])
        StandInEvaluator.seen.clear()
        outcome = run_experiment(cfg, tmp_path / "sweep" / str(index))
        aggregates = outcome.rows[outcome.rows["level"] == "aggregate"].set_index("metric")
        # gen_accuracy is the judge's verdict on these very images (recomputed here from their pixels)
        per_sample = outcome.rows[(outcome.rows["level"] == "sample") & (outcome.rows["metric"] == "gen_accuracy")]
        judged = dict(StandInEvaluator.seen)
        assert sorted(judged) == sorted(per_sample["sample_id"]) and len(judged) == 2
        for record_id, value in zip(per_sample["sample_id"], per_sample["value"], strict=True):
            assert value == StandInEvaluator.reddish(judged[record_id])
        expected = np.mean([StandInEvaluator.reddish(image) for image in judged.values()])
        assert aggregates.loc["gen_accuracy", "value"] == pytest.approx(expected)
        summaries[method] = aggregates
        assert {"fid", "inception_score", "gen_accuracy", "seconds_per_image", "unet_calls_per_image"} <= set(aggregates.index)
        assert "stand-in-evaluator" in aggregates.loc["fid", "definition"]
        assert "antialias=True" in aggregates.loc["fid", "definition"]
    assert summaries["plain"].loc["unet_calls_per_image", "value"] == 2  # 2 smoke steps x 1 branch
    assert summaries["cfg_pag"].loc["unet_calls_per_image", "value"] == 6  # 2 steps x 3 branches
    assert summaries["plain"].loc["fid", "value"] != summaries["cfg_pag"].loc["fid", "value"]
    figures = sweep_report(tmp_path / "sweep", [{"x": "method", "metric": "fid"}], print_table=False)
    assert [f.name for f in figures] == ["fid_vs_method.png"] and figures[0].is_file()
    table = (tmp_path / "sweep" / "table.md").read_text()
    assert "plain" in table and "cfg_pag" in table


def test_the_stand_in_judge_looks_at_the_image():
    red, blue = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 200
    assert StandInEvaluator.reddish(red) == 1.0 and StandInEvaluator.reddish(blue) == 0.0


def test_pag_coco_names_each_missing_file(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative data paths resolve here, where nothing exists
    common = [f"store.root={tmp_path / 'cache'}"]
    with pytest.raises(DataError, match="captions_val2014.json"):
        run_experiment(compose(["experiment=pag_coco", *common]), tmp_path / "a")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="sd15"):
        # only the cost metric: the metrics check their own files (FID real images, CLIP) before the model loads
        run_experiment(compose(["experiment=pag_coco", "dataset=smoke_prompts", "~metric.fid",
                                "~metric.inception_score", "~metric.clip_score", *common]),
                       tmp_path / "b")
    with pytest.raises(DataError, match="datasets/coco/val2014 does not exist"):
        run_experiment(compose(["experiment=pag_coco", "dataset=smoke_prompts", "model=tiny_random", *common]),
                       tmp_path / "c")
