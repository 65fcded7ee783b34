"""Structured config schemas, registered in Hydra's ConfigStore.

Every group option in ``conf/`` extends one of these dataclasses (``defaults: [<schema>]``), so
a misspelt key or a value of the wrong type fails when the config is composed, with Hydra's
message naming the key, before any model is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    """Which diffusion pipeline to load and where it runs."""

    name: str = MISSING  #: registry name: tiny_random, toy, sd15, sd2_base, sd21_base, sdxl_base
    model_id: str | None = None  #: Hugging Face id looked up in the local cache (offline)
    path: str | None = None  #: a local pipeline folder (save_pretrained layout); wins over model_id
    device: str = "auto"  #: auto | cpu | cuda | cuda:N
    dtype: str = "auto"  #: auto | float32 | float16 | bfloat16
    scheduler: str | None = None  #: None keeps the model folder's own scheduler; else ddim, dpm_solver, ...
    weights_seed: int = 0  #: seed of the random weights (tiny_random only)
    height: int | None = None  #: default image height (None: the model's native size)
    width: int | None = None  #: default image width (None: the model's native size)
    architecture: dict[str, Any] = field(default_factory=dict)  #: tiny_random architecture overrides


@dataclass
class DatasetConfig:
    """A prompt set or image set."""

    name: str = MISSING  #: registry name
    path: str | None = None  #: input file or folder the builder reads (captions json, manifest, images)
    split: str = "test"
    size: int | None = None  #: number of samples to keep (None: all)
    seed: int = 0  #: seed for sampling the set (not for generation)
    params: dict[str, Any] = field(default_factory=dict)  #: builder-specific options


@dataclass
class GenerationConfig:
    """How images are sampled; part of every sample's content address."""

    steps: int = 30
    guidance_scale: float = 7.5
    height: int | None = None  #: None: the model's default
    width: int | None = None
    negative_prompt: str = ""
    batch_size: int = 1


@dataclass
class MethodConfig:
    """Base schema of every method; subclasses add the method's own hyperparameters."""

    name: str = MISSING


@dataclass
class GenerateMethodConfig(MethodConfig):
    """Plain text-to-image generation: the trivial method of the smoke experiment."""

    name: str = "generate"


@dataclass
class StoreConfig:
    """Where finished samples are cached (shared by all runs, keyed by content)."""

    root: str = "results/cache"
    verify: bool = True  #: check file checksums when a cached sample is reused
    #: per-sample arrays (heat maps, difference maps): ``keep`` them in the store, or ``drop``
    #: them once the run has scored its samples (images stay; a later run that needs the
    #: arrays regenerates those samples)
    arrays: str = "keep"


@dataclass
class ShardConfig:
    """Which part of the prompt set this run generates (``shard.index=I shard.count=N``).

    Shard I of N is every N-th record starting at position I, the same for every method; a run
    with ``count > 1`` only generates its part into the store (no rows); the run without
    ``shard`` then reuses every sample and scores the whole set.
    """

    index: int = 0
    count: int = 1


@dataclass
class ExecutorConfig:
    """Where generation runs: ``local`` (this process) or ``ray`` (shards as Ray tasks, one
    model load per worker, scored afterwards in this process)."""

    name: str = "local"  #: local | ray
    num_workers: int = 1  #: shards = Ray tasks run side by side
    gpus_per_worker: float = 0.0  #: Ray num_gpus of each task (1 on a GPU node)
    cpus_per_worker: float = 1.0  #: Ray num_cpus of each task
    threads_per_worker: int | None = None  #: torch threads in each worker (None: cpus_per_worker)
    address: str | None = None  #: an existing cluster ("auto", "ray://host:10001"); None starts a local one
    object_store_memory: int | None = 200_000_000  #: bytes, local instance only (samples go to the store, not Ray)


