"""Hyperparameters of the unCLIP methods (torch-free: imported when configs are composed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config import MethodConfig, add_schema


@dataclass
class UnclipVariationsConfig(MethodConfig):
    """N decodes of each input image's CLIP embedding, each with its own decoder noise."""

    name: str = "unclip_variations"
    variations: int = 4


@dataclass
class UnclipInterpolationConfig(MethodConfig):
    """Slerp between two images' CLIP embeddings in ``frames`` steps (decoder noise fixed per pair)."""

    name: str = "unclip_interpolation"
    frames: int = 5


@dataclass
class UnclipTextdiffConfig(MethodConfig):
    """Slerp an image embedding towards the normalised difference of two captions' text embeddings."""

    name: str = "unclip_textdiff"
    #: slerp fractions theta from the image embedding (0) towards the text diff (1); DALL-E 2 shows 0.25-0.5
    step_sizes: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


@dataclass
class UnclipDAAMConfig(MethodConfig):
    """DAAM of the caption's words through Karlo's decoder (sum over steps, mean over layers and heads)."""

    name: str = "unclip_daam"


add_schema("method", "unclip_daam_schema", UnclipDAAMConfig)
add_schema("method", "unclip_variations_schema", UnclipVariationsConfig)
add_schema("method", "unclip_interpolation_schema", UnclipInterpolationConfig)
add_schema("method", "unclip_textdiff_schema", UnclipTextdiffConfig)
