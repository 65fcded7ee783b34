"""Benchmark: EmerDiff cost per image, all 2K modulated trajectories batched vs one at a time.

Adds to the report (tiny_random, one 64x64 synthetic image, 10 inversion steps, K = 8, so the
16x16 feature grid matches SD's and t_m = 281 snaps to 301: 4 rerun steps x 16 trajectories):

- ``emerdiff_seconds_per_image``: median seconds per image, batched (chunk_size 16);
- ``emerdiff_seconds_per_image_one_at_a_time``: the same with one trajectory per UNet call;
- ``emerdiff_batched_speedup``: one-at-a-time time / batched time (same process, A/B alternating);
- ``emerdiff_unet_calls_per_image``: UNet forward passes per image (trajectory-steps, the
  same in both modes: inversion steps + 2K x rerun steps);
- ``emerdiff_unet_invocations_per_image_batched`` / ``..._one_at_a_time``: batched UNet calls.
"""

from __future__ import annotations

import statistics
import time
from types import SimpleNamespace
from typing import Any

import torch

from harness.bench import torch_threads

SIZE = 64
STEPS = 10
CLUSTERS = 8
REPEATS = 3


def _method(model: Any, one_at_a_time: bool) -> Any:
    from harness.methods.base import GenerationSettings
    from harness.methods.emerdiff import EmerDiff
    from harness.schemas.emerdiff import EmerDiffConfig

    config = EmerDiffConfig(inversion_steps=STEPS, clusters=CLUSTERS, kmeans_restarts=1, gaussian_sigma=2.0,
                            chunk_size=2 * CLUSTERS, one_at_a_time=one_at_a_time, save_features=False)
    return EmerDiff(config, model, GenerationSettings(STEPS, 1.0, SIZE, SIZE, "", 1))


def run(report: dict) -> None:
    # One torch thread: on the shared 2-core machine two threads contend with other jobs and made
    # every call 3-10x slower and noisier (measured); the ratio is what this bench reports.
    with torch_threads(1):
        _measure(report)


def _measure(report: dict) -> None:
    import tempfile

    from harness.data.image_sets import build_synthetic_segments
    from harness.models.loader import LoadedModel
    from harness.models.tiny import build_tiny_random

    pipeline = build_tiny_random()
    pipeline.set_progress_bar_config(disable=True)
    model = LoadedModel("tiny_random", pipeline, "bench", torch.device("cpu"), torch.float32, SIZE, SIZE)
    with tempfile.TemporaryDirectory() as folder:
        image_set = build_synthetic_segments(SimpleNamespace(seed=0, size=1, path=folder,
                                                             params={"height": SIZE, "width": SIZE, "rectangles": 3}))
        record = image_set.records[0]
        methods = {"batched": _method(model, False), "one_at_a_time": _method(model, True)}
        times: dict[str, list[float]] = {name: [] for name in methods}
        meta: dict[str, dict] = {}
        methods["batched"].segment(record, torch.Generator().manual_seed(0), 0)  # warm-up (lazy imports)
        for _ in range(REPEATS):
            for name, method in methods.items():  # A/B alternating: load drift hits both alike
                started = time.perf_counter()
                sample = method.segment(record, torch.Generator().manual_seed(0), 0)
                times[name].append(time.perf_counter() - started)
                meta[name] = sample.meta
    batched, single = statistics.median(times["batched"]), statistics.median(times["one_at_a_time"])
    report["emerdiff_seconds_per_image"] = round(batched, 4)
    report["emerdiff_seconds_per_image_one_at_a_time"] = round(single, 4)
    report["emerdiff_batched_speedup"] = round(single / batched, 3)
    report["emerdiff_unet_calls_per_image"] = meta["batched"]["unet_calls"]
    report["emerdiff_unet_invocations_per_image_batched"] = meta["batched"]["unet_invocations"]
    report["emerdiff_unet_invocations_per_image_one_at_a_time"] = meta["one_at_a_time"]["unet_invocations"]
    report["emerdiff_bench_setting"] = (f"tiny_random {SIZE}x{SIZE}, {STEPS} inversion steps, K={CLUSTERS}, "
                                        f"{meta['batched']['rerun_steps']} rerun steps, torch threads {torch.get_num_threads()}")
