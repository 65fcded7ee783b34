"""Optional MLflow tracking: a run folder logged to a local file store, read back with MLflow's client;
the Hydra callback config composes beside an experiment's own callbacks and runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import REPO_ROOT
from harness.store.rows import MetricResult, build_rows, write_rows

mlflow = pytest.importorskip("mlflow", reason="MLflow tracking is the optional extra 'tracking' (mlflow-skinny)")



def _run_folder(path: Path) -> Path:
    identity = {"experiment": "track_test", "model": "tiny_random", "dataset": "d", "split": "test",
                "method": "daam", "seed": 0}
    aggregates = [MetricResult("miou", 0.5, 10, 0.4, 0.6), MetricResult("seconds_per_image", 1.5, 10, kind="cost")]
    provenance = {"git_sha": "abc", "config_hash": "h1", "versions": "{}", "run_dir": str(path)}
    write_rows(build_rows(identity, {"hp.tau": 0.4}, provenance, aggregates, []), path)
    (path / ".hydra").mkdir()
    (path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (path / "figures").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path / "figures" / "maps.png")
    return path


def test_log_run_to_a_local_file_store(tmp_path):
    from harness.tracking import log_run

    run_dir = _run_folder(tmp_path / "run")
    store = tmp_path / "mlruns"
    run_id = log_run(run_dir, str(store))
    client = mlflow.tracking.MlflowClient(store.resolve().as_uri())
    run = client.get_run(run_id)
    assert run.data.metrics == {"miou": 0.5, "miou.ci_low": 0.4, "miou.ci_high": 0.6, "seconds_per_image": 1.5}
    assert run.data.params["hp.tau"] == "0.4" and run.data.params["method"] == "daam"
    assert run.data.tags["harness.git_sha"] == "abc"
    assert client.get_experiment(run.info.experiment_id).name == "track_test"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"rows.parquet", "summary.csv", "config", "figures"} <= artifacts
    assert [a.path for a in client.list_artifacts(run_id, "config")] == ["config/config.yaml"]


def test_callback_config_composes_beside_the_experiments_own(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=["experiment=pag_toy", "hydra/callbacks=mlflow"],
                          return_hydra_config=True)
            plain = compose(config_name="config", overrides=["experiment=smoke"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    assert cfg.hydra.callbacks.mlflow._target_ == "harness.tracking.MlflowTracking"
    assert cfg.hydra.callbacks.sweep_report._target_ == "harness.report.plots.SweepReport"
    assert not plain.hydra.callbacks  # off unless asked for


@pytest.mark.slow
def test_harness_run_with_the_callback_logs_the_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "harness.cli", "run", "experiment=smoke", "hydra/callbacks=mlflow",
                                f"hydra.run.dir={tmp_path / 'run'}", f"store.root={tmp_path / 'cache'}"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    client = mlflow.tracking.MlflowClient((tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and "mean_intensity" in runs[0].data.metrics
