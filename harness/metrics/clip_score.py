"""``clip_score``: torchmetrics' CLIPScore (100 x max(cos(image, text), 0)) with local CLIP weights.

The CLIP model and processor load from ``model_path`` (a ``save_pretrained`` folder) or from the
local Hugging Face cache (``model_id``, ``local_files_only=True``); nothing is downloaded. When
neither is there the run stops before generating with a message naming where it looked;
``metric.clip_score.optional=true`` turns that into a row with an empty value and the reason. The prompt scored is the one the image was generated from.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.data.prompts import PromptRecord
from harness.errors import MissingWeightsError
from harness.metrics.base import Metric
from harness.metrics.features import images_to_tensor
from harness.stats import mean_ci
from harness.store.rows import MetricResult
from harness.store.samples import Sample


def locate_clip(model_path: str | None, model_id: str) -> str:
    """Where CLIP's files are, found without loading them: ``model_path`` (a folder with
    ``config.json``) or ``model_id`` in the offline Hugging Face cache; MissingWeightsError otherwise."""
    tried = []
    if model_path:
        folder = Path(model_path).expanduser()
        if (folder / "config.json").is_file():
            return str(folder)
        tried.append(f"{folder} (no config.json)")
    from huggingface_hub import try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            return model_id
    except ValueError:  # not a hub id (e.g. a folder that does not exist)
        pass
    tried.append(f"the Hugging Face cache for {model_id}")
    raise _missing_clip(tried, model_id)


def load_clip(model_path: str | None, model_id: str) -> tuple[Any, Any]:
    """CLIP model and processor from a local folder or the offline cache, loaded once per process
    and shared (the metric's copies for the method and each baseline, and later runs, reuse it)."""
    from harness.registry import load_once

    source = locate_clip(model_path, model_id)
    return load_once(("clip", source), lambda: _load_clip_files(source, model_id))


def _load_clip_files(source: str, model_id: str) -> tuple[Any, Any]:
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(source, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as error:
        raise _missing_clip([f"{source} ({type(error).__name__}: {error})"], model_id) from None
    return model, processor


def _missing_clip(tried: list[str], model_id: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"CLIP weights for clip_score were not found. Looked in: {'; '.join(tried)} (local files only). Provide "
        f"them with metric.clip_score.model_path=<folder written by CLIPModel/CLIPProcessor.save_pretrained>, or "
        f"copy the Hugging Face cache of {model_id} here (or mark the metric optional: metric.clip_score.optional=true)."
    )


class _ProjectedFeatures(torch.nn.Module):
    """CLIP whose ``get_*_features`` return tensors.

    transformers 5 returns a ``BaseModelOutputWithPooling`` (projected embeddings in
    ``pooler_output``) where torchmetrics 1.9's CLIPScore expects a tensor; this adapter keeps
    torchmetrics' computation unchanged.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(output: Any) -> torch.Tensor:
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


class CLIPScore(Metric):
    """Mean CLIP score over images (95% t-CI) and one value per sample."""

    name = "clip_score"

    def __init__(self, model_path: str | None = None, model_id: str = "openai/clip-vit-large-patch14",
                 batch_size: int = 16) -> None:
        self.model_path = model_path
        self.model_id = model_id
        self.batch_size = int(batch_size)

    @cached_property
    def metric(self) -> Any:
        """torchmetrics' CLIPScore on the local CLIP, loaded once; MissingWeightsError when absent."""
        from torchmetrics.multimodal.clip_score import CLIPScore as TorchmetricsCLIPScore

        model, processor = load_clip(self.model_path, self.model_id)
        wrapped = _ProjectedFeatures(model)
        return TorchmetricsCLIPScore(model_name_or_path=lambda: (wrapped, processor))

    def check_available(self) -> None:
        """Find CLIP's files without loading them (MissingWeightsError naming where it looked)."""
        locate_clip(self.model_path, self.model_id)

    def reset(self) -> None:
        self.values: list[float] = []

    @torch.no_grad()
    def process(self, record: PromptRecord, sample: Sample) -> dict[str, float] | None:
        if sample.image is None:
            return None
        prompt = sample.meta.get("prompt_used", record.prompt)
        self.metric.reset()
        self.metric.update(images_to_tensor([np.asarray(sample.image)]), [prompt])
        value = float(self.metric.compute())
        self.values.append(value)
        return {self.name: value}

    def compute(self) -> list[MetricResult]:
        if not self.values:
            return self.nothing_to_score("no sample had an image")
        mean, low, high = mean_ci(self.values)
        source = self.model_path or self.model_id
        return [MetricResult(self.name, mean, len(self.values), low, high,
                             definition=f"torchmetrics CLIPScore = 100 * max(cos(image, prompt), 0), CLIP {source}; "
                                        "mean over images, 95% t-CI")]
