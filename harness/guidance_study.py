"""``harness guidance-study experiment=NAME``: every guider on dev by a declared rule, then on test once.

The protocol lives in the experiment's ``guider_study:`` block, written before any test figure:

* ``guiders``: name -> ``{params: {...}, grid: {key: [values]}}`` (the guider's own arguments and
  the one setting tuned on dev, usually its scale);
* ``dev``: ``{split: dev, size, seed}``; ``objective``: ``{metric, goal}`` and ``tiebreak``:
  ``{metric, goal}`` (the rule: the grid value with the best objective on dev, ties broken by
  the tiebreak metric);
* ``reference``: the guider every other is compared with on test (paired over the same images);
* ``bootstrap``: ``{resamples, seed}``.

Stages (``--stage dev|test|all``): ``dev`` runs the grid of every guider on the dev split,
writes the evidence (``docs/selection/<experiment>.md``), the choices into the experiment file
(``guider_study.chosen``) and the figure; ``test`` runs each guider once at its chosen value on
the experiment's own split and writes ``table.md`` with paired differences against the
reference (accuracy: mean per-image difference; KID: difference of KIDs recomputed on the same
bootstrap resample of images for both guiders), each with a percentile bootstrap interval.
Every run is an ordinary ``harness run`` (same config resolution, same cache).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf, open_dict

from harness.errors import ConfigError
from harness.selection import CONFIG_DIR, EVIDENCE_DIR, compose

log = logging.getLogger(__name__)

CHOSEN_LINE = "  chosen:"


@dataclass
class StudyProtocol:
    """A parsed ``guider_study:`` block."""

    experiment: str
    guiders: dict[str, dict[str, Any]]
    reference: str
    objective: tuple[str, str]
    tiebreak: tuple[str, str] | None
    dev_split: str = "dev"
    dev_size: int = 16
    dev_seed: int = 0
    resamples: int = 1000
    bootstrap_seed: int = 0
    chosen: dict[str, Any] = field(default_factory=dict)

    def grid(self, guider: str) -> tuple[str, list[Any]]:
        grid = self.guiders[guider].get("grid") or {}
        if len(grid) != 1:
            raise ConfigError(f"guider_study.guiders.{guider}.grid must have exactly one key (the tuned setting).")
        key, values = next(iter(grid.items()))
        return str(key), list(values)


def parse_study(experiment: str, block: Any) -> StudyProtocol:
    """The study protocol of ``experiment``, validated."""
    if not block:
        raise ConfigError(f"experiment={experiment} declares no guider_study: block.")
    data = OmegaConf.to_container(block, resolve=True) if OmegaConf.is_config(block) else dict(block)
    unknown = set(data) - {"guiders", "reference", "objective", "tiebreak", "dev", "bootstrap", "chosen"}
    if unknown:
        raise ConfigError(f"guider_study: unknown keys {sorted(unknown)}.")
    guiders = data.get("guiders") or {}
    if not guiders:
        raise ConfigError("guider_study.guiders is empty.")
    reference = str(data.get("reference", ""))
    if reference not in guiders:
        raise ConfigError(f"guider_study.reference {reference!r} is not one of the guiders ({', '.join(guiders)}).")
    dev = data.get("dev") or {}
    if dev.get("split", "dev") != "dev":
        raise ConfigError("guider_study.dev.split must be dev: test is looked at once, after the choice.")

    def metric_goal(entry: Any, what: str) -> tuple[str, str]:
        if not isinstance(entry, dict) or "metric" not in entry or entry.get("goal", "max") not in ("max", "min"):
            raise ConfigError(f"guider_study.{what} is {{metric: NAME, goal: max|min}}, got {entry!r}.")
        return str(entry["metric"]), str(entry.get("goal", "max"))

    tiebreak = metric_goal(data["tiebreak"], "tiebreak") if data.get("tiebreak") else None
    bootstrap = data.get("bootstrap") or {}
    protocol = StudyProtocol(experiment, guiders, reference, metric_goal(data.get("objective"), "objective"), tiebreak,
                             "dev", int(dev.get("size", 16)), int(dev.get("seed", 0)),
                             int(bootstrap.get("resamples", 1000)), int(bootstrap.get("seed", 0)),
                             dict(data.get("chosen") or {}))
    for guider in guiders:
        protocol.grid(guider)
    return protocol


def run_config(protocol: StudyProtocol, guider: str, setting: dict[str, Any], dev: bool,
               extra: list[str] = ()) -> Any:
    """The run of one guider at one setting (dev: the dev split and size)."""
    overrides = [f"experiment={protocol.experiment}", f"method.guider={guider}", *extra]
    if dev:
        overrides += [f"dataset.split={protocol.dev_split}", f"dataset.size={protocol.dev_size}",
                      f"dataset.seed={protocol.dev_seed}"]
    cfg = compose(overrides)
    with open_dict(cfg):
        cfg.method.params = {**OmegaConf.to_container(cfg.method.params), **(protocol.guiders[guider].get("params") or {})}
        cfg.print_summary = False
        cfg.figures = False
    for key, value in setting.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=key.startswith("method.params."))
    return cfg


def choose(values: list[dict[str, float]], objective: tuple[str, str], tiebreak: tuple[str, str] | None) -> int:
    """The declared rule: best objective; among equal objectives, best tiebreak; then the first."""
    def key(index: int) -> tuple[float, float, int]:
        entry = values[index]
        sign = 1 if objective[1] == "max" else -1
        main = sign * entry[objective[0]]
        second = 0.0
        if tiebreak is not None:
            second = (1 if tiebreak[1] == "max" else -1) * entry[tiebreak[0]]
        return (main, second, -index)

    return max(range(len(values)), key=key)


def aggregate(rows: pd.DataFrame, metric: str) -> float:
    picked = rows[(rows["level"] == "aggregate") & (rows["metric"] == metric)]
    if picked.empty:
        raise ConfigError(f"the run wrote no {metric} row.")
    return float(picked.iloc[0]["value"])


def run_dev(protocol: StudyProtocol, out_root: Path, extra: list[str] = ()) -> tuple[dict[str, Any], pd.DataFrame, list]:
    """Every guider's grid on dev; returns (chosen value per guider, the dev aggregate rows, evidence)."""
    from harness.run import run_experiment

    chosen, frames, evidence = {}, [], []
    for guider in protocol.guiders:
        key, values = protocol.grid(guider)
        scores = []
        for index, value in enumerate(values):
            cfg = run_config(protocol, guider, {key: value}, dev=True, extra=extra)
            began = time.perf_counter()
            outcome = run_experiment(cfg, out_root / "dev" / f"{guider}-{index:02d}", cwd=Path.cwd())
            metrics = [protocol.objective[0]] + ([protocol.tiebreak[0]] if protocol.tiebreak else [])
            entry = {m: aggregate(outcome.rows, m) for m in metrics}
            scores.append(entry)
            frames.append(outcome.rows[outcome.rows["level"] == "aggregate"])
            evidence.append((guider, key, value, entry, time.perf_counter() - began))
            print(f"dev {guider} {key}={value}: " + ", ".join(f"{m} {v:.4f}" for m, v in entry.items()), flush=True)
        chosen[guider] = values[choose(scores, protocol.objective, protocol.tiebreak)]
    rows = pd.concat(frames, ignore_index=True)
    return chosen, rows, evidence


