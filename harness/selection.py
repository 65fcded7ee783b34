"""Selection as code: ``harness select experiment=NAME`` reruns an experiment's declared selection.

An experiment config declares, in its ``selection:`` block, how each tuned hyperparameter is
chosen, before any ``test`` figure is looked at::

    selection:
      split: dev                 # always dev: test is looked at once, with the chosen values
      size: 48                   # dev records per setting
      seed: 0                    # dataset.seed of the dev sample
      dataset: toy_gen           # optional: the dataset to select on (default: the experiment's)
      method: pag                # optional: the method to select for (default: the experiment's)
      objective: {metric: miou, method: daam, goal: max}   # an aggregate row of the run
      rule: argmax               # argmax | one_se
      grid:                      # ordered; each parameter's values listed from simplest/smallest
        - {key: method.layers, values: [[up_blocks.*], [down_blocks.*, up_blocks.*]]}
        - {key: metric.miou.threshold, values: [0.3, 0.4, 0.5]}
      chosen: [...]              # written by `harness select`, never by hand

Rules (declared, applied mechanically):

- ``argmax``: the setting with the best objective (``goal: max`` or ``min``); ties go to the
  first in grid order.
- ``one_se``: the first setting in grid order whose objective is within one standard error of
  the best (SE of the best setting = half the width of its 95% interval / 1.96); a figure with
  no interval (FID) falls back to ``argmax``. Grid order is the Cartesian product of the
  parameters in the order listed, each parameter's values in the order listed, the first
  parameter varying slowest; list values from simplest to most complex.

Each setting is one ``harness run`` on ``dataset.split=dev`` with the grid values set, only the
objective metric and no baselines. Finished samples are reused from the sample cache, so
settings that only change a metric (a threshold) cost one generation per method setting.
The command writes the chosen values into the experiment config (``selection.chosen``: a
list of ``{key, value}``) and the evidence (every setting's dev figure) into
``docs/selection/<experiment>.md``. ``harness run`` applies ``selection.chosen`` to every job
of the experiment in which the key exists (a PAG layer applies to the PAG methods of a sweep,
not to ``plain``), unless the command line sets the key itself.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from harness import REPO_ROOT
from harness.compose import apply_selected, compose
from harness.errors import ConfigError

__all__ = ["apply_selected", "compose"]  # re-exported: applied by the run, composed by harness.compose

log = logging.getLogger("harness.select")

RULES = ("argmax", "one_se")
GOALS = ("max", "min")
CONFIG_DIR = REPO_ROOT / "conf"
EVIDENCE_DIR = REPO_ROOT / "docs" / "selection"
CHOSEN_MARKER = "  # written by `harness select"
Z95 = 1.959963984540054


@dataclass
class Protocol:
    """A parsed ``selection:`` block."""

    experiment: str
    grid: list[tuple[str, list[Any]]]
    objective_metric: str
    objective_method: str | None = None
    goal: str = "max"
    rule: str = "argmax"
    split: str = "dev"
    size: int = 48
    seed: int = 0
    dataset: str | None = None
    method: str | None = None
    overrides: list[str] = field(default_factory=list)

    def settings(self) -> list[dict[str, Any]]:
        """Every grid setting, in grid order (first parameter slowest)."""
        keys = [key for key, _ in self.grid]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in self.grid))]


def parse_protocol(experiment: str, block: Any) -> Protocol:
    """The protocol of ``experiment`` from its ``selection:`` block, validated."""
    if not block:
        raise ConfigError(f"experiment={experiment} declares no selection: block; nothing to select.")
    data = OmegaConf.to_container(block, resolve=True) if isinstance(block, DictConfig) else dict(block)
    unknown = set(data) - {"split", "size", "seed", "dataset", "method", "objective", "rule", "grid", "chosen",
                           "overrides"}
    if unknown:
        raise ConfigError(f"selection: unknown keys {sorted(unknown)} in experiment={experiment}.")
    if data.get("split", "dev") != "dev":
        raise ConfigError(f"selection.split must be dev (test is looked at once, after selection), got {data['split']!r}.")
    rule = data.get("rule", "argmax")
    if rule not in RULES:
        raise ConfigError(f"selection.rule must be one of {RULES}, got {rule!r}.")
    objective = data.get("objective") or {}
    if "metric" not in objective:
        raise ConfigError("selection.objective needs a metric (and optionally method and goal: max|min).")
    goal = objective.get("goal", "max")
    if goal not in GOALS:
        raise ConfigError(f"selection.objective.goal must be max or min, got {goal!r}.")
    grid = []
    for entry in data.get("grid") or []:
        if not isinstance(entry, dict) or "key" not in entry or not entry.get("values"):
            raise ConfigError(f"selection.grid entries are {{key: a.b.c, values: [...]}}, got {entry!r}.")
        grid.append((str(entry["key"]), list(entry["values"])))
    if not grid:
        raise ConfigError("selection.grid is empty.")
    if int(data.get("size", 48)) < 2:
        raise ConfigError("selection.size must be >= 2.")
    return Protocol(experiment, grid, str(objective["metric"]), objective.get("method"), goal, rule, "dev",
                    int(data.get("size", 48)), int(data.get("seed", 0)), data.get("dataset"), data.get("method"),
                    list(data.get("overrides") or []))


@dataclass
class Evaluated:
    """One grid setting's dev figure."""

    setting: dict[str, Any]
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    seconds: float = 0.0
    generated: int = 0  #: samples this setting generated (0: all reused from the cache)

    @property
    def se(self) -> float | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / (2 * Z95)


