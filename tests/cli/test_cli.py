"""The `harness` command as a user runs it: real processes, sweeps, tables, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.store.samples import EVENTS_FILE

pytestmark = pytest.mark.slow
QUALITY = ["method", "level", "sample_id", "metric", "value", "ci_low", "ci_high", "n"]


def harness(*args, cwd=None, check=True, timeout=300):
    completed = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True,
                               text=True, timeout=timeout)
    if check and completed.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed


def quality(run_dir: Path) -> pd.DataFrame:
    rows = pd.read_parquet(run_dir / "rows.parquet")
    rows = rows[rows["kind"] == "quality"][QUALITY]
    return rows.sort_values(["level", "metric", "sample_id"]).reset_index(drop=True)


def test_run_writes_summary_and_rows_where_asked(tmp_path):
    out = harness("run", "experiment=smoke", f"hydra.run.dir={tmp_path / 'D'}", f"store.root={tmp_path / 'S'}")
    assert (tmp_path / "D" / "summary.csv").is_file() and (tmp_path / "D" / "rows.parquet").is_file()
    assert (tmp_path / "D" / "harness.log").is_file(), "every run keeps a log file"
    assert "mean_intensity" in out.stdout and str(tmp_path / "D") in out.stdout


def test_sweep_then_table_shows_one_row_per_seed(tmp_path):
    harness("run", "-m", "experiment=smoke", "seed=0,1,2", "dataset.size=2", f"store.root={tmp_path / 'S'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}")
    jobs = sorted(p.parent.name for p in (tmp_path / "sweep").rglob("summary.csv"))
    assert jobs == ["0", "1", "2"]
    table = harness("table", str(tmp_path / "sweep"), "--format", "csv").stdout
    frame = pd.read_csv(pd.io.common.StringIO(table))
    assert sorted(frame["seed"]) == [0, 1, 2]
    assert frame["mean_intensity"].nunique() == 3
    markdown = harness("table", str(tmp_path / "sweep" / "*")).stdout
    assert markdown.count("| harness ") == 3


def test_user_mistakes_end_in_one_message_without_traceback(tmp_path):
    cases = [
        ("method.name=generat", "Did you mean 'generate'"),
        ("model=sd15", "were not found"),
        ("seed=abc", "seed"),
        ("model=nonexistent", "no such model"),
        ("+generation.stpes=4", "generation.stpes: no such key in GenerationConfig. Did you mean 'generation.steps'?"),
    ]
    for override, expected in cases:
        completed = harness("run", "experiment=smoke", override, f"hydra.run.dir={tmp_path / 'D'}",
                            f"store.root={tmp_path / 'S'}", check=False)
        assert completed.returncode != 0, override
        assert expected in completed.stderr, (override, completed.stderr)
        assert "Traceback" not in completed.stderr, (override, completed.stderr)
    table = harness("table", str(tmp_path / "nothing-here"), check=False)
    assert table.returncode == 2 and "No rows.parquet" in table.stderr and "Traceback" not in table.stderr


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    store, size = tmp_path / "S", 10
    args = ["run", "experiment=smoke", f"dataset.size={size}", "generation.batch_size=1", "generation.steps=4",
            f"store.root={store}"]
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", *args, f"hydra.run.dir={tmp_path / 'killed'}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    events = store / EVENTS_FILE
    deadline = time.time() + 240
    while time.time() < deadline:
        if events.exists() and len(events.read_text().splitlines()) >= 3:
            break
        if process.poll() is not None:
            pytest.fail("the run ended before it could be interrupted")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(events.read_text().splitlines())
    assert 3 <= done_before < size, "the kill must land mid-run"
    assert not (tmp_path / "killed" / "rows.parquet").exists()

    resumed = harness(*args, f"hydra.run.dir={tmp_path / 'resumed'}")
    assert f"{size - done_before} sample(s) generated, {done_before} reused" in resumed.stdout
    keys = [json.loads(line)["key"] for line in events.read_text().splitlines()]
    assert len(keys) == size and len(set(keys)) == size, "each sample generated exactly once"

    harness(*[a for a in args if not a.startswith("store.root")], f"store.root={tmp_path / 'S2'}",
            f"hydra.run.dir={tmp_path / 'clean'}")
    pd.testing.assert_frame_equal(quality(tmp_path / "resumed"), quality(tmp_path / "clean"))