def write_chosen(path: Path, chosen: dict[str, Any]) -> None:
    """Put ``guider_study.chosen`` in the experiment file (replacing the line it had; the choices of
    guiders this study did not run are kept)."""
    text = path.read_text()
    found = re.search(rf"^{CHOSEN_LINE}(.*)$", text, flags=re.M)
    if found:
        import yaml

        try:
            earlier = yaml.safe_load(found.group(1).split("  #")[0]) or {}
        except yaml.YAMLError:
            earlier = {}
        chosen = {**(earlier if isinstance(earlier, dict) else {}), **chosen}
    line = f"{CHOSEN_LINE} {json.dumps(chosen)}  # written by `harness guidance-study --stage dev`; not by hand"
    if not re.search(rf"^{CHOSEN_LINE}.*$", text, flags=re.M):
        raise ConfigError(f"{path} has no '{CHOSEN_LINE.strip()}' line under guider_study to write the choice into.")
    path.write_text(re.sub(rf"^{CHOSEN_LINE}.*$", line, text, count=1, flags=re.M))


def per_image(rows: pd.DataFrame, metric: str) -> dict[str, float]:
    picked = rows[(rows["level"] == "sample") & (rows["metric"] == metric)]
    return {str(s): float(v) for s, v in zip(picked["sample_id"], picked["value"], strict=True)}


