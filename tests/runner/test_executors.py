"""Real distributed engines on this machine: Ray (a local instance, 2 workers) and Hydra's
submitit launcher with its local executor."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from harness import REPO_ROOT
from harness.run import run_experiment
from harness.store.samples import EVENTS_FILE

from .test_shards import comparable


def smoke(compose, store, *extra):
    return compose(["experiment=smoke", f"store.root={store}", "dataset.size=6", "generation.steps=2",
                    "generation.batch_size=2", *extra])


@pytest.mark.slow
def test_ray_executor_with_two_local_workers_gives_the_rows_of_a_local_run(compose, tmp_path):
    pytest.importorskip("ray", reason="the 'scale' extra (pip install -e '.[scale]')")
    store = tmp_path / "ray_store"
    outcome = run_experiment(smoke(compose, store, "executor=ray", "executor.num_workers=2",
                                   "executor.threads_per_worker=1"), tmp_path / "ray_run")
    assert (outcome.generated, outcome.reused) == (6, 0)
    events = [json.loads(line) for line in (store / EVENTS_FILE).read_text().splitlines()]
    assert len(events) == len({e["key"] for e in events}) == 6, "no sample generated twice"
    assert len({e["pid"] for e in events}) == 2 and os.getpid() not in {e["pid"] for e in events}, \
        "both Ray workers generated, the driver only scored"
    local = run_experiment(smoke(compose, tmp_path / "local_store"), tmp_path / "local_run")
    pd.testing.assert_frame_equal(comparable(outcome.rows), comparable(local.rows))


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_shards_then_scoring_reuses_everything(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the 'scale' extra")
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    common = ["experiment=smoke", f"store.root={store}", "dataset.size=6", "generation.steps=2"]
    sweep = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "-m", "hydra/launcher=submitit_local", *common,
         "shard.count=2", "shard.index=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    shards = [json.loads((tmp_path / "sweep" / str(n) / "shard.json").read_text()) for n in (0, 1)]
    assert [s["generated"] for s in shards] == [3, 3] and [s["shard"]["index"] for s in shards] == [0, 1]
    events = [json.loads(line) for line in (store / EVENTS_FILE).read_text().splitlines()]
    assert len({e["pid"] for e in events}) == 2, "each shard ran in its own submitit job"
    score = subprocess.run([sys.executable, "-m", "harness.cli", "run", *common, f"hydra.run.dir={tmp_path / 'run'}"],
                           cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert score.returncode == 0, score.stderr[-2000:]
    assert "0 sample(s) generated, 6 reused" in score.stdout
    rows = pd.read_parquet(tmp_path / "run" / "rows.parquet")
    assert rows.query("level == 'aggregate' and metric == 'mean_intensity'")["n"].item() == 6
