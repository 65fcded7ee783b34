"""Hyperparameters of ``method=concept_attention`` (torch-free: imported when configs are composed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config import MethodConfig, add_schema


@dataclass
class ConceptAttentionConfig(MethodConfig):
    """ConceptAttention (Helbling et al., ICML 2025) on SD3/SD3.5/Flux; see harness.methods.concept_attention."""

    name: str = "concept_attention"
    #: the concept words (independent of the prompt); None: the record's nouns (meta["nouns"]) plus "background"
    concepts: list[str] | None = None
    #: fnmatch patterns of the joint blocks whose concept maps are averaged (None: every joint block with a
    #: text output; the reference uses Flux double-stream blocks 10..17 of 19: transformer_blocks.1[0-7].attn)
    concept_layers: list[str] | None = None
    #: [start, stop) over transformer call indices (0-based); None: every call
    step_window: list[int] | None = None
    upsample: str = "bicubic"  #: to the latent grid
    clamp: bool = True
    #: generate: text-to-image; image: the image at record.meta[image_key], noised to image_timesteps, one pass each
    source: str = "generate"
    image_key: str = "image"
    image_timesteps: list[int] = field(default_factory=lambda: [500])


add_schema("method", "concept_attention_schema", ConceptAttentionConfig)
