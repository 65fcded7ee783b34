"""One experiment run, as a straight line:

    config -> prompt set -> (shard) -> model -> method -> cached samples -> metrics -> tidy rows

Samples are generated (or taken from the cache) first and evaluated afterwards, so a failure
while scoring never costs a generated sample, and a killed run resumes where it stopped.

Nothing holds all samples of a run. Generation writes each finished batch to the store on a
background thread (:class:`~harness.store.samples.SampleWriter`) while the next batch is
generated; scoring then streams the samples back from the store one at a time into the
metrics (and the baselines), so memory is bounded by a few batches, the metrics' running state
and the model, not by the number of samples.

Sharding (``shard.index=I shard.count=N``) keeps every N-th record of the prompt set, starting
at record I (positions in the prompt set, so the split is the same for every method and
paired comparisons stay paired); a shard run only generates its part into the shared store,
with the per-sample baselines' predictions of it.
The run without ``shard`` then generates nothing and scores the whole set. ``executor=ray``
fans the shards out as Ray tasks (:mod:`harness.executors`) and scores in the driver.

Per-sample arrays (heat maps, difference maps) are kept in the store by default, so a sample can
be scored again with other metrics or thresholds without regenerating it. ``store.arrays=drop``
removes them once the run has scored its samples (images and metadata stay, so FID, reports
and reuse of images still work); a later run that needs them regenerates those samples. Shard
runs never drop: the scoring run does.

Two functions are the hooks for what a sample carries: :func:`plan_samples` builds every
record's spec and content key (the one place a spec is made) and :func:`commit_sample` fills
a generated sample's metadata and hands it to the store (the one place a sample is committed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from harness.baselines.base import Baseline, build_baselines
from harness.compose import resolve_run_config
from harness.data.prompts import PromptRecord, PromptSet, validate_prompt_set
from harness.errors import ConfigError, HarnessError
from harness.methods.base import GenerationSettings, Method, generation_seed
from harness.metrics.base import build_metrics
from harness.registry import DATASETS, METHODS
from harness.store.identity import stamp_provenance
from harness.store.rows import (
    ROW_COLUMNS,
    build_rows,
    config_hash,
    flatten_hparams,
    git_sha,
    library_versions,
    write_rows,
)
from harness.store.samples import LazySamples, Sample, SampleStore, SampleWriter, content_key
from harness.validation import check_config, check_store, validate_run

log = logging.getLogger("harness.run")

#: In smoke mode every experiment runs on at most this many records with at most this many steps.
SMOKE_RECORDS = 2
SMOKE_STEPS = 2
#: Config keys that say where or how a run executes, not what it measures: left out of the
#: config hash, so a sharded, Ray or Slurm run gives the same rows as a one-process run.
EXECUTION_KEYS = ("store", "print_summary", "figures", "smoke_overrides", "shard", "executor", "overrides")
#: Batches waiting for the writer thread before generation blocks (bounds memory).
WRITER_PENDING_BATCHES = 2
#: Per-sample rows kept as dicts before they are packed into a data frame.
ROWS_PER_FRAME = 512


@dataclass
class RunOutcome:
    rows: pd.DataFrame
    run_dir: Path
    generated: int
    reused: int
    #: ``"I/N"`` for a shard run (which writes shard.json and no rows), else None
    shard: str | None = None
    #: the sample store the run wrote to
    store: Path | None = None


@dataclass
class PlannedSample:
    """One record's sample as the run plans it: its seed, spec and content key."""

    record: PromptRecord
    seed: int
    key: str
    spec: dict[str, Any] | None  #: None once the sample is in the store (not kept for the whole run)


@dataclass
class _Predictor:
    """The method or one baseline, with its metrics and the rows it has produced so far."""

    identity: dict[str, Any]
    hparams: dict[str, Any]
    metrics: list
    baseline: Baseline | None = None
    dataset_key: str | None = None
    per_sample: list[dict[str, Any]] = field(default_factory=list)
    #: per-sample rows already turned into data frames (columnar: far smaller than dicts)
    frames: list[pd.DataFrame] = field(default_factory=list)

    def flush(self, provenance: dict[str, Any]) -> None:
        """Turn the per-sample rows gathered so far into a frame (every ROWS_PER_FRAME rows)."""
        if self.per_sample:
            self.frames.append(build_rows(self.identity, self.hparams, provenance, [], self.per_sample))
            self.per_sample = []

    def rows(self, provenance: dict[str, Any]) -> pd.DataFrame:
        """Aggregates (first) and per-sample rows, in the column order of :func:`build_rows`."""
        self.flush(provenance)
        aggregates = build_rows(self.identity, self.hparams, provenance,
                                [result for metric in self.metrics for result in metric.results()], [])
        frames = [frame for frame in [aggregates, *self.frames] if not frame.empty]
        if not frames:
            return aggregates
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        hp = sorted(c for c in frame.columns if c.startswith("hp."))
        return frame[ROW_COLUMNS + hp + [c for c in frame.columns if c not in ROW_COLUMNS and c not in hp]]


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


