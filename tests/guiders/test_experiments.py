"""guidance_toy / guidance_coco configs, the guidance-study protocol, the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import ConfigError
from harness.guidance_study import choose, paired_kid, parse_study, write_chosen


def test_guidance_toy_protocol_is_declared_for_every_image_guider(compose):
    from harness.methods.guiders import SUPPORTED_PREDICTIONS, available_guiders

    cfg = compose(["experiment=guidance_toy"])
    protocol = parse_study("guidance_toy", cfg.guider_study)
    image_guiders = {name for name, cls in available_guiders().items()
                     if set(cls._input_predictions) <= SUPPORTED_PREDICTIONS}
    assert set(protocol.guiders) == image_guiders
    assert protocol.reference == "ClassifierFreeGuidance" and protocol.dev_split == "dev"
    assert cfg.dataset.split == "test" and cfg.method.budget_calls == 30


def test_study_protocol_refuses_test_for_choices_and_unknown_reference():
    block = {"guiders": {"A": {"grid": {"method.params.guidance_scale": [1, 2]}}}, "reference": "A",
             "objective": {"metric": "gen_accuracy"}}
    with pytest.raises(ConfigError, match="dev"):
        parse_study("x", {**block, "dev": {"split": "test"}})
    with pytest.raises(ConfigError, match="reference 'B'"):
        parse_study("x", {**block, "reference": "B"})
    with pytest.raises(ConfigError, match="exactly one key"):
        parse_study("x", {**block, "guiders": {"A": {"grid": {}}}})


def test_choice_rule_objective_then_tiebreak_then_first():
    values = [{"acc": 0.5, "kid": 1.0}, {"acc": 0.75, "kid": 3.0}, {"acc": 0.75, "kid": 2.0}, {"acc": 0.75, "kid": 2.0}]
    assert choose(values, ("acc", "max"), ("kid", "min")) == 2
    assert choose(values, ("acc", "max"), None) == 1
    assert choose(values, ("kid", "min"), None) == 0


def test_write_chosen_replaces_the_line(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("guider_study:\n  reference: A\n  chosen: {}\nafter: 1\n")
    write_chosen(path, {"A": 3.0, "B": [2.0, 1.5]})
    text = path.read_text()
    assert '  chosen: {"A": 3.0, "B": [2.0, 1.5]}' in text and text.endswith("after: 1\n")
    import yaml

    assert yaml.safe_load(text)["guider_study"]["chosen"] == {"A": 3.0, "B": [2.0, 1.5]}
    write_chosen(path, {"C": 1.0, "A": 5.0})  # a later study of some guiders keeps the others' choices
    assert yaml.safe_load(path.read_text())["guider_study"]["chosen"] == {"A": 5.0, "B": [2.0, 1.5], "C": 1.0}


def test_paired_kid_is_zero_for_identical_guiders_and_signed_otherwise():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 3))
    same = {str(i): v for i, v in enumerate(rng.normal(size=(20, 3)))}
    far = {k: v + 3.0 for k, v in same.items()}
    out = paired_kid({"ref": same, "copy": dict(same), "far": far}, "ref", real, resamples=30, seed=0, subset_size=20)
    assert out["copy"]["difference"] == 0 and out["copy"]["ci_low"] == 0 and out["copy"]["ci_high"] == 0
    assert out["far"]["difference"] > 0 and out["far"]["ci_low"] > 0


def test_figure_has_one_curve_per_guider_ordered_by_scale(tmp_path):
    from harness.report.guidance_figure import guider_points, quality_vs_alignment

    rows = []
    for run, (guider, key, scale, kid, accuracy) in enumerate([
            ("CFG", "hp.params.guidance_scale", 5.0, 0.3, 0.8), ("CFG", "hp.params.guidance_scale", 1.5, 0.1, 0.5),
            ("PAG", "hp.params.perturbed_guidance_scale", 2.0, 0.2, 0.7),
            ("PAG", "hp.params.perturbed_guidance_scale", 1.0, 0.15, 0.6)]):
        for metric, value in (("kid", kid), ("gen_accuracy", accuracy), ("seconds_per_image", 1.0)):
            rows.append({"run_dir": f"r{run}", "hp.guider": guider, "metric": metric, "value": value, key: scale})
    frame = pd.DataFrame(rows)
    points = guider_points(frame, "kid", "gen_accuracy")
    cfg = points[points["guider"] == "CFG"]
    assert list(cfg["scale"]) == [1.5, 5.0] and list(cfg["quality"]) == [0.1, 0.3]
    assert set(points[points["guider"] == "PAG"]["scale_key"]) == {"params.perturbed_guidance_scale"}
    out = quality_vs_alignment(frame, tmp_path / "f.png")
    assert out.is_file() and out.stat().st_size > 1000


def standin_guider_run(compose, experiment, name, folder, tmp_path, *extra):
    from harness.run import run_experiment

    base = compose([f"experiment={experiment}"])
    kept = [o for o in base.smoke_overrides if not o.startswith(("model=", "model."))]
    cfg = compose([f"experiment={experiment}", *kept, "smoke=true", f"model={name}", f"model.path={folder}",
                   "model.device=cpu", "generation.height=64", "generation.width=64",
                   f"store.root={tmp_path / 'store'}", *extra])
    return cfg, run_experiment(cfg, tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15", "sdxl_base"])
def test_guidance_coco_on_the_standins(name, compose, tmp_path):
    from harness.models.standins import save_standin

    folder = save_standin(name, tmp_path / name)
    # SEG with CFG: three branches a step but the first (its interval test is strict at step 0);
    # PNDM (SD 1.5) runs steps + 1 iterations:
    # a budget of 8 calls buys 3 iterations (2 + 3 + 3): 3 steps with Euler (SDXL), 2 with PNDM
    cfg, outcome = standin_guider_run(compose, "guidance_coco", name, folder, tmp_path,
                                      "method.guider=SmoothedEnergyGuidance", "method.budget_calls=8")
    rows = outcome.rows[outcome.rows["level"] == "aggregate"]
    assert set(rows["hp.guider"]) == {"SmoothedEnergyGuidance"} and set(rows["hp.steps"]) == {2 if name == "sd15" else 3}
    calls = rows[rows["metric"] == "unet_calls_per_image"]["value"]
    assert list(calls) == [8.0]
    fid = rows[rows["metric"] == "fid"].iloc[0]
    assert fid["feature_dim"] == 192  # pixels at 8x8x3 in the smoke version
    assert bool(fid["below_2d"])
    assert Path(outcome.run_dir).is_dir()


def test_report_adds_the_figure_when_rows_hold_several_guiders(tmp_path):
    from harness.report.html import sweep_plots

    rows = []
    for run, (guider, scale, kid, accuracy) in enumerate([("A", 1.0, 0.1, 0.5), ("A", 2.0, 0.2, 0.6),
                                                          ("B", 1.0, 0.3, 0.7), ("B", 3.0, 0.1, 0.4)]):
        for metric, value in (("kid", kid), ("gen_accuracy", accuracy)):
            rows.append({"run_dir": f"r{run}", "hp.guider": guider, "hp.params.scale": scale, "metric": metric,
                         "value": value, "source": "harness", "method": "guider", "kind": "quality",
                         "ci_low": None, "ci_high": None})
    plots = sweep_plots("guidance_toy", pd.DataFrame(rows), [], tmp_path, "e0")
    figure = [p for p in plots if p["metric"] == "quality vs alignment"]
    assert len(figure) == 1 and (tmp_path / "e0_quality_vs_alignment.png").is_file()
    one_guider = pd.DataFrame([r for r in rows if r["hp.guider"] == "A"])
    assert not [p for p in sweep_plots("x", one_guider, [], tmp_path, "e1") if p["metric"] == "quality vs alignment"]
