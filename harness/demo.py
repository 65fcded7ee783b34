"""``harness demo`` / ``make demo``: the embedded default experiments on this machine."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from harness import REPO_ROOT

#: Experiments on built-in stand-ins: always part of the demo.
DEMO_EXPERIMENTS = ["smoke", "daam_smoke"]
#: Experiments on the shipped toy-world model: part of the demo once weights/toy exists.
TOY_EXPERIMENTS = ["toy_quality", "daam_toy", "emerdiff_toy", "pag_toy"]
TOY_WEIGHTS = REPO_ROOT / "weights" / "toy" / "model_index.json"
#: The demo runs each experiment on fewer records than the experiment itself, to stay within
#: minutes on two CPU cores; `harness run experiment=NAME` runs the full size.
DEMO_OVERRIDES: dict[str, list[str]] = {
    "toy_quality": ["dataset.size=48", "metric.evaluator_accuracy.n=200", "metric.annotator_miou.n=100"],
    "daam_toy": ["dataset.size=24"],
    "emerdiff_toy": ["dataset.size=4"],
    "pag_toy": ["dataset.size=8", "metric.fid.real_source_options.n=500"],
}


def demo_experiments() -> list[str]:
    """The demo's experiments that can run here, in order."""
    available = {p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml")}
    experiments = [e for e in DEMO_EXPERIMENTS if e in available]
    if TOY_WEIGHTS.is_file():
        experiments += [e for e in TOY_EXPERIMENTS if e in available]
    else:
        print(f"note: {TOY_WEIGHTS.parent} has no model yet; the toy-world experiments are left out "
              "(train it with `make toy-model`).", flush=True)
    return experiments


def run_demo(args: list[str]) -> int:
    """Run every demo experiment into results/demo/<experiment>, then one table per experiment.

    ``args`` are Hydra overrides added to every run (``harness demo store.root=DIR``)."""
    if any(arg in ("-h", "--help") for arg in args):
        print("usage: harness demo [hydra overrides added to every run]\n\n" + (__doc__ or "").strip())
        return 0
    root = Path("results/demo")
    experiments = demo_experiments()
    for experiment in experiments:
        run_dir = root / experiment
        # Both dirs: an experiment that is a sweep (hydra.mode=MULTIRUN) writes under sweep.dir.
        command = [sys.executable, "-m", "harness", "run", f"experiment={experiment}",
                   f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={run_dir}",
                   *DEMO_OVERRIDES.get(experiment, []), *args]
        print(f"==> harness {' '.join(command[3:])}", flush=True)
        completed = subprocess.run(command)
        if completed.returncode != 0:
            return completed.returncode
    from harness.report.table import load_rows, render_table

    for experiment in experiments:  # one table per experiment: its own metrics only
        print(f"\n==> harness table {root / experiment}")
        print(render_table(load_rows([str(root / experiment)]), include_cost=True))
    print(f"\nDemo results are in {root.resolve()} (one folder per experiment: summary.csv, rows.parquet, "
          "figures/, run log).")
    from harness.report.html import build_report

    began = time.perf_counter()
    report = build_report([str(root)], root / "report.html")
    print(f"\n==> harness report results/demo --out {root / 'report.html'}  ({time.perf_counter() - began:.1f} s)")
    print(f"Report: {report.resolve()}")
    return 0