def shard_records(records: list[PromptRecord], index: int, count: int) -> list[PromptRecord]:
    """Shard ``index`` of ``count``: records at positions index, index + count, ... (round robin).

    A deterministic partition of the prompt set: the shards are disjoint, cover every record, and
    are the same for every method, model and seed; they differ in size by at most one record.
    """
    count, index = int(count), int(index)
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard.index={index} shard.count={count}: need count >= 1 and 0 <= index < count.")
    return records[index::count]


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


def _shard_of(cfg: DictConfig) -> tuple[int, int]:
    shard = cfg.get("shard") or {}
    return int(shard.get("index", 0)), int(shard.get("count", 1))


def _make_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HarnessError(f"The output directory {run_dir} cannot be created ({error.strerror}); "
                           "choose another with hydra.run.dir=DIR.") from None
    return run_dir


def build_method(cfg: DictConfig, prompt_set: PromptSet) -> tuple[Method, GenerationSettings]:
    """Load the model and build the configured method (smoke reductions applied); every input
    (settings, sizes, the prompts of ``prompt_set``) is validated before anything is generated."""
    from harness.models.loader import load_model

    method_class = METHODS.get(cfg.method.name)
    model = load_model(cfg.model)
    settings = generation_settings(cfg, model)
    validate_run(cfg, model, settings, prompt_set)  # bad input stops here: nothing generated or stored
    method: Method = method_class(cfg.method, model, settings)
    if cfg.smoke and hasattr(method, "reduce_for_smoke"):
        method.reduce_for_smoke()
    return method, settings


def generate_part(cfg: DictConfig, cwd: Path | None, index: int, count: int) -> tuple[int, int]:
    """Generate shard ``index`` of ``count`` of ``cfg``'s prompt set into its store (what one
    shard job or one Ray worker does): (generated, reused). Loads the model once."""
    cfg = resolve_run_config(cfg)
    store = SampleStore(resolve_path(cfg.store.root, cwd), verify=cfg.store.verify)
    prompt_set = build_prompt_set(cfg)
    generated, reused, _predicted = _generate_shard(cfg, store, prompt_set, index, count)
    return generated, reused


def _generate_shard(cfg: DictConfig, store: SampleStore, prompt_set: PromptSet, index: int,
                    count: int) -> tuple[int, int, int]:
    """Shard ``index`` of ``count``: its samples, then the per-sample baselines' predictions of
    them, into the store; (generated, reused, predictions made)."""
    records = shard_records(prompt_set.records, index, count)
    method, settings = build_method(cfg, prompt_set)
    plan = plan_samples(method, records, cfg.seed)
    generated, reused = generate_missing(method, plan, store, settings.batch_size)
    baselines = build_baselines(OmegaConf.to_container(cfg.baseline, resolve=True), method.model)
    return generated, reused, predict_part(baselines, plan, store)


def predict_part(baselines: list[Baseline], plan: list[PlannedSample], store: SampleStore) -> int:
    """The predictions of every per-sample baseline for the planned samples, made and stored
    where missing (a shard does this, so the scoring run only reads them); returns how many
    were made. Dataset-level baselines (one fit over the whole set) and skipped ones are left
    to the scoring run."""
    per_sample = [b for b in baselines if not b.skipped_reason and not getattr(b, "dataset_level", False)]
    made = 0
    if not per_sample:
        return made
    with SampleWriter(store) as writer:
        for planned, sample in tqdm(_stream(plan, store), total=len(plan), desc="baselines", unit="sample",
                                    leave=False):
            for baseline in per_sample:
                key, spec = prediction_key(baseline, planned.key, None)
                if not store.check(key):
                    predict_one(baseline, planned.record, sample, key, spec, store, writer)
                    made += 1
    return made


