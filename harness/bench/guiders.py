"""Guider figures: each diffusers guider's time per denoising step over CFG's, at SD 1.5's size.

``guider_step_ratio_sd15_shape.<Guider>``: median process CPU seconds of one denoising step of
``method=guider`` with that guider, divided by the same with ``ClassifierFreeGuidance``, on a
full-size SD 1.5 UNet and text encoder with random weights
(:func:`harness.models.standins.build_standin` ``full_size=True``), 512x512 (64x64 latents),
one image, one torch thread, through the harness's guider loop
(:func:`harness.methods.guiders.sample_with_guider`). Each call runs ``STEPS`` steps and only the
gaps after the first step are timed (the first is the warm-up; diffusers' PAG/SLG branch is off
at step 0 anyway); CFG and the guider alternate ``REPEATS`` times. The guider's extra branch is
switched on over the whole interval (PAG, SLG: start 0, stop 1). Target: at or below the branch
count / 2 + 0.05 (e.g. PAG with CFG, three branches: 1.55). ``guider_branches_per_step.<Guider>``
is the guider's own count at the timed step.

``python -m harness.bench --only guiders`` runs every guider (about 2-3 minutes each on one
core); ``GUIDER_BENCH_ONLY=PerturbedAttentionGuidance,SmoothedEnergyGuidance`` restricts it.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

STEPS = 2
REPEATS = 1
SIZE = 512
MID = "mid_block.attentions.0.transformer_blocks.0"

#: the guiders timed, with arguments that switch their extra branch on at the timed step
GUIDERS: dict[str, dict] = {
    "ClassifierFreeZeroStarGuidance": {},
    "AdaptiveProjectedGuidance": {},
    "TangentialClassifierFreeGuidance": {},
    "FrequencyDecoupledGuidance": {"guidance_scales": [5.0, 2.0]},
    "MagnitudeAwareGuidance": {},
    "PerturbedAttentionGuidance": {"perturbed_guidance_start": 0.0, "perturbed_guidance_stop": 1.0},
    "SmoothedEnergyGuidance": {},
    "SkipLayerGuidance": {"skip_layer_guidance_start": 0.0, "skip_layer_guidance_stop": 1.0},
    "AutoGuidance": {"dropout": 1.0},
}


def _guider(name: str, params: dict):
    from harness.methods.guiders import build_guider

    scale = {} if name == "FrequencyDecoupledGuidance" else {"guidance_scale": 3.0}
    return build_guider(name, {**scale, **params}, layers=[MID])


def _step_cpu_seconds(pipeline, guider, steps: int = STEPS, size: int = SIZE) -> float:
    from harness.methods.guiders import sample_with_guider

    stamps: list[float] = []
    sample_with_guider(pipeline, guider, ["a red cat"], None, steps, size, size, [torch.Generator().manual_seed(0)],
                       on_step_end=lambda step: stamps.append(time.process_time()), decode_latents=False)
    return statistics.median(np.diff(stamps))


def guider_step_ratios(names: list[str] | None = None, steps: int = STEPS, repeats: int = REPEATS, size: int = SIZE,
                       threads: int = 1) -> dict[str, float]:
    """{guider_step_ratio_sd15_shape.<Guider>: ratio, ...} (see the module docstring)."""
    from harness.bench import torch_threads
    from harness.methods.guiders import calls_per_image
    from harness.models.standins import build_standin

    pipeline = build_standin("sd15", full_size=True)
    cfg = _guider("ClassifierFreeGuidance", {})
    report: dict[str, float] = {}
    with torch_threads(threads), torch.no_grad():
        for name in names or list(GUIDERS):
            guider = _guider(name, GUIDERS[name])
            cfg_times, guider_times = [], []
            for _ in range(repeats):  # alternating A/B; CPU time of this one-thread process
                cfg_times.append(_step_cpu_seconds(pipeline, cfg, steps, size))
                guider_times.append(_step_cpu_seconds(pipeline, guider, steps, size))
            ratio = statistics.median(guider_times) / statistics.median(cfg_times)
            report[f"guider_step_ratio_sd15_shape.{name}"] = float(ratio)
            report[f"guider_branches_per_step.{name}"] = float(calls_per_image(guider, 2) - calls_per_image(guider, 1))
            report[f"guider_step_cpu_seconds_sd15_shape.{name}"] = float(statistics.median(guider_times))
            report["guider_step_cpu_seconds_sd15_shape.ClassifierFreeGuidance"] = float(statistics.median(cfg_times))
            print(f"bench guiders: {name} ratio {ratio:.3f}", flush=True)
    return report


def run(report: dict) -> None:
    only = [n for n in os.environ.get("GUIDER_BENCH_ONLY", "").split(",") if n]
    report.update(guider_step_ratios(only or None))
