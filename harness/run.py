"""One experiment run, as a straight line:

    config -> prompt set -> model -> method -> cached samples -> metrics -> tidy rows

Samples are generated (or taken from the cache) first and evaluated afterwards, so a failure
while scoring never costs a generated sample, and a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from harness.baselines.base import Baseline, build_baselines
from harness.data.prompts import PromptSet, validate_prompt_set
from harness.errors import HarnessError
from harness.methods.base import GenerationSettings, Method, generation_seed
from harness.metrics.base import build_metrics
from harness.registry import DATASETS, METHODS
from harness.store.rows import build_rows, config_hash, flatten_hparams, git_sha, library_versions, write_rows
from harness.store.samples import Sample, SampleStore, content_key

log = logging.getLogger("harness.run")

#: In smoke mode every experiment runs on at most this many records with at most this many steps.
SMOKE_RECORDS = 2
SMOKE_STEPS = 2


@dataclass
class RunOutcome:
    rows: pd.DataFrame
    run_dir: Path
    generated: int
    reused: int


def resolve_path(path: str | Path, base: Path | None = None) -> Path:
    """Relative paths in configs are relative to where the command was started."""
    path = Path(path).expanduser()
    return path if path.is_absolute() or base is None else base / path


def build_prompt_set(cfg: DictConfig) -> PromptSet:
    builder = DATASETS.get(cfg.dataset.name)
    prompt_set = builder(cfg.dataset)
    if cfg.smoke:
        prompt_set = prompt_set.head(min(len(prompt_set), SMOKE_RECORDS))
    return validate_prompt_set(prompt_set, f"dataset={cfg.dataset.name}")


def generation_settings(cfg: DictConfig, model: Any) -> GenerationSettings:
    gen = cfg.generation
    steps = min(gen.steps, SMOKE_STEPS) if cfg.smoke else gen.steps
    return GenerationSettings(
        steps=int(steps),
        guidance_scale=float(gen.guidance_scale),
        height=int(gen.height or model.default_height),
        width=int(gen.width or model.default_width),
        negative_prompt=str(gen.negative_prompt),
        batch_size=max(1, int(gen.batch_size)),
    )


def run_experiment(cfg: DictConfig, run_dir: str | Path, cwd: Path | None = None) -> RunOutcome:
    """Run ``cfg`` and write ``rows.parquet`` and ``summary.csv`` into ``run_dir``."""
    from harness.models.loader import load_model

    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HarnessError(f"The output directory {run_dir} cannot be created ({error.strerror}); "
                           "choose another with hydra.run.dir=DIR.") from None
    store = SampleStore(resolve_path(cfg.store.root, cwd), verify=cfg.store.verify)
    store.clean_staging()

    prompt_set = build_prompt_set(cfg)
    prompt_set.save(run_dir / "prompts.json")
    method_class = METHODS.get(cfg.method.name)
    model = load_model(cfg.model)
    settings = generation_settings(cfg, model)
    method: Method = method_class(cfg.method, model, settings)
    if cfg.smoke and hasattr(method, "reduce_for_smoke"):
        method.reduce_for_smoke()
    # Metrics and baselines are built before generating so a bad option or missing weight
    # file stops the run at once, not after the samples.
    metric_cfg = OmegaConf.to_container(cfg.metric, resolve=True)
    build_metrics(metric_cfg)
    baselines = build_baselines(OmegaConf.to_container(cfg.baseline, resolve=True), model)

    samples, keys, generated, reused = generate_all(method, prompt_set, cfg.seed, settings.batch_size, store)
    if cfg.figures and hasattr(method, "save_figures"):
        method.save_figures(run_dir, prompt_set.records, samples)

    container = OmegaConf.to_container(cfg, resolve=True)
    for key in ("store", "print_summary", "figures", "smoke_overrides"):
        container.pop(key, None)
    provenance = {"git_sha": git_sha(), "config_hash": config_hash(container),
                  "versions": library_versions(), "run_dir": str(run_dir)}
    identity = {
        "experiment": cfg.experiment,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "split": cfg.dataset.split,
        "method": cfg.method.name,
        "seed": int(cfg.seed),
    }
    generation_hp = {**settings.as_key(), "scheduler": cfg.model.scheduler or "default"}
    frames = [evaluate(prompt_set, samples, build_metrics(metric_cfg), identity,
                       flatten_hparams({**method.params(), **generation_hp}), provenance, keys=keys)]
    all_prediction_keys: dict[str, dict[str, str]] = {}
    for baseline in baselines:
        prediction_keys: dict[str, str] = {}
        all_prediction_keys[baseline.name] = prediction_keys
        predictions = predict_all(baseline, prompt_set, samples, keys, store, out_keys=prediction_keys)
        frames.append(evaluate(prompt_set, predictions, build_metrics(metric_cfg),
                               {**identity, "method": baseline.name},
                               flatten_hparams({**baseline.params(), **generation_hp}), provenance,
                               keys=prediction_keys))
    rows = pd.concat(frames, ignore_index=True)
    _write_sample_keys(run_dir, {cfg.method.name: keys, **all_prediction_keys})
    rows_path, summary_path = write_rows(rows, run_dir)
    log.info("generated %d sample(s), reused %d from %s", generated, reused, store.root)
    log.info("rows: %s; summary: %s", rows_path, summary_path)
    return RunOutcome(rows, run_dir, generated, reused)


def _write_sample_keys(run_dir: Path, keys: dict[str, dict[str, str]]) -> None:
    """``sample_keys.json``: method -> record id -> content key of its sample in the store (what
    ``harness report`` shows, also for metrics that give no per-sample rows)."""
    temporary = run_dir / ".sample_keys.json.tmp"
    temporary.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
    temporary.replace(run_dir / "sample_keys.json")


def evaluate(prompt_set: PromptSet, samples: dict[str, Sample], metrics: list, identity: dict[str, Any],
             hparams: dict[str, Any], provenance: dict[str, Any], keys: dict[str, str] | None = None) -> pd.DataFrame:
    """Score one predictor's samples with every metric; its rows (per-sample rows carry
    ``sample_key``, the sample's content key in the store, when ``keys`` is given)."""
    per_sample: list[dict[str, Any]] = []
    for record in tqdm(prompt_set.records, desc=f"evaluate ({identity['method']})", unit="sample", leave=False):
        sample = samples[record.id]
        for metric in metrics:
            values = metric.process(record, sample) or {}
            if isinstance(values, dict):
                values = [{"metric": name, "value": value} for name, value in values.items()]
            for item in values:
                row = {"sample_id": record.id, "kind": metric.kind, **item}
                if keys is not None and record.id in keys:
                    row["extra"] = {**item.get("extra", {}), "sample_key": keys[record.id]}
                per_sample.append(row)
    aggregates = [result for metric in metrics for result in metric.compute()]
    return build_rows(identity, hparams, provenance, aggregates, per_sample)


