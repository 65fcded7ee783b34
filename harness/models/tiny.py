"""``tiny_random``: a complete Stable-Diffusion-shaped pipeline with seeded random weights.

Built from config in about a second, with no files: VAE, CLIP text encoder and tokenizer,
a UNet with cross-attention at two resolutions, and SD's scheduler. It is the stand-in every
test and smoke run uses, so that code written for Stable Diffusion runs here unchanged.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from harness.models.clip_tokenizer import build_clip_tokenizer

#: Words that become single tokens; any other text tokenizes into characters.
TINY_VOCABULARY = (
    "a an the and of on in with to at by is are near next left right above below top bottom "
    "red green blue yellow orange purple black white pink brown gray small large big little "
    "circle square triangle star heart cat dog person man woman car bus tree table chair "
    "horse bird pizza plate cup street room field water sky grass background photo picture"
).split()

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "unet_channels": [32, 64],
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "text_hidden_size": 32,
    "text_layers": 2,
    "text_heads": 4,
    "vae_channels": [32, 64],
    "latent_channels": 4,
    "max_length": 77,
}


def tiny_components(architecture: dict[str, Any] | None = None, weights_seed: int = 0) -> dict[str, Any]:
    """The pipeline components with random weights drawn from ``weights_seed``."""
    arch = {**DEFAULT_ARCHITECTURE, **(architecture or {})}
    unknown = set(arch) - set(DEFAULT_ARCHITECTURE)
    if unknown:
        raise ValueError(f"unknown tiny_random architecture keys {sorted(unknown)}; known: {sorted(DEFAULT_ARCHITECTURE)}")
    channels = tuple(arch["unet_channels"])
    # Each component is seeded on its own so changing one does not reshuffle the others.
    torch.manual_seed(weights_seed)
    unet = UNet2DConditionModel(
        block_out_channels=channels,
        layers_per_block=arch["layers_per_block"],
        sample_size=32,
        in_channels=arch["latent_channels"],
        out_channels=arch["latent_channels"],
        # Cross-attention at every resolution (two or more), as in SD's down and up blocks.
        down_block_types=("CrossAttnDownBlock2D",) * len(channels),
        up_block_types=("CrossAttnUpBlock2D",) * len(channels),
        cross_attention_dim=arch["text_hidden_size"],
        attention_head_dim=arch["attention_head_dim"],
        norm_num_groups=min(32, channels[0]),
    )
    torch.manual_seed(weights_seed + 1)
    vae_channels = tuple(arch["vae_channels"])
    vae = AutoencoderKL(
        block_out_channels=vae_channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        latent_channels=arch["latent_channels"],
        norm_num_groups=min(32, vae_channels[0]),
        sample_size=64,
    )
    tokenizer = build_clip_tokenizer(TINY_VOCABULARY, model_max_length=arch["max_length"])
    torch.manual_seed(weights_seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=arch["text_hidden_size"],
            intermediate_size=arch["text_hidden_size"] * 2,
            num_attention_heads=arch["text_heads"],
            num_hidden_layers=arch["text_layers"],
            max_position_embeddings=arch["max_length"],
            vocab_size=len(tokenizer),
            layer_norm_eps=1e-5,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    for module in (unet, vae, text_encoder):
        module.eval()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def build_tiny_random(architecture: dict[str, Any] | None = None, weights_seed: int = 0) -> StableDiffusionPipeline:
    """A random-weight :class:`~diffusers.StableDiffusionPipeline` (see module docstring)."""
    components = tiny_components(architecture, weights_seed)
    pipeline = StableDiffusionPipeline(**components, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_fingerprint(architecture: dict[str, Any] | None, weights_seed: int) -> str:
    """Identifies a tiny_random model for sample content addresses."""
    arch = {**DEFAULT_ARCHITECTURE, **(architecture or {})}
    text = json.dumps({"arch": arch, "seed": weights_seed, "vocab": TINY_VOCABULARY}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