def choose(results: list[Evaluated], goal: str = "max", rule: str = "argmax") -> int:
    """Index of the chosen setting (see the module docstring for the rules)."""
    if not results:
        raise ConfigError("no setting was evaluated")
    import math

    sign = 1.0 if goal == "max" else -1.0
    scores = [sign * r.value for r in results]
    # a setting whose figure is NaN (nothing scored) is never chosen: NaN compares false both ways
    finite = [i for i, score in enumerate(scores) if math.isfinite(score)]
    if not finite:
        raise ConfigError("no setting gave a finite objective (every dev figure is NaN or infinite); "
                          "see the dev runs' skipped_reason.")
    best = max(finite, key=lambda i: (scores[i], -i))  # ties: the first in grid order
    se = results[best].se
    if rule == "argmax" or se is None or not math.isfinite(se):
        return best
    bar = scores[best] - se
    return next(i for i in finite if scores[i] >= bar)


# -- applying chosen values --------------------------------------------------------------------

# -- running a selection -----------------------------------------------------------------------

def setting_config(protocol: Protocol, setting: dict[str, Any], extra: list[str] = ()) -> DictConfig:
    """The dev run of one grid setting: dev split, objective metric only, no baselines."""
    overrides = [f"experiment={protocol.experiment}"]
    if protocol.dataset:
        overrides.append(f"dataset={protocol.dataset}")
    if protocol.method:
        overrides.append(f"method={protocol.method}")
    overrides += [f"dataset.split={protocol.split}", f"dataset.size={protocol.size}", f"dataset.seed={protocol.seed}",
                  *protocol.overrides, *extra]
    cfg = compose(overrides)
    if protocol.objective_metric not in cfg.metric:
        raise ConfigError(f"selection.objective.metric {protocol.objective_metric!r} is not a metric of "
                          f"experiment={protocol.experiment} (metrics: {', '.join(cfg.metric)}).")
    with open_dict(cfg):
        cfg.metric = {protocol.objective_metric: cfg.metric[protocol.objective_metric]}
        cfg.baseline = {}
        cfg.figures = False
        cfg.print_summary = False
    for key, value in setting.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node:
            raise ConfigError(f"selection.grid key {key!r} does not exist in the dev run's config.")
        OmegaConf.update(cfg, key, value, merge=False)
        cfg.overrides.append(f"{key}={json.dumps(value)}")  # the grid value wins over selection.chosen
    if cfg.dataset.split != "dev":
        raise ConfigError(f"harness select runs on dev only; the overrides make dataset.split={cfg.dataset.split} "
                          "(test is looked at once, with the chosen values: harness run).")
    return cfg