def run_experiment(cfg: DictConfig, run_dir: str | Path, cwd: Path | None = None) -> RunOutcome:
    """Run ``cfg`` and write ``rows.parquet`` and ``summary.csv`` into ``run_dir``.

    ``cfg`` is what :func:`harness.compose.compose` returns; the experiment's ``selection.chosen``
    values are applied here (not by the caller), so the CLI, the Python API, the tests and the
    bench run the same config.

    With ``shard.count > 1`` only that shard's samples are generated (no rows: the unsharded
    run scores the whole set); with ``executor=ray`` the shards are generated by Ray workers
    first and this process scores.
    """
    cfg = resolve_run_config(cfg)  # selection.chosen applied here, whoever composed the config
    check_config(cfg)
    check_store(cfg.store)
    run_dir = _make_run_dir(run_dir)
    store = SampleStore(resolve_path(cfg.store.root, cwd), verify=cfg.store.verify)
    store.clean_staging()
    prompt_set = build_prompt_set(cfg)
    index, count = _shard_of(cfg)
    if count > 1:
        return _run_shard(cfg, run_dir, store, prompt_set, index, count)
    prompt_set.save(run_dir / "prompts.json")
    # Metrics and baselines are checked before generating so a bad option or missing weight
    # file stops the run at once, not after the samples.
    metrics = build_metrics(OmegaConf.to_container(cfg.metric, resolve=True))

    remote_generated = 0
    executor = cfg.get("executor") or {}
    if executor.get("name", "local") != "local":
        from harness.executors import run_shards

        remote_generated = run_shards(cfg, executor, cwd, generate_part)

    method, settings = build_method(cfg, prompt_set)
    baselines = build_baselines(OmegaConf.to_container(cfg.baseline, resolve=True), method.model)
    plan = plan_samples(method, prompt_set.records, cfg.seed)
    generated, reused = generate_missing(method, plan, store, settings.batch_size)
    generated, reused = generated + remote_generated, reused - remote_generated

    keys = {item.record.id: item.key for item in plan}

    container = OmegaConf.to_container(cfg, resolve=True)
    for key in EXECUTION_KEYS:
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
    # One built metric per entry; the method and each baseline accumulate in their own fresh copy,
    # which shares what the metric loaded (Metric.fresh).
    predictors = [_Predictor(identity, flatten_hparams({**method.params(), **generation_hp}),
                             [metric.fresh() for metric in metrics])]
    skipped: list[pd.DataFrame] = []
    for baseline in baselines:
        if baseline.skipped_reason:  # an optional baseline that cannot run: NaN rows with the reason
            skipped.append(baseline.skipped_rows(metrics, identity,
                                                 flatten_hparams({**baseline.params(), **generation_hp}), provenance))
            continue
        predictors.append(_Predictor({**identity, "method": baseline.name},
                                     flatten_hparams({**baseline.params(), **generation_hp}),
                                     [metric.fresh() for metric in metrics], baseline,
                                     dataset_key(baseline, plan)))
    score_stream(plan, store, predictors, provenance)
    rows = pd.concat([predictor.rows(provenance) for predictor in predictors] + skipped, ignore_index=True)
    sample_keys = _sample_keys(keys, predictors)
    _write_sample_keys(run_dir, sample_keys)
    rows_path, summary_path = write_rows(rows, run_dir)
    if cfg.figures:  # the one figure hook, for the method and each of its metrics (Metric.save_figures)
        samples = LazySamples(store, keys)  # read-only over the store: hooks read one sample at a time
        method_rows = rows[rows["method"] == cfg.method.name]
        for owner in [method, *predictors[0].metrics]:
            owner.save_figures(run_dir, prompt_set.records, samples, method_rows)
    if cfg.store.get("arrays", "keep") == "drop":
        drop_arrays(store, sample_keys)
    log.info("generated %d sample(s), reused %d from %s", generated, reused, store.root)
    log.info("rows: %s; summary: %s", rows_path, summary_path)
    return RunOutcome(rows, run_dir, generated, reused, store=store.root)


def _sample_keys(keys: dict[str, str], predictors: list[_Predictor]) -> dict[str, dict[str, str]]:
    """Method (or baseline) -> record id -> store key of its sample or prediction."""
    document = {}
    for predictor in predictors:
        if predictor.baseline is None:
            document[predictor.identity["method"]] = dict(keys)
        else:
            document[predictor.identity["method"]] = {
                record_id: prediction_key(predictor.baseline, key, predictor.dataset_key)[0]
                for record_id, key in keys.items()}
    return document


