"""Benchmark: DAAM tracing cost against plain generation on the same tiny_random pipeline.

Adds to the report:
- ``daam_overhead``: median traced / median plain generation time (target <= 1.10), measured in
  one process with the two variants alternating, so drift in machine load hits both alike; the
  median of ``PROCESSES`` such processes (each one's ratio in ``daam_overhead_runs``);
  ``daam_overhead_cpu_time``: the same ratio in process CPU time (one thread), which other jobs
  on a shared machine disturb far less than wall time;
- ``daam_peak_memory_ratio``: peak memory allocated by torch during a traced vs a plain
  generation, from the torch profiler's allocation events (CPU; the model's weights, allocated
  before, are not counted, so this is the ratio of the working memory of one generation).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from harness.bench import torch_threads

#: Work per measurement: a CFG batch of one 64x64 image, 4 DDIM steps.
PROMPT = "a red cat near a green tree"
STEPS = 4
SIZE = 64
REPEATS = 9
#: separate processes measured; the report keeps the median one (see :func:`run`)
PROCESSES = 3


def _generate(pipeline: Any, traced: bool) -> None:
    from harness.methods.daam import generate_with_maps, word_heat_maps

    generator = torch.Generator("cpu").manual_seed(0)
    if traced:  # what method=daam does per batch, word maps included
        _, tracer = generate_with_maps(pipeline, [PROMPT], [generator], steps=STEPS, guidance_scale=7.5,
                                       height=SIZE, width=SIZE)
        word_heat_maps(tracer.token_maps()[0], pipeline.tokenizer, PROMPT, ["cat", "tree"])
    else:
        pipeline(PROMPT, num_inference_steps=STEPS, guidance_scale=7.5, height=SIZE, width=SIZE,
                 generator=generator, output_type="np")


def _peak_allocated(pipeline: Any, traced: bool) -> int:
    """Peak of the running sum of torch's CPU allocations and frees during one generation (bytes)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _generate(pipeline, traced)
    # Self memory (children excluded) of every event, in time order: allocations minus frees.
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    running = peak = 0
    for event in events:
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak


def measure(repeats: int = REPEATS) -> dict[str, float]:
    """Time and memory ratios of traced vs plain generation (see module docstring)."""
    from harness.models.tiny import build_tiny_random

    pipeline = build_tiny_random()
    # One thread: on a shared machine, multi-threaded timings of a tiny model are mostly contention noise.
    with torch_threads(1):
        return _measure(pipeline, repeats)


def _measure(pipeline: Any, repeats: int) -> dict[str, float]:
    with torch.no_grad():
        _generate(pipeline, False)  # warm-up: first calls pay one-off costs
        _generate(pipeline, True)
        times: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for index in range(2 * repeats):
            traced = bool(index % 2) ^ bool((index // 2) % 2)  # ABBA order cancels linear drift
            started, started_cpu = time.perf_counter(), time.process_time()
            _generate(pipeline, traced)
            times[traced].append(time.perf_counter() - started)
            cpu[traced].append(time.process_time() - started_cpu)
        plain_peak = _peak_allocated(pipeline, False)
        traced_peak = _peak_allocated(pipeline, True)
    return {
        "daam_overhead": statistics.median(times[True]) / statistics.median(times[False]),
        # CPU time of this (single-threaded) process: insensitive to other processes on a shared machine.
        "daam_overhead_cpu_time": statistics.median(cpu[True]) / statistics.median(cpu[False]),
        "daam_peak_memory_ratio": traced_peak / plain_peak if plain_peak else float("nan"),
        "daam_plain_seconds": statistics.median(times[False]),
        "daam_plain_peak_mb": plain_peak / 2**20,
        "daam_traced_peak_mb": traced_peak / 2**20,
    }


def _measure_in_fresh_process() -> dict[str, float]:
    """:func:`measure` in a new Python process (its figures as JSON on the last stdout line)."""
    code = "import json; from harness.bench.daam import measure; print(json.dumps(measure()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(report: dict[str, Any]) -> None:
    """Add the DAAM figures to ``report`` (called by ``python -m harness.bench``).

    The ratio moves by a few percent from one process to the next (memory layout, not load: the
    CPU-time ratio moves with it), more than between repeats inside one process. So
    :func:`measure` runs in ``PROCESSES`` fresh processes; the report holds every run's ratio
    (``daam_overhead_runs``) and all the figures of the run with the median ratio.
    """
    runs = [_measure_in_fresh_process() for _ in range(PROCESSES)]
    runs.sort(key=lambda figures: figures["daam_overhead"])
    report.update(runs[len(runs) // 2])
    report["daam_overhead_runs"] = [round(figures["daam_overhead"], 4) for figures in runs]


if __name__ == "__main__":  # pragma: no cover
    result: dict[str, Any] = {}
    run(result)
    for key, value in result.items():
        print(f"{key}: {value}")