@dataclass
class RunConfig:
    """The top-level schema of ``harness run``."""

    experiment: str = "default"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    #: metric name -> options; each metric validates its own options when built
    metric: dict[str, Any] = field(default_factory=dict)
    #: baseline name -> options: predictors scored on the same samples with the same metrics
    baseline: dict[str, Any] = field(default_factory=dict)
    #: save per-sample figures (overlays, segmentations) when the method offers them
    figures: bool = True
    store: StoreConfig = field(default_factory=StoreConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    #: reduced mode for tests and smoke checks: fewer samples and steps, same code path
    smoke: bool = False
    #: overrides that turn this experiment into its smoke version on this machine (e.g. a
    #: tiny stand-in for real weights); applied under `smoke=true` (harness.compose)
    smoke_overrides: list[str] = field(default_factory=list)
    #: print the summary table at the end
    print_summary: bool = True
    #: how the experiment's tuned hyperparameters are chosen on dev, and the chosen values
    #: (``harness select``; see harness/selection.py)
    selection: dict[str, Any] = field(default_factory=dict)
    #: the overrides this config was composed from (written by :func:`harness.compose.compose`
    #: and ``harness run``): ``selection.chosen`` never overwrites a key they set
    overrides: list[str] = field(default_factory=list)
    #: per-guider dev choice and the test comparison of ``harness guidance-study`` (harness/guidance_study.py)
    guider_study: dict[str, Any] = field(default_factory=dict)


def register_configs(config_dir: str | Path | None = None) -> None:
    """Register the schemas so ``conf/`` files can extend them.

    Three sources, all kept: the built-in schemas above; dataclasses declared with
    :func:`add_schema` by the torch-free modules under ``harness/schemas/`` (imported here); and,
    for a ``conf/method`` or ``conf/dataset`` option whose ``defaults`` name a ``<x>_schema``
    that none of these declares, a schema inferred from that file by :func:`infer_schema` (the
    config file is then its own schema: a misspelt key or a value of the wrong type still fails
    at compose time).
    """
    import harness.schemas

    for module in pkgutil.iter_modules(harness.schemas.__path__):
        importlib.import_module(f"harness.schemas.{module.name}")
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="method", name="method_schema", node=MethodConfig)
    cs.store(group="method", name="generate_schema", node=GenerateMethodConfig)
    cs.store(group="executor", name="executor_schema", node=ExecutorConfig)
    for group, name, node in _EXTRA_SCHEMAS:
        cs.store(group=group, name=name, node=node)
    for group, name, node in inferred_schemas(config_dir):
        cs.store(group=group, name=name, node=node)


#: Modules under harness/schemas append (group, name, dataclass) here when imported.
_EXTRA_SCHEMAS: list[tuple[str, str, type]] = []

#: Groups whose options may carry an inferred schema, and the base schema each extends.
INFERRED_GROUPS: dict[str, type] = {"method": MethodConfig, "dataset": DatasetConfig}


def add_schema(group: str, name: str, node: type) -> type:
    """Declare an extra schema (a method's hyperparameters, say) for :func:`register_configs`."""
    _EXTRA_SCHEMAS.append((group, name, node))
    return node


def _declared(group: str, name: str) -> bool:
    repo = ConfigStore.instance().repo.get(group, {})
    builtin = {("method", "method_schema"), ("method", "generate_schema"), ("dataset", "dataset_schema")}
    return (group, name) in builtin or f"{name}.yaml" in repo or any(
        g == group and n == name for g, n, _ in _EXTRA_SCHEMAS)


def inferred_schemas(config_dir: str | Path | None = None) -> list[tuple[str, str, type]]:
    """(group, schema name, dataclass) for every option of :data:`INFERRED_GROUPS` whose schema is not declared."""
    import yaml

    from harness import REPO_ROOT

    root = Path(config_dir) if config_dir is not None else REPO_ROOT / "conf"
    found = []
    for group, base in INFERRED_GROUPS.items():
        for file in sorted((root / group).glob("*.yaml")):
            data = yaml.safe_load(file.read_text()) or {}
            if not isinstance(data, dict):
                continue
            for entry in data.get("defaults") or []:
                if isinstance(entry, str) and entry.endswith("_schema") and not _declared(group, entry):
                    found.append((group, entry, infer_schema(entry, base, data, file)))
    return found


def infer_schema(schema_name: str, base: type, values: dict[str, Any], source: Path | str = "") -> type:
    """A dataclass extending ``base`` with one field per key of ``values`` (the option's defaults).

    Each field's type is its default's (bool, int, float, str, list, dict; ``null`` accepts any
    value), so overrides are type-checked and unknown keys refused, like a hand-written schema.
    """
    from dataclasses import make_dataclass

    inherited = {f.name for f in dataclasses.fields(base)}
    fields = []
    for key, value in values.items():
        if key == "defaults" or key in inherited:
            continue
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"{source}: key {key!r} is not a valid option name")
        if isinstance(value, bool):
            kind: Any = bool
        elif isinstance(value, int):
            kind = int
        elif isinstance(value, float):
            kind = float
        elif isinstance(value, str):
            kind = str
        elif isinstance(value, list):
            kind = list[Any]
        elif isinstance(value, dict):
            kind = dict[str, Any]
        else:
            kind = Any
        if isinstance(value, (list, dict)):
            fields.append((key, kind, field(default_factory=lambda v=value: copy.deepcopy(v))))
        else:
            fields.append((key, kind, field(default=value)))
    class_name = "".join(part.capitalize() for part in schema_name.split("_")) + "Inferred"
    return make_dataclass(class_name, fields, bases=(base,))
