"""Hyperparameters of ``method=daam`` (torch-free: imported when configs are composed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config import MethodConfig, add_schema


@dataclass
class DAAMConfig(MethodConfig):
    """DAAM (Tang et al., ACL 2023); defaults follow the reference code castorini/daam v0.2.0."""

    name: str = "daam"
    #: fnmatch patterns over cross-attention module names; the reference reads down and up blocks
    layers: list[str] = field(default_factory=lambda: ["down_blocks.*", "up_blocks.*"])
    exclude_layers: list[str] = field(default_factory=list)
    #: keep only maps of these sizes, as latent size / factor (1, 2, 4, 8); None: every size
    factors: list[int] | None = None
    #: the reference skips maps at latent/8 (8x8 for a 64x64 latent)
    exclude_factors: list[int] = field(default_factory=lambda: [8])
    #: head indices to keep (None: all heads)
    heads: list[int] | None = None
    #: [start, stop) over UNet call indices (0-based); None: every call
    step_window: list[int] | None = None
    #: also store each UNet call's word maps as heatmap_steps:<word> (steps, H, W)
    per_timestep: bool = False
    upsample: str = "bicubic"  #: bicubic | bilinear | nearest, to the latent grid
    clamp: bool = True  #: clamp upsampled maps at >= 0 (bicubic undershoot)
    #: none (reference default) | token_sum (divide by the sum over the prompt's tokens) | minmax (per word)
    normalize: str = "none"
    #: explicit words for every prompt (None: from words_source)
    words: list[str] | None = None
    #: nouns: record.meta["nouns"] when present, else every word; all: every word of the prompt
    words_source: str = "nouns"
    #: repeated words: merge | first | last | a 1-based number (per word also "dog#2")
    occurrence: str = "merge"
    #: perturbed-attention guidance during generation (0: off); uses diffusers' PAG pipeline
    pag_scale: float = 0.0
    pag_applied_layers: list[str] = field(default_factory=lambda: ["mid"])
    #: generate: text-to-image; image: DAAM on the image at record.meta[image_key]
    source: str = "generate"
    image_key: str = "image"
    #: image source: timesteps the image is noised to; one denoising step with the caption each
    image_timesteps: list[int] = field(default_factory=lambda: [250, 500, 750])


add_schema("method", "daam_schema", DAAMConfig)
