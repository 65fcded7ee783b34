"""Every experiment config composes and runs end to end in smoke mode, so no config rots.

An experiment that needs real weights or data names, in ``smoke_overrides``, the tiny stand-ins
that let it run here through the same code path.
"""

from pathlib import Path

import pytest

from harness.run import run_experiment

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_in_smoke_mode(compose, experiment, tmp_path):
    base = compose([f"experiment={experiment}"])
    cfg = compose([f"experiment={experiment}", *base.smoke_overrides, "smoke=true",
                   f"store.root={tmp_path / 'cache'}"])
    outcome = run_experiment(cfg, tmp_path / "run")
    summary = outcome.rows[outcome.rows["level"] == "aggregate"]
    assert not summary.empty, f"{experiment} produced no aggregate metric"
    assert (tmp_path / "run" / "summary.csv").is_file()
    assert summary["value"].notna().any()