def objective_of(rows: Any, protocol: Protocol, method_name: str) -> tuple[float, float | None, float | None, int]:
    """(value, ci_low, ci_high, n) of the objective's aggregate row."""
    import math

    wanted = protocol.objective_method or method_name
    picked = rows[(rows["level"] == "aggregate") & (rows["metric"] == protocol.objective_metric)
                  & (rows["method"] == wanted)]
    if picked.empty:
        raise ConfigError(f"the dev run wrote no {protocol.objective_metric} row for method {wanted}.")
    row = picked.iloc[0]

    def number(value: Any) -> float | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    return float(row["value"]), number(row["ci_low"]), number(row["ci_high"]), int(row["n"])


def run_selection(protocol: Protocol, out_root: Path, extra: list[str] = ()) -> list[Evaluated]:
    """Evaluate every grid setting on dev; one run folder per setting under ``out_root``."""
    from harness.run import run_experiment

    results = []
    for index, setting in enumerate(protocol.settings()):
        cfg = setting_config(protocol, setting, list(extra))
        began = time.perf_counter()
        outcome = run_experiment(cfg, out_root / f"setting-{index:02d}", cwd=Path.cwd())
        value, low, high, n = objective_of(outcome.rows, protocol, str(cfg.method.name))
        results.append(Evaluated(setting, value, low, high, n, time.perf_counter() - began, outcome.generated))
        log.info("setting %d %s: %s = %.4f", index, setting, protocol.objective_metric, value)
        print(f"[{index + 1}/{len(protocol.settings())}] {json.dumps(setting)}: {protocol.objective_metric} "
              f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None else ""), flush=True)
    return results


# -- writing the outcome -----------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def evidence_markdown(protocol: Protocol, results: list[Evaluated], chosen: int, command: str,
                      seconds: float, commit: str | None = None) -> str:
    """docs/selection/<experiment>.md: the protocol, every dev figure, the choice.

    ``commit`` is the code the selection ran (``git_sha()`` taken when it started: the full
    commit, ``-dirty`` when tracked files differed from it)."""
    from harness.store.rows import git_sha

    commit = commit or git_sha()
    sha, _, dirty = commit.partition("-")
    keys = [key for key, _ in protocol.grid]
    objective = f"{protocol.objective_metric} of {protocol.objective_method or 'the method'} ({protocol.goal})"
    rule = {"argmax": "argmax (ties: first in grid order)",
            "one_se": "the first setting in grid order within one standard error of the best "
                      "(SE = 95% interval half-width / 1.96; argmax when the figure has no interval)"}[protocol.rule]
    lines = [
        f"# Selection of `{protocol.experiment}` (generated by `harness select`; do not edit)",
        "",
        f"Command: `{command}` ({seconds / 60:.1f} min on {_dt.date.today().isoformat()}, commit "
        f"`{sha}`, {'with uncommitted changes to tracked files (dirty)' if dirty else 'clean working tree'}).",
        "",
        f"- split: **{protocol.split}** ({protocol.size} records, dataset.seed {protocol.seed}"
        + (f", dataset {protocol.dataset}" if protocol.dataset else "") + ")"
        + (f"; method {protocol.method}" if protocol.method else ""),
        f"- objective: {objective}",
        f"- rule: {rule}",
        "- grid (in order): " + "; ".join(f"`{k}` in {_fmt(v)}" for k, v in protocol.grid),
        "",
        "| " + " | ".join(keys) + f" | {protocol.objective_metric} (dev) | 95% interval | n |",
        "|" + "---|" * (len(keys) + 3),
    ]
    for index, result in enumerate(results):
        cells = [_fmt(result.setting[k]) for k in keys]
        value = f"{result.value:.4f}"
        interval = f"[{result.ci_low:.4f}, {result.ci_high:.4f}]" if result.ci_low is not None else ""
        if index == chosen:
            cells = [f"**{c}**" for c in cells]
            value = f"**{value}** (chosen)"
        lines.append("| " + " | ".join([*cells, value, interval, str(result.n)]) + " |")
    lines += ["", "Chosen: " + ", ".join(f"`{k}` = {_fmt(v)}" for k, v in results[chosen].setting.items())
              + f"; written into `conf/experiment/{protocol.experiment}.yaml` (`selection.chosen`).", ""]
    return "\n".join(lines)


