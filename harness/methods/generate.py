"""``method=generate``: text-to-image sampling with the configured guidance, nothing else."""

from __future__ import annotations

import time

import torch

from harness.data.prompts import PromptRecord
from harness.methods.base import Method, to_uint8
from harness.store.samples import Sample


class Generate(Method):
    """Calls the pipeline as a user would; the smoke experiment's trivial method."""

    name = "generate"
    version = "1"

    @torch.no_grad()
    def run_batch(self, records: list[PromptRecord], seeds: list[int]) -> list[Sample]:
        settings = self.generation
        started = time.perf_counter()
        output = self.model.pipeline(
            prompt=[r.prompt for r in records],
            negative_prompt=[settings.negative_prompt] * len(records) if settings.negative_prompt else None,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            height=settings.height,
            width=settings.width,
            generator=self.generators(seeds),
            output_type="np",
        )
        seconds = (time.perf_counter() - started) / len(records)
        return [Sample(image=image, meta={"seconds": seconds, "unet_calls": settings.steps * (2 if settings.guidance_scale > 1 else 1)})
                for image in to_uint8(output.images)]
