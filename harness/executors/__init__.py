"""Executors: where a run's generation happens when it is not this process.

``executor=ray`` (:mod:`harness.executors.ray`) fans the shards of one experiment out as Ray
tasks. Slurm needs no executor here: Hydra's submitit launcher runs ``harness run`` once per
shard (``-m hydra/launcher=submitit_slurm shard.count=N 'shard.index=range(N)'``) and a last
``harness run`` without ``shard`` scores (README, "Running at paper scale").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import ConfigError


def run_shards(cfg: Any, executor: Any, cwd: Path | None,
               generate_part: Callable[[Any, Path | None, int, int], tuple[int, int]]) -> int:
    """Generate every shard of ``cfg`` with ``executor``, each shard by ``generate_part(cfg, cwd,
    index, count)`` (the runner passes its own, so executors never import the runner); returns
    how many samples were generated."""
    name = executor.get("name", "local")
    if name == "ray":
        from harness.executors.ray import run_shards_on_ray

        return run_shards_on_ray(cfg, executor, cwd, generate_part)
    raise ConfigError(f"executor={name!r} is not known; use executor=local or executor=ray.")
