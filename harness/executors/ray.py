"""``executor=ray``: the shards of one experiment as Ray tasks, then scoring in the driver.

Each of ``executor.num_workers`` tasks runs the runner's ``generate_part`` (given by
:func:`harness.run.run_experiment`: executors sit beside the runner and never import it) on shard I of N
(N = num_workers): it loads the model once and generates its records, and the per-sample
baselines' predictions of them, into the shared store (the store is the only channel: no
image passes through Ray's object store). The driver waits
for all tasks, then runs the experiment as usual and finds every sample in the store.

``executor.address`` joins an existing cluster (``auto`` on a cluster node, or
``ray://HEAD:10001``); every node must see the same ``store.root`` (a shared file system) and
have the harness installed. Without an address a local Ray instance is started for the run
and shut down afterwards (one already started in this process is used as is).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from harness import REPO_ROOT
from harness.errors import ConfigError, HarnessError

log = logging.getLogger(__name__)


#: (cfg, cwd, shard index, shard count) -> (generated, reused): what one worker runs
GeneratePart = Callable[[Any, Path | None, int, int], tuple[int, int]]


def _shard_task(generate_part: GeneratePart, container: dict[str, Any], cwd: str | None, index: int, count: int,
                threads: int) -> tuple[int, int]:
    """One Ray task: generate shard ``index`` of ``count``; (generated, reused)."""
    import torch

    from harness.config import register_configs

    register_configs()
    torch.set_num_threads(max(1, threads))
    cfg = OmegaConf.create(container)
    return generate_part(cfg, Path(cwd) if cwd else None, index, count)


def run_shards_on_ray(cfg: Any, executor: Any, cwd: Path | None, generate_part: GeneratePart) -> int:
    """Generate every shard of ``cfg`` as Ray tasks that each call ``generate_part``; returns how
    many samples were generated."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor=ray needs Ray: pip install 'harness[scale]' (or pip install ray).") from None
    workers = int(executor.get("num_workers", 1))
    if workers < 1:
        raise ConfigError(f"executor.num_workers must be >= 1, got {workers}.")
    cpus = float(executor.get("cpus_per_worker", 1.0))
    gpus = float(executor.get("gpus_per_worker", 0.0))
    threads = int(executor.get("threads_per_worker") or max(1, round(cpus)))
    started_here = False
    if not ray.is_initialized():
        address = executor.get("address")
        # Workers import the same harness as this process (a checkout on PYTHONPATH included).
        python_path = os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)
        options: dict[str, Any] = {"runtime_env": {"env_vars": {"PYTHONPATH": python_path}},
                                   "include_dashboard": False, "log_to_driver": True}
        if address:
            options["address"] = address
        else:
            options["num_cpus"] = max(int(os.cpu_count() or 1), int(workers * cpus))
            if executor.get("object_store_memory"):
                options["object_store_memory"] = int(executor.object_store_memory)
        ray.init(**options)
        started_here = True
    container = OmegaConf.to_container(cfg, resolve=True)
    container["executor"] = {"name": "local"}
    container["shard"] = {"index": 0, "count": 1}
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_shard_task)
    try:
        refs = [task.remote(generate_part, container, str(cwd) if cwd else None, index, workers, threads) for index in range(workers)]
        try:
            results = ray.get(refs)
        except ray.exceptions.RayTaskError as error:
            cause = error.as_instanceof_cause()
            if isinstance(cause, HarnessError):
                raise cause from None
            raise HarnessError(f"A Ray worker failed: {error}") from None
    finally:
        if started_here:
            ray.shutdown()
    generated = sum(g for g, _ in results)
    log.info("ray: %d worker(s) generated %d sample(s), reused %d", workers, generated, sum(r for _, r in results))
    return generated
