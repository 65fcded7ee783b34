"""Foundation figures: time per generated sample on tiny_random, and the sample store's overhead."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from harness.compose import compose
from harness.run import run_experiment

SAMPLES = 8


def _cfg(store_root: Path):
    return compose(["experiment=smoke", f"dataset.size={SAMPLES}", "generation.batch_size=1",
                    f"store.root={store_root}", "print_summary=false"])


def run(report: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # Warm-up run (imports, first-call allocations) on its own store.
        run_experiment(_cfg(tmp_path / "warm"), tmp_path / "warm-run")
        cfg = _cfg(tmp_path / "store")
        started = time.perf_counter()
        first = run_experiment(cfg, tmp_path / "first")
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        cached = run_experiment(cfg, tmp_path / "cached")
        cached_seconds = time.perf_counter() - started
    assert first.generated == SAMPLES and cached.reused == SAMPLES
    report["tiny_random_seconds_per_sample"] = first_seconds / SAMPLES
    report["store_cached_rerun_ratio"] = cached_seconds / first_seconds
    report["store_cached_rerun_seconds"] = cached_seconds
