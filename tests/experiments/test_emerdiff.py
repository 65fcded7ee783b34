"""The EmerDiff experiments: compose, run end to end in smoke mode, fail clearly without data."""

from __future__ import annotations

import pytest

from harness.errors import DataError


def test_experiments_compose_with_the_papers_defaults(compose):
    cfg = compose(["experiment=emerdiff_cocostuff"])
    assert cfg.method.name == "emerdiff" and cfg.dataset.name == "cocostuff27" and cfg.model.name == "sd15"
    method = cfg.method
    assert (method.feature_timestep, method.modulation_timestep, method.modulation_strength, method.clusters,
            method.inversion_steps, method.modulation_target, method.attention_injection) == (1, 281, 10.0, 25, 50, "output", True)
    assert set(cfg.baseline) == {"emerdiff_naive_upsampling", "kmeans_colours"}
    toy = compose(["experiment=emerdiff_toy"])
    assert toy.model.name == "toy" and set(toy.metric) >= {"miou_hungarian", "pixel_accuracy"}
    with pytest.raises(Exception, match="modulation_strenght"):
        compose(["experiment=emerdiff_toy", "method.modulation_strenght=3"])


def test_the_paper_setting_stops_on_missing_data(compose, store_root, tmp_path):
    from harness.run import run_experiment

    with pytest.raises(DataError, match="dataset=cocostuff27 needs dataset.path"):
        run_experiment(compose(["experiment=emerdiff_cocostuff", f"store.root={store_root}"]), tmp_path / "run")
    with pytest.raises(DataError, match="does not exist"):
        run_experiment(compose(["experiment=emerdiff_cocostuff", f"store.root={store_root}",
                                f"dataset.path={tmp_path / 'coco'}"]), tmp_path / "run")


def test_toy_experiment_smoke_run_scores_method_and_baselines(compose, store_root, tmp_path):
    from harness.run import run_experiment

    # synthetic_segments: flat-colour rectangles, where colour k-means is exact (a known answer).
    overrides = ["experiment=emerdiff_toy", "model=tiny_random", "dataset=synthetic_segments", "smoke=true", "dataset.size=1",
                 f"store.root={store_root}", f"dataset.path={tmp_path / 'images'}"]
    outcome = run_experiment(compose(overrides), tmp_path / "run")
    rows = outcome.rows[outcome.rows["level"] == "aggregate"].set_index(["method", "metric"])["value"]
    for method in ("emerdiff", "emerdiff_naive_upsampling", "kmeans_colours"):
        for metric in ("miou_hungarian", "pixel_accuracy"):
            assert 0.0 <= rows[(method, metric)] <= 1.0
    assert rows[("kmeans_colours", "pixel_accuracy")] == 1.0  # flat colours: colour k-means is exact
    assert (tmp_path / "run" / "figures" / "emerdiff" / "synthetic-0000.png").is_file()
    again = run_experiment(compose(overrides), tmp_path / "run2")
    assert again.generated == 0 and again.reused == 1
