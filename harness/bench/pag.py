"""PAG figures: CFG+PAG vs CFG time per denoising step, and FID feature-extraction throughput.

``pag_step_ratio``: median seconds per denoising step of CFG+PAG (diffusers' PAG pipeline, batch
[uncond, cond, perturbed]) divided by that of CFG (the model's own pipeline), on tiny_random at
64x64, measured in one process with the two alternating. A step's time is the gap between
consecutive ``callback_on_step_end`` calls (UNet + scheduler; text encoding and VAE decoding are
left out). The paper's cost argument predicts about 1.5 (three UNet branches instead of two);
a tiny model on a CPU has fixed per-call overheads that pull it towards 1.

``pag_step_ratio_sd15_shape`` (target <= 1.55): the same ratio at the real sizes: a full-size
SD 1.5 UNet and text encoder with random weights (:func:`harness.models.standins.build_standin`,
``full_size=True``), 512x512 (64x64 latents), batch of one image, PAG on the mid block,
``SD15_STEPS`` steps per call (only the gaps after the first step are timed, so each call's
first step is its warm-up), ``SD15_REPEATS`` alternating pairs, timed in process CPU time (one
torch thread): a step of this size takes minutes on a shared CPU, where wall time would mostly
measure the other jobs. There the UNet dominates a step, so the ratio approaches the branch
count's 1.5.

``fid_images_per_second``: images per second through the FID path of ``metric=fid`` with the
offline TorchScript Inception on the CPU (resize to 299, features, float64 statistics update),
batches of 8 images of 64x64, after one warm-up batch.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

REPEATS = 3
STEPS = 5
SIZE = 64
FID_BATCH = 8
FID_BATCHES = 2
SD15_STEPS = 2
SD15_REPEATS = 2
SD15_SIZE = 512


def _step_seconds(pipeline, steps: int = STEPS, size: int = SIZE, cpu: bool = False, **kwargs) -> float:
    stamps: list[float] = []
    clock = time.process_time if cpu else time.perf_counter

    def on_step_end(pipe, step, timestep, callback_kwargs):
        stamps.append(clock())
        return callback_kwargs

    pipeline(prompt=["a red cat"], num_inference_steps=steps, guidance_scale=3.0, height=size, width=size,
             generator=[torch.Generator().manual_seed(0)], output_type="latent", callback_on_step_end=on_step_end,
             **kwargs)
    return statistics.median(np.diff(stamps))


def pag_step_ratio() -> dict[str, float]:
    from diffusers import AutoPipelineForText2Image

    from harness.models.tiny import build_tiny_random

    cfg_pipeline = build_tiny_random()
    pag_pipeline = AutoPipelineForText2Image.from_pipe(cfg_pipeline, enable_pag=True, pag_applied_layers=["mid"])
    pag_pipeline.set_progress_bar_config(disable=True)
    cfg_times, pag_times = [], []
    with torch.no_grad():
        _step_seconds(cfg_pipeline)  # warm-up
        _step_seconds(pag_pipeline, pag_scale=3.0)
        for _ in range(REPEATS):  # alternating A/B: drifts in machine load hit both
            cfg_times.append(_step_seconds(cfg_pipeline))
            pag_times.append(_step_seconds(pag_pipeline, pag_scale=3.0))
    cfg_step, pag_step = statistics.median(cfg_times), statistics.median(pag_times)
    return {"pag_step_ratio": float(pag_step / cfg_step), "pag_cfg_step_seconds_tiny64": cfg_step,
            "pag_cfg_pag_step_seconds_tiny64": pag_step}


def pag_step_ratio_sd15_shape(steps: int = SD15_STEPS, repeats: int = SD15_REPEATS, size: int = SD15_SIZE,
                              threads: int = 1) -> dict[str, float]:
    """CFG+PAG / CFG seconds per step on a full-size SD 1.5 UNet at 512x512 (see module docstring)."""
    from diffusers import AutoPipelineForText2Image

    from harness.bench import torch_threads
    from harness.models.standins import build_standin

    cfg_pipeline = build_standin("sd15", full_size=True)
    pag_pipeline = AutoPipelineForText2Image.from_pipe(cfg_pipeline, enable_pag=True, pag_applied_layers=["mid"])
    pag_pipeline.set_progress_bar_config(disable=True)
    cfg_times, pag_times = [], []
    with torch_threads(threads), torch.no_grad():
        for _ in range(repeats):  # alternating A/B; CPU time of this one-thread process
            cfg_times.append(_step_seconds(cfg_pipeline, steps, size, cpu=True))
            pag_times.append(_step_seconds(pag_pipeline, steps, size, cpu=True, pag_scale=3.0))
    cfg_step, pag_step = statistics.median(cfg_times), statistics.median(pag_times)
    return {"pag_step_ratio_sd15_shape": float(pag_step / cfg_step), "pag_cfg_step_cpu_seconds_sd15_shape": cfg_step,
            "pag_cfg_pag_step_cpu_seconds_sd15_shape": pag_step}


def fid_images_per_second() -> float:
    from harness.metrics.features import InceptionTorchScript
    from harness.metrics.fid import extract_features, fid_metric

    extractor = InceptionTorchScript(device="cpu")
    metric = fid_metric(extractor.num_features)
    rng = np.random.default_rng(0)
    batches = [list(rng.integers(0, 256, size=(FID_BATCH, SIZE, SIZE, 3), dtype=np.uint8))
               for _ in range(FID_BATCHES + 1)]
    metric.update(torch.as_tensor(extract_features(iter(batches[0]), extractor, FID_BATCH)), real=False)  # warm-up
    started = time.perf_counter()
    for batch in batches[1:]:
        features = extract_features(iter(batch), extractor, FID_BATCH)
        metric.update(torch.as_tensor(features), real=False)
    return FID_BATCH * FID_BATCHES / (time.perf_counter() - started)


def run(report: dict) -> None:
    report.update(pag_step_ratio())
    report.update(pag_step_ratio_sd15_shape())
    report["fid_images_per_second"] = fid_images_per_second()
