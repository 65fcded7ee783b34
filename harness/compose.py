"""The one place a run config is composed: ``harness run``, :func:`harness.run.run_experiment`
callers, ``harness select``, the tests and the bench all go through :func:`compose`.

What it adds to Hydra's compose API:

- ``smoke=true`` applies the experiment's ``smoke_overrides`` (the tiny stand-ins that let an
  experiment needing real weights run here), on the command line as in the tests;
- a misspelt name or key stops with one line and the closest match: an unknown experiment,
  method, model, dataset or metric option file; a key that does not exist (``generation.stpes=4``);
  a ``+`` append to a typed node, which Hydra would otherwise accept silently
  (``+generation.stpes=4``); a metric option the metric does not take (``metric.miou.treshold``);
- the overrides the config was composed from are recorded in ``overrides``, so that
  ``selection.chosen`` (applied inside the run, :func:`apply_selected`) never overwrites a value
  the user set.

``selection.chosen`` is applied by :func:`resolve_run_config`, which
:func:`harness.run.run_experiment` calls first: the same config means the same run whoever
composed it.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from harness import REPO_ROOT
from harness.errors import ConfigError

CONFIG_DIR = REPO_ROOT / "conf"
#: Config groups whose options are files in ``conf/<group>/`` (schemas excluded from suggestions).
GROUPS = ("experiment", "model", "dataset", "method", "metric", "executor")
#: Parameters of a metric's constructor that are not options a config can set.
NOT_OPTIONS = ("self", "model", "args", "kwargs", "options")


def compose(overrides: Sequence[str] = (), config_dir: str | Path | None = None,
            return_hydra_config: bool = False) -> DictConfig:
    """The run config ``harness run`` builds from ``overrides`` (no run folder is made).

    ``smoke=true`` adds the experiment's ``smoke_overrides``; a misspelt name or key raises a
    one-line :class:`ConfigError` naming the closest match. ``selection.chosen`` is not applied
    here but by the run itself (:func:`resolve_run_config`).
    """
    overrides = list(overrides)
    cfg = _compose(overrides, config_dir, return_hydra_config)
    if cfg.get("smoke") and cfg.get("smoke_overrides"):
        overrides = with_smoke_overrides(overrides, list(cfg.smoke_overrides))
        cfg = _compose(overrides, config_dir, return_hydra_config)
    check_schema(cfg)
    with open_dict(cfg):
        cfg.overrides = [o for o in overrides if not is_hydra_override(o)]
    return cfg


def with_smoke_overrides(overrides: list[str], smoke_overrides: list[str]) -> list[str]:
    """``overrides`` with the experiment's smoke overrides placed before the user's own. A smoke
    override the user's overrides touch is left out, so the user's choice wins: the same key or
    group (``model=sd15`` over the smoke ``model=tiny_random``), a key inside it (``model.path=DIR``
    keeps the real model) or a node above it."""
    def key(text: str) -> str:
        return text.split("=", 1)[0].lstrip("+~")

    mine = {key(o) for o in overrides if not o.startswith("-")}

    def touched(smoke: str) -> bool:
        k = key(smoke)
        return any(m == k or m.startswith(k + ".") or k.startswith(m + ".") for m in mine)

    extra = [o for o in smoke_overrides if o not in overrides and not touched(o)]
    first = [o for o in overrides if o.split("=", 1)[0] == "experiment"]
    return first + extra + [o for o in overrides if o not in first]


def is_hydra_override(text: str) -> bool:
    """Whether an override sets Hydra's own config (hydra.run.dir, hydra/launcher=...)."""
    key = text.split("=", 1)[0].lstrip("+~")
    return key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/")


def _compose(overrides: list[str], config_dir: str | Path | None, return_hydra_config: bool) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from harness.config import register_configs

    root = Path(config_dir) if config_dir is not None else CONFIG_DIR
    register_configs(root)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(root.resolve()), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides,
                                 return_hydra_config=return_hydra_config)
    except HydraException as error:
        raise ConfigError(explain_hydra_error(error, overrides, root)) from None
    except Exception as error:  # OmegaConf's validation errors (a value of the wrong type)
        if type(error).__module__.startswith("omegaconf"):
            raise ConfigError(_first_lines(str(error))) from None
        raise
    finally:
        GlobalHydra.instance().clear()


