"""``method=generate``: text-to-image sampling as a user calls the pipeline, nothing else."""

from __future__ import annotations

from harness.methods.guidance import GuidedSampling


class Generate(GuidedSampling):
    """The pipeline with ``generation.guidance_scale`` (CFG when it is above 1, as in diffusers);
    the smoke experiment's trivial method. It shares the guidance methods' sampling loop, so its
    samples record seconds and counted UNet forward passes the same way."""

    name = "generate"
    version = "2"
    uses_cfg = True
