"""PAG figures: CFG+PAG vs CFG time per denoising step, and FID feature-extraction throughput.

``pag_step_ratio``: median seconds per denoising step of CFG+PAG (diffusers' PAG pipeline, batch
[uncond, cond, perturbed]) divided by that of CFG (the model's own pipeline), on tiny_random at
64x64, measured in one process with the two alternating. A step's time is the gap between
consecutive ``callback_on_step_end`` calls (UNet + scheduler; text encoding and VAE decoding are
left out). The paper's cost argument predicts about 1.5 (three UNet branches instead of two);
a tiny model on a CPU has fixed per-call overheads that pull it towards 1.

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


def _step_seconds(pipeline, **kwargs) -> float:
    stamps: list[float] = []

    def on_step_end(pipe, step, timestep, callback_kwargs):
        stamps.append(time.perf_counter())
        return callback_kwargs

    pipeline(prompt=["a red cat"], num_inference_steps=STEPS, guidance_scale=3.0, height=SIZE, width=SIZE,
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
    return {"pag_step_ratio": pag_step / cfg_step, "pag_cfg_step_seconds_tiny64": cfg_step,
            "pag_cfg_pag_step_seconds_tiny64": pag_step}


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
    report["fid_images_per_second"] = fid_images_per_second()
