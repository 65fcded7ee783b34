"""``harness demo`` / ``make demo``: the embedded default experiments on this machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: The experiments `make demo` runs, in order. Each later world (the toy world) adds its own.
DEMO_EXPERIMENTS = ["smoke"]


def run_demo(args: list[str]) -> int:
    """Run every demo experiment into results/demo/<experiment>, then one table over them."""
    root = Path("results/demo")
    for experiment in DEMO_EXPERIMENTS:
        run_dir = root / experiment
        command = [sys.executable, "-m", "harness.cli", "run", f"experiment={experiment}", f"hydra.run.dir={run_dir}", *args]
        print(f"==> {' '.join(command[2:])}", flush=True)
        completed = subprocess.run(command)
        if completed.returncode != 0:
            return completed.returncode
    from harness.report.table import load_rows, render_table

    print("\n==> harness table results/demo")
    print(render_table(load_rows([str(root)]), include_cost=True))
    print(f"\nDemo results are in {root.resolve()} (one folder per experiment: summary.csv, rows.parquet, run log).")
    return 0
