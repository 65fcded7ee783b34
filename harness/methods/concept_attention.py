"""``method=concept_attention``: ConceptAttention maps (Helbling et al., ICML 2025) on SD3/SD3.5/Flux.

Concept tokens (any words, independent of the prompt, e.g. "background") ride through the joint
blocks with the text stream's weights; nothing attends to them, so the image is the one the
pipeline makes without them (see :mod:`harness.attention.joint`). Each sample holds the image,
``arrays["heatmap:<concept>"]`` (the output-space map: softmax over concepts of the concept and
image attention outputs' dot products, averaged over the declared layers and steps, at latent
resolution) and ``arrays["heatmap_cross:<concept>"]`` (the raw cross-attention variant), and
``meta["concepts"]``. Two sources: images generated from the prompt, or a given image noised to
each of ``image_timesteps`` and passed once through the transformer with its caption.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from harness.attention.joint import JointAttentionTracer, concept_embeddings, is_joint_model
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.methods.base import Method, to_uint8
from harness.methods.daam import load_image, trace_image_joint
from harness.store.samples import Sample

SOURCES = ("generate", "image")


def concepts_for(record: PromptRecord, cfg: Any) -> list[str]:
    """The concepts of ``record``: ``cfg.concepts``, else its nouns and ``background``."""
    if cfg.concepts:
        return [str(c) for c in cfg.concepts]
    nouns = record.meta.get("nouns") if isinstance(record.meta, dict) else None
    if not nouns:
        raise ConfigError(f"Record {record.id!r} has no meta['nouns']; give method.concepts=[...].")
    return list(dict.fromkeys([*(str(n) for n in nouns), "background"]))


def generate_with_concepts(pipeline: Any, prompts: list[str], generators: list[torch.Generator],
                           concepts: Sequence[str], *, steps: int, guidance_scale: float, height: int, width: int,
                           negative_prompt: str = "", concept_layers: Sequence[str] | None = None,
                           step_window: Sequence[int] | None = None, upsample: str = "bicubic",
                           clamp: bool = True) -> tuple[np.ndarray, JointAttentionTracer]:
    """Generate ``prompts`` with the concept stream on; returns (images in [0, 1], the finished tracer)."""
    if not is_joint_model(pipeline):
        raise ConfigError(f"ConceptAttention needs a joint-attention model (SD3, SD3.5, Flux); "
                          f"{type(pipeline).__name__} has none.")
    embeddings = concept_embeddings(pipeline, list(concepts))
    kwargs: dict[str, Any] = {}
    if negative_prompt and "Flux" not in type(pipeline).__name__:
        kwargs["negative_prompt"] = [negative_prompt] * len(prompts)
    with JointAttentionTracer(pipeline, layers=[], concepts=embeddings, concept_layers=concept_layers,
                              step_window=step_window, upsample=upsample, clamp=clamp) as tracer:
        output = pipeline(prompt=prompts, num_inference_steps=steps, guidance_scale=guidance_scale, height=height,
                          width=width, generator=generators, output_type="np", **kwargs)
    return output.images, tracer


class ConceptAttention(Method):
    """ConceptAttention heat maps for every concept of each prompt (see module docstring)."""

    name = "concept_attention"
    version = "1"

    def __init__(self, method_cfg: Any, model: Any, generation: Any) -> None:
        super().__init__(method_cfg, model, generation)
        if method_cfg.source not in SOURCES:
            raise ConfigError(f"method.source={method_cfg.source!r} is not one of {', '.join(SOURCES)}.")
        if not is_joint_model(model.pipeline):
            raise ConfigError(f"method=concept_attention needs a joint-attention model (sd3_medium, sd35_medium, "
                              f"flux_schnell, flux_dev, toy_mmdit); model {model.name!r} has none.")

    def extra_spec(self, record: PromptRecord) -> dict[str, Any]:
        spec: dict[str, Any] = {"concepts": concepts_for(record, self.cfg)}
        if self.cfg.source == "image":
            spec["image"] = str(record.meta.get(self.cfg.image_key))
        return spec

    def run_batch(self, records: list[PromptRecord], seeds: list[int]) -> list[Sample]:
        cfg, settings = self.cfg, self.generation
        pipeline = self.model.pipeline
        samples = []
        for record, seed in zip(records, seeds, strict=True):  # concepts differ per record: one at a time
            concepts = concepts_for(record, cfg)
            started = time.perf_counter()
            generators = self.generators([seed])
            layers = None if cfg.concept_layers is None else list(cfg.concept_layers)
            if cfg.source == "image":
                image = load_image(record, cfg.image_key, settings.height, settings.width)
                tracer = trace_image_joint(pipeline, [image], [record.prompt], generators,
                                           timesteps=list(cfg.image_timesteps), options={"layers": []},
                                           concepts=concept_embeddings(pipeline, concepts), concept_layers=layers)
            else:
                floats, tracer = generate_with_concepts(
                    pipeline, [record.prompt], generators, concepts, steps=settings.steps,
                    guidance_scale=settings.guidance_scale, height=settings.height, width=settings.width,
                    negative_prompt=settings.negative_prompt, concept_layers=layers,
                    step_window=None if cfg.step_window is None else list(cfg.step_window),
                    upsample=str(cfg.upsample), clamp=bool(cfg.clamp))
                image = to_uint8(floats)[0]
            output_space = tracer.concept_maps("concept_attention")[0].cpu().numpy().astype(np.float32)
            cross = tracer.concept_maps("cross_attention")[0].cpu().numpy().astype(np.float32)
            arrays = {f"heatmap:{c}": output_space[i] for i, c in enumerate(concepts)}
            arrays.update({f"heatmap_cross:{c}": cross[i] for i, c in enumerate(concepts)})
            meta = {"concepts": concepts, "words": concepts, "concept_layers": tracer.concept_layers,
                    "latent_size": list(tracer.latent_size), "seconds": time.perf_counter() - started,
                    "unet_calls": (tracer.call_index + 1) * max(1, tracer.branches)}
            samples.append(Sample(image=image, arrays=arrays, meta=meta))
        return samples
