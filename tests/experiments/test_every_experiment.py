"""Every experiment config composes and runs end to end in smoke mode, so no config rots.

An experiment that needs real weights or data names, in ``smoke_overrides``, the tiny stand-ins
that let it run here through the same code path. The run must produce, for the method and every
baseline it lists, aggregate rows of every quality metric it declares with at least one finite
value (a cost row does not count; a metric may write rows under other names, so rows are matched
by their ``metric_entry``), and every empty (non-finite) value must carry its reason in
``skipped_reason``. Only an entry the experiment marks ``optional: true`` may be empty throughout.
"""

import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness import REPO_ROOT
from harness.registry import METRICS
from harness.run import run_experiment

EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))


def declared_quality_metrics(cfg) -> dict[str, bool]:
    """``metric:`` entry -> optional, for the quality metrics ``cfg`` lists."""
    declared = {}
    for key, entry in (OmegaConf.to_container(cfg.metric, resolve=True) or {}).items():
        if getattr(METRICS.get(key), "kind", "quality") == "quality":
            declared[key] = bool((entry or {}).get("optional", False))
    return declared


def check_rows(summary: pd.DataFrame, predictor: str, metric: str, optional: bool, where: str) -> None:
    """The quality rows the ``metric:`` entry wrote for ``predictor`` (matched by ``metric_entry``: a
    metric may name its rows otherwise): at least one finite value unless the entry is optional, and
    every empty (non-finite) value explained by a ``skipped_reason``."""
    rows = summary[(summary["method"] == predictor) & (summary["metric_entry"] == metric)
                   & (summary["kind"].fillna("quality") == "quality")]
    assert len(rows) >= 1, f"{where}: {predictor} has no {metric} row"
    reasons = rows["skipped_reason"] if "skipped_reason" in rows else pd.Series([None] * len(rows), index=rows.index)
    finite = 0
    for name, value, reason in zip(rows["metric"], rows["value"], reasons, strict=True):
        if math.isfinite(value):
            assert pd.isna(reason), f"{where}: {predictor} {name} = {value} but skipped ({reason})"
            finite += 1
        else:
            assert isinstance(reason, str) and reason, f"{where}: {predictor} {name} = {value} without a reason"
    assert finite or optional, f"{where}: {predictor} {metric}: no finite value ({sorted(set(reasons.dropna()))})"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_in_smoke_mode(compose, experiment, tmp_path):
    # smoke=true applies the experiment's smoke_overrides (harness.compose), as on the command line
    cfg = compose([f"experiment={experiment}", "smoke=true", f"store.root={tmp_path / 'cache'}"])
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
        return pd.DataFrame([{"method": "m", "metric": "q.part", "metric_entry": "q", "kind": "quality",
                              "value": value, "skipped_reason": reason}])

    check_rows(frame(0.5), "m", "q", False, "t")
    check_rows(frame(float("nan"), "no model"), "m", "q", True, "t")
    check_rows(pd.concat([frame(0.5), frame(float("nan"), "not applicable")]), "m", "q", False, "t")
    for bad, optional in [(frame(float("nan"), "no model"), False), (frame(float("nan")), True),
                          (frame(float("inf")), False), (frame(0.5).assign(metric_entry="other"), False)]:
        with pytest.raises(AssertionError):
            check_rows(bad, "m", "q", optional, "t")