def _first_lines(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    keep = [line for line in lines if not line.startswith(("full_key", "object_type", "Config search path",
                                                           "provider="))]
    return "; ".join(keep[:2]) or text.strip()


def closest(name: str, candidates: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest candidate, or a list of the candidates when none is close."""
    candidates = sorted(set(candidates))
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return f" Did you mean {close[0]!r}?"
    shown = ", ".join(candidates[:25]) + (", ..." if len(candidates) > 25 else "")
    return f" Known: {shown}." if candidates else ""


def group_options(group: str, config_dir: str | Path | None = None) -> list[str]:
    """The option files of a config group (schemas are not options)."""
    root = Path(config_dir) if config_dir is not None else CONFIG_DIR
    return sorted(p.stem for p in (root / group).glob("*.yaml"))


def explain_hydra_error(error: Exception, overrides: list[str], config_dir: Path) -> str:
    """One line for a Hydra composition error, with the closest match where there is one."""
    text = str(error)
    missing = re.search(r"Could not (?:find|load) '([\w/]+)/([^'/]+)'", text)
    if missing:
        group, name = missing.group(1), missing.group(2)
        kind = group.split("/")[-1]
        return f"{kind}={name}: no such {kind} (conf/{group}/{name}.yaml).{closest(name, group_options(group, config_dir))}"
    unknown = re.search(r"Could not (?:override|delete from config) '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        return f"{key}: no such key.{_closest_key(key, overrides, config_dir)}"
    appended = re.search(r"Could not append to config. An item is already at '([^']+)'", text)
    if appended:
        key = appended.group(1)
        return f"+{key}: the key already exists; set it without the +: {key}=VALUE."
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        return f"{_first_lines(text)}: {str(cause).strip().splitlines()[0]}"
    return _first_lines(text)


def _closest_key(key: str, overrides: list[str], config_dir: Path) -> str:
    """The closest existing key to a dotted ``key``, composing the config without that override."""
    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        cfg = _compose(others, config_dir, False)
    except ConfigError:
        return ""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    while not isinstance(node, DictConfig) and parent:  # the parent is misspelt too: suggest at the top
        parent, _, leaf = parent.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return ""
    hint = closest(leaf, [str(k) for k in node.keys()])
    return hint.replace("'", f"'{parent}." if parent else "'", 1) if hint.startswith(" Did") else hint


# -- schema checks after composition -----------------------------------------------------------

def check_schema(cfg: DictConfig) -> None:
    """Every key of a typed node is a field of its schema; every metric entry names a metric and
    only options it takes. Hydra accepts ``+key=value`` into a structured node without a word;
    this refuses it with the closest field."""
    for path, node in _typed_nodes(cfg, ""):
        schema = OmegaConf.get_type(node)
        fields = {f.name for f in dataclasses.fields(schema)}
        for key in node.keys():
            if str(key) not in fields and not (path == "" and key == "hydra"):
                where = f"{path}.{key}" if path else str(key)
                raise ConfigError(f"{where}: no such key in {schema.__name__}.{_prefixed(closest(str(key), fields), path)}")
    check_metric_options(cfg)


def _prefixed(hint: str, path: str) -> str:
    return hint.replace("'", f"'{path}.", 1) if hint.startswith(" Did") and path else hint


def _typed_nodes(node: Any, path: str):
    if isinstance(node, DictConfig):
        schema = OmegaConf.get_type(node)
        if schema is not None and dataclasses.is_dataclass(schema):
            yield path, node
        for key in node.keys():
            if OmegaConf.is_missing(node, key) or (path == "" and key == "hydra"):  # Hydra checks its own
                continue
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _typed_nodes(child, f"{path}.{key}" if path else str(key))


def check_metric_options(cfg: DictConfig) -> None:
    """The schema of the ``metric:`` and ``baseline:`` entries: each names a registered metric or
    baseline, and its options are parameters of that class (its signature is its schema)."""
    from harness.registry import BASELINES, METRICS

    for group, registry in (("metric", METRICS), ("baseline", BASELINES)):
        node = cfg.get(group)
        entries = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else {}
        for name, options in entries.items():
            try:
                target = registry.get(name)
            except KeyError:
                raise ConfigError(f"{group}.{name}: no such {group}.{closest(name, registry.names())}") from None
            accepted = _parameters(target)
            if accepted is None:
                continue
            for key in (options or {}):
                if key != "optional" and key not in accepted:
                    raise ConfigError(f"{group}.{name}.{key}: {name} takes no option {key!r}."
                                      f"{_prefixed(closest(key, [*accepted, 'optional']), f'{group}.{name}')}")


def _parameters(target: Any) -> set[str] | None:
    """Keyword options ``target`` accepts; None when it takes any (``**kwargs``)."""
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return {name for name in parameters if name not in NOT_OPTIONS}


# -- selection, applied inside the run ---------------------------------------------------------

def _override_keys(overrides: Iterable[str]) -> set[str]:
    return {str(text).split("=", 1)[0].lstrip("+~") for text in overrides}


def apply_selected(cfg: DictConfig, command_line: Iterable[str] = ()) -> DictConfig:
    """Set ``selection.chosen`` values where the key exists and the command line did not set it."""
    chosen = OmegaConf.select(cfg, "selection.chosen", default=None)
    if not chosen:
        return cfg
    overridden = _override_keys(command_line)
    for entry in chosen:
        key = str(entry["key"])
        # a value set on the command line wins (the key itself or a dotted node above it);
        # a group choice such as `method=pag` (no dot) is not a value of `method.pag_scale`
        if key in overridden or any("." in o and key.startswith(o + ".") for o in overridden):
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and leaf in node:
            value = entry["value"]
            OmegaConf.update(cfg, key, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value,
                             merge=False)
    return cfg


def resolve_run_config(cfg: DictConfig) -> DictConfig:
    """The config a run executes: ``selection.chosen`` applied (where ``cfg.overrides``, the
    overrides it was composed from, does not set the key) and the schema checked. Idempotent."""
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"a run config is a DictConfig (harness.compose.compose), got {type(cfg).__name__}.")
    cfg = apply_selected(cfg, list(cfg.get("overrides") or []))
    check_schema(cfg)
    return cfg
