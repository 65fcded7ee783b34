"""Every experiment config composes and runs end to end in smoke mode, so no config rots.

An experiment that needs real weights or data names, in ``smoke_overrides``, the tiny stand-ins
that let it run here through the same code path. The run must produce, for the method and every
baseline it lists, an aggregate row of every quality metric it declares, with a finite value (a
cost row does not count). Only an entry the experiment marks ``optional: true`` may instead be an
empty cell, and then with the reason in ``skipped_reason``.
"""

import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.registry import METRICS
from harness.run import run_experiment

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))


def declared_quality_metrics(cfg) -> dict[str, bool]:
    """Row name -> optional, for the quality metrics ``cfg`` lists (rows carry the class's ``name``)."""
    declared = {}
    for key, entry in (OmegaConf.to_container(cfg.metric, resolve=True) or {}).items():
        metric_class = METRICS.get(key)
        if getattr(metric_class, "kind", "quality") == "quality":
            declared[getattr(metric_class, "name", "") or key] = bool((entry or {}).get("optional", False))
    return declared


def check_rows(summary: pd.DataFrame, predictor: str, metric: str, optional: bool, where: str) -> None:
    rows = summary[(summary["method"] == predictor) & (summary["metric"] == metric)]
    assert len(rows) >= 1, f"{where}: {predictor} has no {metric} row"
    reasons = rows["skipped_reason"] if "skipped_reason" in rows else pd.Series([None] * len(rows), index=rows.index)
    for value, reason in zip(rows["value"], reasons, strict=True):
        if math.isfinite(value):
            assert pd.isna(reason), f"{where}: {predictor} {metric} = {value} but skipped ({reason})"
        else:
            assert optional, f"{where}: {predictor} {metric} = {value} ({reason})"
            assert isinstance(reason, str) and reason, f"{where}: {predictor} {metric} is empty without a reason"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_in_smoke_mode(compose, experiment, tmp_path):
    base = compose([f"experiment={experiment}"])
    cfg = compose([f"experiment={experiment}", *base.smoke_overrides, "smoke=true",
                   f"store.root={tmp_path / 'cache'}"])
    outcome = run_experiment(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "summary.csv").is_file()
    summary = outcome.rows[outcome.rows["level"] == "aggregate"]
    declared = declared_quality_metrics(cfg)
    assert declared, f"{experiment} declares no quality metric"
    baselines = OmegaConf.to_container(cfg.baseline, resolve=True) or {}
    predictors = {cfg.method.name: False, **{name: bool((entry or {}).get("optional", False))
                                            for name, entry in baselines.items()}}
    for predictor, predictor_optional in predictors.items():
        for metric, optional in declared.items():
            check_rows(summary, predictor, metric, optional or predictor_optional, experiment)


def test_the_check_fails_on_missing_empty_or_unexplained_values():
    def frame(value, reason=None):
        return pd.DataFrame([{"method": "m", "metric": "q", "value": value, "skipped_reason": reason}])

    check_rows(frame(0.5), "m", "q", False, "t")
    check_rows(frame(float("nan"), "no model"), "m", "q", True, "t")
    for bad, optional in [(frame(float("nan"), "no model"), False), (frame(float("nan")), True),
                          (frame(float("inf")), False), (frame(0.5).assign(metric="other"), False)]:
        with pytest.raises(AssertionError):
            check_rows(bad, "m", "q", optional, "t")