def drop_arrays(store: SampleStore, sample_keys: dict[str, dict[str, str]]) -> tuple[int, int]:
    """``store.arrays=drop``: remove the per-sample arrays of every sample and prediction the run
    scored (images and metadata stay); (entries with arrays removed, bytes freed)."""
    entries = freed = 0
    for keys in sample_keys.values():
        for key in keys.values():
            size = store.drop_arrays(key)
            entries += size > 0
            freed += size
    log.info("store.arrays=drop: removed the arrays of %d entr%s (%.1f MB); a run that needs them "
             "regenerates those samples", entries, "y" if entries == 1 else "ies", freed / 1e6)
    return entries, freed


def _write_sample_keys(run_dir: Path, document: dict[str, dict[str, str]]) -> None:
    """``sample_keys.json``: method -> record id -> store key of its sample or prediction (what
    ``harness report`` shows, also where no metric gives per-sample rows)."""
    import json

    temporary = run_dir / ".sample_keys.json.tmp"
    temporary.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    temporary.replace(run_dir / "sample_keys.json")


def _run_shard(cfg: DictConfig, run_dir: Path, store: SampleStore, prompt_set: PromptSet,
               index: int, count: int) -> RunOutcome:
    import json

    records = shard_records(prompt_set.records, index, count)
    generated, reused, predicted = _generate_shard(cfg, store, prompt_set, index, count)
    document = {"shard": {"index": index, "count": count}, "records": len(records), "of": len(prompt_set),
                "generated": generated, "reused": reused, "baseline_predictions_made": predicted,
                "store": str(store.root)}
    (run_dir / "shard.json").write_text(json.dumps(document, indent=1) + "\n")
    log.info("shard %d/%d: %d record(s) of %d; generated %d, reused %d, %d baseline prediction(s) made; score "
             "with the same command without shard.*", index, count, len(records), len(prompt_set), generated,
             reused, predicted)
    return RunOutcome(pd.DataFrame(), run_dir, generated, reused, shard=f"{index}/{count}", store=store.root)


def plan_samples(method: Method, records: list[PromptRecord], run_seed: int) -> list[PlannedSample]:
    """Every record's seed, spec and content key (the one place a sample's spec is built)."""
    plan = []
    for record in records:
        seed = generation_seed(run_seed, record.seed)
        spec = method.sample_spec(record, seed)
        plan.append(PlannedSample(record, seed, content_key(spec), spec))
    return plan


def commit_sample(writer: SampleWriter, planned: PlannedSample, sample: Sample, seconds: float) -> None:
    """Fill a generated sample's run metadata and hand it to the store's writer (the one place
    a generated sample is committed)."""
    sample.meta.setdefault("seconds", seconds)
    sample.meta.setdefault("record_id", planned.record.id)
    stamp_provenance(sample.meta)
    writer.submit(planned.key, sample, planned.spec)


def generate_missing(method: Method, plan: list[PlannedSample], store: SampleStore,
                     batch_size: int) -> tuple[int, int]:
    """Generate every planned sample the store lacks, in batches of ``batch_size``; (generated, reused).

    Finished batches are written by a background thread while the next one is generated; at
    most :data:`WRITER_PENDING_BATCHES` batches wait for it, so memory does not grow with the
    run. A killed run loses only the samples not yet renamed into the store.
    """
    pending = []
    for item in plan:
        if store.check(item.key):
            item.spec = None  # only a sample still to generate needs its spec
        else:
            pending.append(item)
    reused = len(plan) - len(pending)
    progress = tqdm(total=len(plan), initial=reused, desc=f"generate ({method.name})", unit="sample")
    with progress, SampleWriter(store, max_pending=WRITER_PENDING_BATCHES * batch_size) as writer:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            began = time.perf_counter()
            outputs = method.run_batch([item.record for item in batch], [item.seed for item in batch])
            elapsed = time.perf_counter() - began
            for planned, sample in zip(batch, outputs, strict=True):
                commit_sample(writer, planned, sample, elapsed / len(batch))
                planned.spec = None  # written with the sample; not kept for the rest of the run
            progress.update(len(batch))
    return len(pending), reused


def dataset_key(baseline: Baseline, plan: list[PlannedSample]) -> str | None:
    """A dataset-level baseline's predictions depend on the whole sample set: its key."""
    if not getattr(baseline, "dataset_level", False):
        return None
    return content_key({"samples": sorted(item.key for item in plan)})


def prediction_key(baseline: Baseline, sample_key: str, dataset: str | None) -> tuple[str, dict[str, Any]]:
    spec = {"baseline": baseline.name, "version": baseline.version, "params": baseline.params(), "of": sample_key}
    if dataset is not None:
        spec["dataset"] = dataset
    return content_key(spec), spec


