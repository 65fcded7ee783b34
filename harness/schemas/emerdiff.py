"""Hyperparameters of ``method=emerdiff`` (Namekata et al., ICLR 2024); defaults are the paper's.

Symbols of the paper in brackets. Timesteps are on the model's 1000-step training scale and are
snapped to the nearest timestep of the ``inversion_steps`` grid (with a logged note).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import MethodConfig, add_schema

#: Where c*M is added: "output" = f(softmax(QK^T)V) + cM (the paper's default), "values" = f(softmax(QK^T)V + cM).
MODULATION_TARGETS = ("output", "values")
#: How the K difference maps are made comparable before the argmax: "none" (the paper), "area" (each
#: map divided by its low-resolution mask's area: change per modulated position), "max" (each map
#: divided by its own maximum: where a mask's change is relatively strongest). Not in the paper.
DIFFERENCE_NORMALIZATIONS = ("none", "area", "max")


@dataclass
class EmerDiffConfig(MethodConfig):
    """EmerDiff: low-resolution k-means masks mapped to pixels by modulated DDPM regeneration."""

    name: str = "emerdiff"
    #: text condition of inversion and regeneration (the paper segments with the empty prompt)
    prompt: str = ""
    #: classifier-free guidance during inversion/regeneration (1 = none; both passes must match)
    guidance_scale: float = 1.0
    #: DDPM (edit-friendly) inversion steps (50 in the reimplementation)
    inversion_steps: int = 50
    #: [t_f] timestep whose query vectors are clustered (1 = least noisy)
    feature_timestep: int = 1
    #: [t_m] the one timestep at which the modulation is applied; regeneration reruns from it
    modulation_timestep: int = 281
    #: [lambda] modulation strength: c = +lambda and c = -lambda
    modulation_strength: float = 10.0
    #: [K] number of k-means clusters = low-resolution masks (25 in the reimplementation)
    clusters: int = 25
    #: feature layer: a module name (e.g. up_blocks.1.attentions.0.transformer_blocks.0.attn2) or "auto"
    feature_layer: str = "auto"
    #: with "auto": which cross-attention layer of the chosen low-resolution up block (0 = first)
    feature_layer_index: int = 0
    #: modulated layer: a module name or "auto"
    modulation_layer: str = "auto"
    #: with "auto": 2 = the third cross-attention layer of that block (the last one if it has fewer)
    modulation_layer_index: int = 2
    #: with "auto": the up block whose attention grid is closest to latent size / this (16x16 in SD)
    low_resolution_divisor: int = 4
    #: "output": f(sigma V) + cM (paper default); "values": f(sigma V + cM)
    modulation_target: str = "output"
    #: reuse the unmodulated pass's attention maps (Q and K) in every attention layer after t_m
    attention_injection: bool = True
    #: [sigma] std (pixels) of the Gaussian filter on the difference maps. The paper's value was not
    #: confirmed; 3 px at 512x512 is our choice (0 switches the filter off)
    gaussian_sigma: float = 3.0
    #: "none" (the paper: argmax of the raw difference maps), "area" or "max"; see DIFFERENCE_NORMALIZATIONS
    difference_normalization: str = "none"
    #: modulated trajectories per batched UNet call (2K in all; lower it to fit memory)
    chunk_size: int = 16
    #: run the 2K trajectories one at a time (benchmark and test reference only; same results)
    one_at_a_time: bool = False
    #: square size the image is resized to (None: the model's default size)
    image_size: int | None = None
    #: k-means restarts (scikit-learn n_init); the seed comes from the sample's seed
    kmeans_restarts: int = 10
    #: store difference_maps (float16, K x H x W) in each sample
    save_difference_maps: bool = True
    #: store the clustered low-resolution features (float16, positions x channels; the naive baseline reads them)
    save_features: bool = True


add_schema("method", "emerdiff_schema", EmerDiffConfig)
