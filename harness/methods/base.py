"""The method interface every run calls.

A method turns a batch of records into :class:`~harness.store.samples.Sample` objects. Its
hyperparameters (its config minus ``name``) and its ``version`` enter every sample's content
address, so changing either regenerates; bump ``version`` when a code change alters outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import OmegaConf

from harness.data.prompts import PromptRecord
from harness.models.loader import LoadedModel
from harness.store.samples import Sample


def generation_seed(run_seed: int, record_seed: int) -> int:
    """The generator seed of one sample: a well-mixed function of the run and record seeds.

    Records keep their own seeds (so a prompt set fixes its images), and ``seed=`` of a run
    shifts all of them at once; SeedSequence avoids collisions between neighbouring seeds.
    """
    return int(np.random.SeedSequence([int(run_seed), int(record_seed)]).generate_state(1)[0])


@dataclass
class GenerationSettings:
    """Resolved sampling settings (the model's defaults filled in)."""

    steps: int
    guidance_scale: float
    height: int
    width: int
    negative_prompt: str
    batch_size: int

    def as_key(self) -> dict[str, Any]:
        """What decides the images (batch size does not)."""
        return {"steps": self.steps, "guidance_scale": self.guidance_scale, "height": self.height,
                "width": self.width, "negative_prompt": self.negative_prompt}


class Method:
    """Base class: subclasses set ``name``/``version`` and implement :meth:`run_batch`."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"

    def __init__(self, method_cfg: Any, model: LoadedModel, generation: GenerationSettings) -> None:
        self.cfg = method_cfg
        self.model = model
        self.generation = generation

    def params(self) -> dict[str, Any]:
        """The method's hyperparameters (its config without ``name``)."""
        if self.cfg is None:
            return {}
        params = OmegaConf.to_container(self.cfg, resolve=True) if OmegaConf.is_config(self.cfg) else dict(vars(self.cfg))
        params.pop("name", None)
        return params

    def save_figures(self, run_dir: Any, records: list[PromptRecord], samples: Any, rows: Any = None) -> list:
        """The one figure hook, as for metrics (:meth:`harness.metrics.base.Metric.save_figures`):
        figures of the run's ``records``/``samples`` (and its ``rows``) into ``run_dir``. Default: none."""
        return []

    def sample_spec(self, record: PromptRecord, seed: int) -> dict[str, Any]:
        """Everything that determines this record's sample (its content address)."""
        return {
            "model": self.model.identity(),
            "method": self.name,
            "method_version": self.version,
            "params": self.params(),
            "generation": self.generation.as_key(),
            "prompt": record.prompt,
            "seed": seed,
            **self.extra_spec(record),
        }

    def extra_spec(self, record: PromptRecord) -> dict[str, Any]:
        """Record fields beyond the prompt that this method reads (e.g. the words DAAM maps)."""
        return {}

    def run_batch(self, records: list[PromptRecord], seeds: list[int]) -> list[Sample]:
        raise NotImplementedError

    # Helpers shared by the generating methods.
    def generators(self, seeds: list[int]) -> list[torch.Generator]:
        """One CPU generator per sample, so each image depends on its own seed only (any batch size)."""
        return [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """Pipeline ``output_type='np'`` images (floats in [0, 1]) as uint8 arrays."""
    return [np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8) for image in images]