def predict_one(baseline: Baseline, record: PromptRecord, sample: Sample, key: str, spec: dict[str, Any],
                store: SampleStore, writer: SampleWriter | None = None) -> Sample:
    """The baseline's prediction for one sample: from the store, else predicted and stored."""
    prediction = store.get(key)
    if prediction is None or prediction.dropped_arrays:  # absent, or its arrays were dropped: predict again
        began = time.perf_counter()
        prediction = baseline.predict(record, sample)
        prediction.meta.setdefault("seconds", time.perf_counter() - began)
        stamp_provenance(prediction.meta)
        if writer is None:
            store.put(key, prediction, spec)
        else:
            writer.submit(key, prediction, spec)
    return prediction


def predict_all(baseline: Baseline, prompt_set: PromptSet, samples: Mapping[str, Sample], keys: dict[str, str],
                store: SampleStore) -> dict[str, Sample]:
    """Every record's prediction (a helper for tests and scripts; the runner streams instead)."""
    plan = [PlannedSample(r, 0, keys[r.id], {}) for r in prompt_set.records]
    data_key = dataset_key(baseline, plan)
    specs = {r.id: prediction_key(baseline, keys[r.id], data_key) for r in prompt_set.records}
    if data_key is not None and not all(store.has(specs[r.id][0]) for r in prompt_set.records):
        baseline.fit(prompt_set.records, samples)
    return {r.id: predict_one(baseline, r, samples[r.id], *specs[r.id], store) for r in prompt_set.records}


def _feed(predictor: _Predictor, record: PromptRecord, key: str, sample: Sample) -> None:
    for metric in predictor.metrics:
        values = metric.process(record, sample) or {}
        if isinstance(values, dict):
            values = [{"metric": name, "value": value} for name, value in values.items()]
        for item in values:
            extra = {**item.get("extra", {}), "sample_key": key}
            predictor.per_sample.append({"sample_id": record.id, "kind": metric.kind,
                                         "provenance": sample.meta.get("provenance"), **item, "extra": extra})


def _stream(plan: list[PlannedSample], store: SampleStore) -> Iterator[tuple[PlannedSample, Sample]]:
    for planned, (key, sample) in zip(plan, store.iter_samples(item.key for item in plan), strict=True):
        if sample.dropped_arrays:  # checked when planned: another run sharing the store dropped them since
            raise HarnessError(
                f"The arrays ({', '.join(sample.dropped_arrays)}) of sample {key[:12]} (record {planned.record.id}) "
                f"were removed from the store {store.root} while this run read it, by another run with "
                "store.arrays=drop; run the experiment again to regenerate them.")
        yield planned, sample


def score_stream(plan: list[PlannedSample], store: SampleStore, predictors: list[_Predictor],
                 provenance: dict[str, Any]) -> None:
    """Feed every sample, read back from the store one at a time, to the method's metrics and to
    each baseline (whose prediction is read from the store or made, stored and scored).

    Per-sample rows carry ``sample_key``: the store key of the scored sample (the method's
    sample, or the baseline's prediction), so a report can find its image.
    """
    method_predictor, baseline_predictors = predictors[0], predictors[1:]
    keys = {item.record.id: item.key for item in plan}
    specs: dict[int, dict[str, tuple[str, dict[str, Any]]]] = {}
    for number, predictor in enumerate(baseline_predictors):
        baseline = predictor.baseline
        specs[number] = {item.record.id: prediction_key(baseline, item.key, predictor.dataset_key) for item in plan}
        if predictor.dataset_key is not None and not all(store.has(k) for k, _ in specs[number].values()):
            # One fit over every sample, read lazily from the store (see the baseline's fit).
            baseline.fit([item.record for item in plan], LazySamples(store, keys))
    with SampleWriter(store) as writer:
        for planned, sample in tqdm(_stream(plan, store), total=len(plan), desc="evaluate", unit="sample", leave=False):
            record = planned.record
            _feed(method_predictor, record, planned.key, sample)
            for number, predictor in enumerate(baseline_predictors):
                key, spec = specs[number][record.id]
                prediction = predict_one(predictor.baseline, record, sample, key, spec, store, writer)
                _feed(predictor, record, key, prediction)
            for predictor in predictors:
                if len(predictor.per_sample) >= ROWS_PER_FRAME:
                    predictor.flush(provenance)