def predict_all(baseline: Baseline, prompt_set: PromptSet, samples: dict[str, Sample], keys: dict[str, str],
                store: SampleStore, out_keys: dict[str, str] | None = None) -> dict[str, Sample]:
    """A baseline's prediction for every sample, cached under the sample's key + the baseline's
    (each prediction's store key goes into ``out_keys`` when given)."""
    predictions: dict[str, Sample] = {}
    # A dataset-level baseline (one fit over every sample, e.g. k-means with dataset-wide cluster
    # ids) is fitted once before predicting; its predictions are keyed by the whole sample set.
    dataset_level = getattr(baseline, "dataset_level", False)
    dataset_key = (content_key({"samples": sorted(keys[r.id] for r in prompt_set.records)})
                   if dataset_level else None)
    fitted = False
    for record in tqdm(prompt_set.records, desc=f"baseline ({baseline.name})", unit="sample"):
        spec = {"baseline": baseline.name, "version": baseline.version, "params": baseline.params(),
                "of": keys[record.id]}
        if dataset_level:
            spec["dataset"] = dataset_key
        key = content_key(spec)
        if out_keys is not None:
            out_keys[record.id] = key
        prediction = store.get(key)
        if prediction is None:
            if dataset_level and not fitted:
                baseline.fit(prompt_set.records, samples)
                fitted = True
            began = time.perf_counter()
            prediction = baseline.predict(record, samples[record.id])
            prediction.meta.setdefault("seconds", time.perf_counter() - began)
            store.put(key, prediction, spec)
        predictions[record.id] = prediction
    return predictions


def generate_all(method: Method, prompt_set: PromptSet, run_seed: int, batch_size: int,
                 store: SampleStore) -> tuple[dict[str, Sample], dict[str, str], int, int]:
    """Every record's sample (from the store when finished before, else generated and stored),
    its content key, and how many were generated and reused."""
    samples: dict[str, Sample] = {}
    keys: dict[str, str] = {}
    pending = []
    for record in prompt_set.records:
        seed = generation_seed(run_seed, record.seed)
        spec = method.sample_spec(record, seed)
        key = content_key(spec)
        keys[record.id] = key
        cached = store.get(key)
        if cached is not None:
            samples[record.id] = cached
        else:
            pending.append((record, seed, key, spec))
    reused = len(samples)
    progress = tqdm(total=len(prompt_set), initial=reused, desc=f"generate ({method.name})", unit="sample")
    with progress:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            began = time.perf_counter()
            outputs = method.run_batch([item[0] for item in batch], [item[1] for item in batch])
            elapsed = time.perf_counter() - began
            for (record, _seed, key, spec), sample in zip(batch, outputs, strict=True):
                sample.meta.setdefault("seconds", elapsed / len(batch))
                sample.meta.setdefault("record_id", record.id)
                store.put(key, sample, spec)
                samples[record.id] = sample
            progress.update(len(batch))
    return samples, keys, len(pending), reused