def generated_features(run_dir: Path, cfg: Any, extractor: Any) -> dict[str, np.ndarray]:
    """Features of a run's images (record id -> feature vector), read back from the store."""
    from harness.metrics.features import images_to_tensor
    from harness.store.samples import SampleStore

    keys = json.loads((run_dir / "sample_keys.json").read_text())[str(cfg.method.name)]
    store = SampleStore(Path(cfg.store.root))
    out = {}
    for record_id, key in keys.items():
        sample = store.get(key)
        out[record_id] = extractor(images_to_tensor([sample.image])).double().numpy()[0]
    return out


def paired_kid(features: dict[str, dict[str, np.ndarray]], reference: str, real: np.ndarray, resamples: int,
               seed: int, subset_size: int) -> dict[str, dict[str, float]]:
    """KID(guider) - KID(reference) on the same images, with a percentile bootstrap over images.

    Each resample draws image ids with replacement once and recomputes both KIDs (torchmetrics,
    one subset of all drawn images) on those images; the duplicates a resample holds affect
    both guiders alike.
    """
    from harness.metrics.feature_sets import kid_from_features

    ids = sorted(features[reference])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(resamples, len(ids)))
    size = min(subset_size, len(ids), len(real))

    def kid(name: str, index: np.ndarray) -> float:
        fake = np.stack([features[name][ids[i]] for i in index])
        return kid_from_features(real, fake, subsets=1, subset_size=size, seed=0)[0]

    base = {int(i): i for i in range(len(ids))}
    reference_full = kid(reference, np.array(list(base)))
    reference_draws = [kid(reference, draw) for draw in draws]
    out = {}
    for name in features:
        if name == reference:
            continue
        full = kid(name, np.array(list(base))) - reference_full
        diffs = np.array([kid(name, draw) - ref for draw, ref in zip(draws, reference_draws, strict=True)])
        low, high = np.quantile(diffs, [0.025, 0.975])
        out[name] = {"difference": float(full), "ci_low": float(low), "ci_high": float(high), "n": len(ids)}
    return out


def run_test(protocol: StudyProtocol, out_root: Path, extra: list[str] = ()) -> tuple[pd.DataFrame, str]:
    """Each guider once at its chosen value on the experiment's split; (aggregate rows, table markdown)."""
    from harness.metrics.feature_sets import reference_features
    from harness.run import run_experiment
    from harness.stats import paired_differences

    missing = [g for g in protocol.guiders if g not in protocol.chosen]
    if missing:
        raise ConfigError(f"guider_study.chosen has no value for {', '.join(missing)}: run --stage dev first.")
    frames, accuracy, features = [], {}, {}
    kid_metric = None
    for guider in protocol.guiders:
        key, _ = protocol.grid(guider)
        cfg = run_config(protocol, guider, {key: protocol.chosen[guider]}, dev=False, extra=extra)
        run_dir = out_root / "test" / guider
        outcome = run_experiment(cfg, run_dir, cwd=Path.cwd())
        frames.append(outcome.rows[outcome.rows["level"] == "aggregate"])
        accuracy[guider] = per_image(outcome.rows, protocol.objective[0])
        if kid_metric is None and "kid" in cfg.metric:
            from harness.metrics.base import build_metrics

            kid_metric = build_metrics({"kid": cfg.metric.kid})[0]
            kid_options = cfg.metric.kid
        if kid_metric is not None:
            features[guider] = generated_features(run_dir, cfg, kid_metric.extractor)
        print(f"test {guider} {key}={protocol.chosen[guider]}: done", flush=True)
    rows = pd.concat(frames, ignore_index=True)
    accuracy_diff = paired_differences(accuracy, protocol.reference, protocol.resamples, seed=protocol.bootstrap_seed)
    kid_diff = {}
    if kid_metric is not None:
        real = reference_features(kid_metric.real, kid_metric.extractor, kid_metric.stats_cache, kid_metric.batch_size)
        kid_diff = paired_kid(features, protocol.reference, real, protocol.resamples, protocol.bootstrap_seed,
                              int(kid_options.get("subset_size", 1000)))
    return rows, study_table(protocol, rows, accuracy_diff, kid_diff)


