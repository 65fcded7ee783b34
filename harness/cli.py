"""The ``harness`` command: every command of the harness is ``harness <command>``, and
``python -m harness <command>`` is the same. ``harness --help`` lists them (from the tables
below, so the list cannot disagree with what runs)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from harness import REPO_ROOT
from harness.compose import is_hydra_override
from harness.errors import HarnessError

CONFIG_DIR = REPO_ROOT / "conf"

#: ``harness <command>`` -> (usage, what it does). Commands implemented here are ``cmd_<name>``.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("[hydra overrides...]", "run an experiment (-m for a sweep)"),
    "table": ("PATH|GLOB... [--format markdown|csv|latex] [--compare METHOD]",
              "one pivot over runs, published numbers beside ours"),
    "select": ("experiment=NAME [overrides...]", "rerun an experiment's declared selection on dev"),
    "guidance-study": ("experiment=NAME [--stage dev|test|all]", "every guider: dev choice by the declared rule, test once"),
    "report": ("PATH... --out report.html", "one static HTML page over runs (tables, plots, gallery)"),
    "rate": ("TASK [--port P]", "a local page collecting 5-point ratings of a rating task"),
    "demo": ("", "the embedded demo (what `make demo` runs)"),
    "list": ("", "experiments, models, datasets, methods, metrics, baselines"),
    "daam": ('"<prompt>" [key=value...]', "the registered DAAM method on one prompt: per-word heat maps"),
    "build-prompts": ("NAME ...", "build a prompt-set manifest (COCO-Gen, Unreal-Gen, ...)"),
    "dalleval-report": ("skills|bias FOLDER", "markdown tables of skill and bias runs"),
    "standin": ("NAME DIR", "write a real model's random-weight stand-in as a save_pretrained folder"),
    "wordnet-data": ("[--sdist FILE]", "install WordNet 3.0 for NLTK offline (make setup runs it)"),
    "bench": ("[--out results/bench.json] [--only NAME...]", "the benchmarks (what `make bench` runs)"),
    "toy": ("train|evaluator|export|annotator|segmenter|probe [...]", "the toy world's own commands"),
}
#: Commands implemented by ``main(argv) -> int`` in another module (imported on use).
MODULES: dict[str, str] = {
    "select": "harness.selection", "report": "harness.report.html", "rate": "harness.rating.app",
    "daam": "harness.daam_cli", "build-prompts": "harness.data.build_cli",
    "dalleval-report": "harness.dalleval.report", "standin": "harness.models.standins",
    "wordnet-data": "harness.analysis.wordnet_data", "bench": "harness.bench.__main__",
}
#: ``harness toy <command>`` -> (module, what it does).
TOY_COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("harness.toy.train", "train (or resume) the toy-world model"),
    "evaluator": ("harness.toy.evaluator", "train and save the toy evaluator (judge and FID features)"),
    "export": ("harness.toy.export", "export a training run as a pipeline folder, with its loss curve"),
    "annotator": ("harness.toy.annotator", "check the toy annotator against exact masks"),
    "segmenter": ("harness.toy.segmenter", "train, score and save the supervised toy segmenter"),
    "probe": ("harness.toy.probe", "the teacher-forced probe of a saved toy pipeline, as JSON"),
}


def usage() -> str:
    """The command list of ``harness --help``."""
    width = max(len(f"{name} {args}") for name, (args, _) in COMMANDS.items())
    lines = ["usage: harness <command> [...]   (python -m harness <command> is the same)", ""]
    lines += [f"  harness {f'{name} {args}'.ljust(width)}  {what}" for name, (args, what) in COMMANDS.items()]
    lines += ["", "harness toy <command>:"]
    lines += [f"  harness toy {name.ljust(10)}  {what}" for name, (_, what) in TOY_COMMANDS.items()]
    lines += ["", "`harness <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` console script and of ``python -m harness``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        from harness.compose import closest

        print(f"harness: unknown command {command!r}.{closest(command, COMMANDS)}\n{usage()}", file=sys.stderr)
        return 2
    handler = globals().get(f"cmd_{command.replace('-', '_')}") or _delegate(MODULES[command])
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


def cmd_run(args: list[str]) -> int:
    """``harness run``: compose the config with Hydra and run it (one job, or ``-m`` for a sweep).

    The overrides are composed first by :func:`harness.compose.compose` (the same helper as
    the Python API, the tests and the bench), so a misspelt name or key stops here with one
    line and the closest match, ``smoke=true`` adds the experiment's ``smoke_overrides``, and
    ``hydra.run.dir`` given to an experiment that is a sweep becomes its sweep folder.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from harness.config import register_configs

    args = prepare_run_arguments(args)
    register_configs()

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def task(cfg) -> float | None:
        from harness.report.table import print_summary
        from harness.run import run_experiment

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        with open_dict(cfg):  # what this job was composed from: selection.chosen never overwrites it
            cfg.overrides = [o for o in HydraConfig.get().overrides.task if not is_hydra_override(o)]
        try:
            outcome = run_experiment(cfg, run_dir, cwd=Path.cwd())  # applies selection.chosen, checks
        except HarnessError as error:
            logging.getLogger("harness").error("%s", error)
            print(f"harness: error: {error}", file=sys.stderr)
            sys.exit(2)
        if outcome.shard is not None:
            print(f"Shard {outcome.shard}: wrote {run_dir / 'shard.json'}; {outcome.generated} sample(s) "
                  f"generated, {outcome.reused} reused, in the store {outcome.store}. No rows yet: score "
                  "with the same command without shard.*.")
            return None
        if cfg.print_summary and not outcome.rows.empty:
            print_summary(outcome.rows)
        print(f"Results: {run_dir} (summary.csv, rows.parquet); "
              f"{outcome.generated} sample(s) generated, {outcome.reused} reused from the cache.")
        return None

    saved_argv = sys.argv
    sys.argv = ["harness", *args]
    try:
        task()
    except SystemExit as exit_:  # Hydra's own errors and the task's HarnessError exit this way
        if exit_.code in (None, 0):
            return 0
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved_argv
    return 0