def write_chosen(config_path: Path, experiment: str, setting: dict[str, Any]) -> None:
    """Replace the ``chosen:`` list at the end of the experiment's ``selection:`` block."""
    text = config_path.read_text()
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(CHOSEN_MARKER) or line.startswith("  chosen:")),
                 None)
    if start is None:
        if not any(line.startswith("selection:") for line in lines):
            raise ConfigError(f"{config_path} has no selection: block.")
        start = len(lines)
    elif any(line and not line.startswith(" ") for line in lines[start:]):
        raise ConfigError(f"{config_path}: selection.chosen must be the last entry of the file.")
    block = [f"{CHOSEN_MARKER} experiment={experiment}` on dev (evidence: docs/selection/{experiment}.md);",
             "  # not by hand. `harness run` applies each value where the key exists, unless the command line sets it.",
             "  chosen:"]
    block += [f"    - {{key: {key}, value: {json.dumps(value)}}}" for key, value in setting.items()]
    config_path.write_text("\n".join(lines[:start] + block) + "\n")
    written = OmegaConf.load(config_path)
    readback = {e["key"]: OmegaConf.to_container(e["value"]) if OmegaConf.is_config(e["value"]) else e["value"]
                for e in written.selection.chosen}
    if readback != setting:
        raise ConfigError(f"writing {config_path} went wrong: read back {readback}, meant {setting}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness select", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="+", help="experiment=NAME, then optional Hydra overrides")
    parser.add_argument("--no-write", action="store_true", help="print the choice; change no file")
    parser.add_argument("--out", default=None, help="folder of the dev runs (default results/selection/<experiment>)")
    options = parser.parse_args(argv)
    experiments = [o.split("=", 1)[1] for o in options.overrides if o.startswith("experiment=")]
    if len(experiments) != 1:
        raise ConfigError("harness select needs exactly one experiment=NAME.")
    experiment = experiments[0]
    extra = [o for o in options.overrides if not o.startswith("experiment=")]
    base = compose([f"experiment={experiment}"])
    protocol = parse_protocol(experiment, OmegaConf.select(base, "selection"))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_root = Path(options.out or f"results/selection/{experiment}/{stamp}")
    from harness.store.rows import git_sha

    setting_config(protocol, protocol.settings()[0], extra)  # a test split (or any bad override) stops here
    commit = git_sha()  # the code the selection runs, taken before it runs
    began = time.perf_counter()
    results = run_selection(protocol, out_root, extra)
    seconds = time.perf_counter() - began
    chosen = choose(results, protocol.goal, protocol.rule)
    command = "harness select " + " ".join(options.overrides)
    report = evidence_markdown(protocol, results, chosen, command, seconds, commit)
    print(report)
    if not options.no_write:
        EVIDENCE_DIR.mkdir(parents=True, exist_ok=True)
        (EVIDENCE_DIR / f"{experiment}.md").write_text(report)
        write_chosen(CONFIG_DIR / "experiment" / f"{experiment}.yaml", experiment, results[chosen].setting)
        print(f"wrote docs/selection/{experiment}.md and conf/experiment/{experiment}.yaml (selection.chosen)")
    return 0
