"""The ``harness`` command.

    harness run [hydra overrides...]      run an experiment (``-m`` for a sweep)
    harness table PATH|GLOB... [--format markdown|csv|latex] [--no-baselines] [--compare METHOD]
    harness select experiment=NAME          rerun a toy experiment's declared selection on dev
    harness guidance-study experiment=NAME [--stage dev|test|all]  every guider: dev choice, test once
    harness report PATH... --out report.html  one static HTML page over runs (tables, plots, gallery)
    harness rate TASK [--port P]          a local web page collecting 5-point ratings of a rating task
    harness demo                          the embedded demo (what `make demo` runs)
    harness list                          registered models, datasets, methods, metrics
    harness daam "<prompt>" [key=value...] per-word DAAM heat maps for one prompt
    harness build-prompts ...             build a prompt-set manifest (COCO-Gen, Unreal-Gen, ...)
    harness toy train [...]               train (or resume) the toy-world model
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness import REPO_ROOT
from harness.errors import HarnessError

CONFIG_DIR = REPO_ROOT / "conf"
USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    handlers = {"run": cmd_run, "table": cmd_table, "demo": cmd_demo, "list": cmd_list,
                "daam": _delegate("harness.daam_cli"), "build-prompts": _delegate("harness.data.build_cli"),
                "toy": cmd_toy, "select": _delegate("harness.selection"),
                "guidance-study": cmd_guidance_study, "report": _delegate("harness.report.html"),
                "rate": _delegate("harness.rating.app")}
    handler = handlers.get(command)
    if handler is None:
        print(f"harness: unknown command {command!r}.\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return handler(rest) or 0
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2


def cmd_guidance_study(args: list[str]) -> int:
    """``harness guidance-study experiment=NAME [--stage dev|test|all]``: harness/guidance_study.py,
    then the figure of the dev grid (per guider, quality vs alignment)."""
    import pandas as pd

    from harness.guidance_study import run_study
    from harness.report.guidance_figure import quality_vs_alignment

    out_root = run_study(args)
    dev_rows = out_root / "dev_rows.csv"
    if dev_rows.is_file():
        figure = quality_vs_alignment(pd.read_csv(dev_rows), out_root / "quality_vs_alignment_dev.png",
                                      title="dev grid: quality vs alignment per guider")
        print(f"figure: {figure}")
    return 0


def cmd_run(overrides: list[str]) -> int:
    """``harness run``: compose the config with Hydra and run it (one job, or ``-m`` for a sweep)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from harness.config import register_configs

    register_configs()

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def task(cfg) -> float | None:
        from harness.report.table import print_summary
        from harness.run import run_experiment
        from harness.selection import apply_selected
        from harness.validation import check_config

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            # the values `harness select` chose on dev, where the command line does not set them
            cfg = apply_selected(cfg, HydraConfig.get().overrides.task)
            check_config(cfg)  # the model-independent checks, before the prompt set or model is built
            outcome = run_experiment(cfg, run_dir, cwd=Path.cwd())
        except HarnessError as error:
            logging.getLogger("harness").error("%s", error)
            print(f"harness: error: {error}", file=sys.stderr)
            sys.exit(2)
        if cfg.print_summary and not outcome.rows.empty:  # a shard run has no rows
            print_summary(outcome.rows)
        print(f"Results: {run_dir} (summary.csv, rows.parquet); "
              f"{outcome.generated} sample(s) generated, {outcome.reused} reused from the cache.")
        return None

    saved_argv = sys.argv
    sys.argv = ["harness", *overrides]
    try:
        task()
    except SystemExit as exit_:  # Hydra's own errors and the task's HarnessError exit this way
        if exit_.code in (None, 0):
            return 0
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved_argv
    return 0


def cmd_table(args: list[str]) -> int:
    """``harness table``: one pivot over many runs, with published numbers beside ours."""
    from harness.report.table import compare_table, load_rows, render_compare, render_table

    parser = argparse.ArgumentParser(prog="harness table", description=cmd_table.__doc__)
    parser.add_argument("paths", nargs="+", help="run directories, sweep directories or globs")
    parser.add_argument("--format", choices=["markdown", "csv", "latex"], default="markdown")
    parser.add_argument("--no-baselines", action="store_true", help="do not join published numbers")
    parser.add_argument("--metrics", nargs="*", help="only these metrics")
    parser.add_argument("--all-kinds", action="store_true", help="also cost metrics (seconds, memory)")
    parser.add_argument("--compare", metavar="METHOD",
                        help="add the paired difference of every other predictor scored on the same samples against "
                             "METHOD (per-image means, 95%% bootstrap CI over images)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of --compare (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --compare's resamples (default 0)")
    options = parser.parse_args(args)
    from harness.rating.results import refresh_task_rows

    refresh_task_rows(options.paths)  # a rating task folder: its ratings become rows.parquet first
    rows = load_rows(options.paths, with_baselines=not options.no_baselines)
    print(render_table(rows, fmt=options.format, metrics=options.metrics, include_cost=options.all_kinds))
    if options.compare:
        table = compare_table(options.paths, options.compare, options.metrics, options.resamples, options.seed)
        print(f"\nPaired differences against {options.compare} (predictor - reference; mean over shared images "
              f"of per-image values, 95% percentile bootstrap CI over images, {options.resamples} resamples, "
              f"seed {options.seed}):\n")
        print(render_compare(table, options.format))
    return 0


def cmd_demo(args: list[str]) -> int:
    """``harness demo``: the embedded default experiments, then where their results are."""
    from harness.demo import run_demo

    return run_demo(args)


def _delegate(module_name: str):
    """A subcommand implemented by ``main(argv) -> int`` in another module (imported on use)."""

    def handler(args: list[str]) -> int:
        import importlib

        return importlib.import_module(module_name).main(args)

    return handler


def cmd_toy(args: list[str]) -> int:
    """``harness toy train [...]``: the toy world's own commands."""
    if not args or args[0] not in ("train",):
        print("usage: harness toy train [options]  (see `harness toy train --help`)", file=sys.stderr)
        return 2
    return _delegate("harness.toy.train")(args[1:])


def cmd_list(args: list[str]) -> int:
    """``harness list``: what can be named in a config."""
    from harness.registry import BASELINES, DATASETS, METHODS, METRICS, MODELS

    for registry in (MODELS, DATASETS, METHODS, METRICS, BASELINES):
        print(f"{registry.kind}s: {', '.join(registry.names()) or '(none)'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