#: Hydra command-line flags that take a value (the value is not an override).
_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun")


def _overrides_of(args: list[str]) -> list[str]:
    """The ``key=value`` overrides among Hydra's command-line arguments (flags left out)."""
    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in _VALUE_FLAGS
            continue
        overrides.append(arg)
    return overrides


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """Each sweep override (``seed=0,1,2``) replaced by its first value, for checking one job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not is_hydra_override(o)])
    except HydraException as error:
        raise HarnessError(str(error).strip().splitlines()[0]) from None
    single = []
    for override in parsed:
        if override.is_sweep_override():
            prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
            first = next(iter(override.sweep_string_iterator()), "")
            single.append(f"{prefix}{override.key_or_group}={first}")
        else:
            single.append(override.input_line)
    return single


def prepare_run_arguments(args: list[str]) -> list[str]:
    """Check ``harness run``'s overrides with :func:`harness.compose.compose` (one line and the
    closest match for a typo), add the experiment's ``smoke_overrides`` under ``smoke=true``, and
    make ``hydra.run.dir`` the sweep folder of an experiment that is a sweep."""
    from harness.compose import compose, with_smoke_overrides

    if any(arg in ("-h", "--help", "--hydra-help") for arg in args):
        return args
    overrides = _overrides_of(args)
    cfg = compose(_first_of_sweeps(overrides), return_hydra_config=True)
    if cfg.get("smoke") and cfg.get("smoke_overrides"):
        args = with_smoke_overrides(args, [o for o in cfg.smoke_overrides if o not in overrides])
    multirun = "-m" in args or "--multirun" in args or str(cfg.hydra.get("mode")) in ("MULTIRUN", "RunMode.MULTIRUN")
    run_dirs = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")]
    if multirun and run_dirs and not any(o.startswith("hydra.sweep.dir=") for o in overrides):
        args = [*args, f"hydra.sweep.dir={run_dirs[-1]}"]
        print(f"note: experiment={cfg.experiment} is a sweep (hydra.mode=MULTIRUN or -m): hydra.run.dir={run_dirs[-1]} "
              f"is its sweep folder, one job per subfolder ({run_dirs[-1]}/0, {run_dirs[-1]}/1, ...); "
              "hydra.mode=RUN runs one job in hydra.run.dir instead.", flush=True)
    return args


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
    """A command implemented by ``main(argv) -> int`` in another module (imported on use)."""

    def handler(args: list[str]) -> int:
        return importlib.import_module(module_name).main(args) or 0

    return handler


def cmd_toy(args: list[str]) -> int:
    """``harness toy <command> [...]``: the toy world's own commands."""
    if not args or args[0] not in TOY_COMMANDS:
        from harness.compose import closest

        hint = closest(args[0], TOY_COMMANDS) if args and not args[0].startswith("-") else ""
        print(f"usage: harness toy {{{'|'.join(TOY_COMMANDS)}}} [options]{hint}", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return _delegate(TOY_COMMANDS[args[0]][0])(args[1:])


def cmd_list(args: list[str]) -> int:
    """``harness list``: what can be named in a config."""
    from harness.compose import group_options
    from harness.registry import BASELINES, DATASETS, METHODS, METRICS, MODELS

    print(f"experiments: {', '.join(group_options('experiment')) or '(none)'}")
    for registry in (MODELS, DATASETS, METHODS, METRICS, BASELINES):
        print(f"{registry.kind}s: {', '.join(registry.names()) or '(none)'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