def _cell(entry: dict[str, Any] | None, digits: int = 3) -> str:
    if not entry or entry.get("difference") is None:
        return "reference"
    if entry.get("ci_low") is None:
        return f"{entry['difference']:+.{digits}f}"
    return f"{entry['difference']:+.{digits}f} [{entry['ci_low']:+.{digits}f}, {entry['ci_high']:+.{digits}f}]"


def study_table(protocol: StudyProtocol, rows: pd.DataFrame, accuracy_diff: dict, kid_diff: dict) -> str:
    """The test table (markdown): one line per guider at its chosen value, with the budget and cost."""
    def value(guider: str, metric: str) -> float | None:
        picked = rows[(rows["hp.guider"] == guider) & (rows["metric"] == metric)]
        return None if picked.empty else float(picked.iloc[0]["value"])

    def fmt(x: float | None, digits: int = 3) -> str:
        return "" if x is None or np.isnan(x) else f"{x:.{digits}f}"

    objective = protocol.objective[0]
    budget = rows["hp.budget_calls"].dropna().unique() if "hp.budget_calls" in rows.columns else []
    lines = [f"Budget: {', '.join(str(int(b)) for b in budget) or 'none (generation.steps)'} network calls per image; "
             f"paired differences against {protocol.reference} over the same test images, 95% percentile "
             f"bootstrap ({protocol.resamples} resamples).", "",
             f"| guider | chosen | steps | calls/image | s/image | {objective} | delta {objective} | KID (subset std) | "
             "delta KID | precision | recall | density | coverage | CMMD | FID (d, N) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for guider in protocol.guiders:
        key, _ = protocol.grid(guider)
        picked = rows[rows["hp.guider"] == guider]
        steps = picked["hp.steps"].iloc[0] if "hp.steps" in picked.columns and not picked.empty else ""
        kid, kid_std = value(guider, "kid"), value(guider, "kid_std")
        fid_rows = picked[picked["metric"] == "fid"]
        fid = ""
        if not fid_rows.empty:
            row = fid_rows.iloc[0]
            note = ", N < 2d" if bool(row.get("below_2d", False)) else ""
            fid = f"{row['value']:.2f} (d={int(row['feature_dim'])}, N={int(row['n'])}{note})"
        kid_cell = "" if kid is None else f"{kid:.4g} ({kid_std or 0:.4g})"
        kid_delta = kid_diff.get(guider)
        kid_delta_cell = "reference" if guider == protocol.reference else (
            "" if kid_delta is None else _cell(kid_delta, digits=1))
        lines.append(
            f"| {guider} | {key.removeprefix('method.params.')}={protocol.chosen[guider]} | {steps} | "
            f"{fmt(value(guider, 'unet_calls_per_image'), 1)} | {fmt(value(guider, 'seconds_per_image'), 3)} | "
            f"{fmt(value(guider, objective))} | "
            f"{'reference' if guider == protocol.reference else _cell(accuracy_diff.get(guider))} | {kid_cell} | "
            f"{kid_delta_cell} | {fmt(value(guider, 'precision'))} | {fmt(value(guider, 'recall'))} | "
            f"{fmt(value(guider, 'density'))} | {fmt(value(guider, 'coverage'))} | {fmt(value(guider, 'cmmd'))} | {fid} |")
    return "\n".join(lines) + "\n"


def evidence_markdown(protocol: StudyProtocol, evidence: list, chosen: dict[str, Any], command: str,
                      seconds: float) -> str:
    objective, goal = protocol.objective
    rule = f"best {objective} ({goal})" + (f", ties by {protocol.tiebreak[0]} ({protocol.tiebreak[1]})"
                                           if protocol.tiebreak else "")
    lines = [f"# {protocol.experiment}: per-guider choice on dev", "",
             f"Command: `{command}` ({seconds / 60:.1f} min). Dev split, {protocol.dev_size} prompts, "
             f"dataset seed {protocol.dev_seed}. Rule (declared in conf/experiment/{protocol.experiment}.yaml "
             f"before any test run): {rule}.", "", "| guider | setting | " + " | ".join(evidence[0][3]) + " | chosen |",
             "|---|---|" + "---|" * (len(evidence[0][3]) + 1)]
    for guider, key, value, entry, _ in evidence:
        mark = "yes" if chosen[guider] == value else ""
        lines.append(f"| {guider} | {key.removeprefix('method.params.')}={value} | "
                     + " | ".join(f"{v:.4f}" for v in entry.values()) + f" | {mark} |")
    return "\n".join(lines) + "\n"


def run_study(argv: list[str] | None = None) -> Path:
    """The ``harness guidance-study`` command line; returns the output folder (``dev_rows.csv`` there
    is what the figure is drawn from, by the CLI: this module stays below the report layer)."""
    parser = argparse.ArgumentParser(prog="harness guidance-study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="+", help="experiment=NAME, then optional Hydra overrides")
    parser.add_argument("--stage", choices=("dev", "test", "all"), default="all")
    parser.add_argument("--no-write", action="store_true", help="do not write the choice into the config or docs")
    parser.add_argument("--out", default=None, help="folder of the runs (default results/guidance_study/<experiment>/<time>)")
    options = parser.parse_args(argv)
    experiments = [o.split("=", 1)[1] for o in options.overrides if o.startswith("experiment=")]
    if len(experiments) != 1:
        raise ConfigError("harness guidance-study needs exactly one experiment=NAME.")
    experiment = experiments[0]
    extra = [o for o in options.overrides if not o.startswith("experiment=")]
    protocol = parse_study(experiment, OmegaConf.select(compose(options.overrides), "guider_study"))
    out_root = Path(options.out or f"results/guidance_study/{experiment}/{_dt.datetime.now():%Y%m%d-%H%M%S}")
    out_root.mkdir(parents=True, exist_ok=True)
    command = "harness guidance-study " + " ".join(argv or [])
    if options.stage in ("dev", "all"):
        began = time.perf_counter()
        chosen, dev_rows, evidence = run_dev(protocol, out_root, extra)
        report = evidence_markdown(protocol, evidence, chosen, command, time.perf_counter() - began)
        print(report)
        (out_root / "dev.md").write_text(report)
        dev_rows.to_csv(out_root / "dev_rows.csv", index=False)
        protocol.chosen = chosen
        if not options.no_write:
            EVIDENCE_DIR.mkdir(parents=True, exist_ok=True)
            (EVIDENCE_DIR / f"{experiment}.md").write_text(report)
            write_chosen(CONFIG_DIR / "experiment" / f"{experiment}.yaml", chosen)
    if options.stage in ("test", "all"):
        rows, table = run_test(protocol, out_root, extra)
        rows.to_csv(out_root / "test_rows.csv", index=False)
        (out_root / "table.md").write_text(table)
        print(table)
    print(f"results in {out_root}")
    return out_root


__all__ = ["StudyProtocol", "choose", "run_study", "paired_kid", "parse_study", "run_dev", "run_test", "study_table"]
