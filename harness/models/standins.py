"""Faithful small stand-ins for the real models (``sd15``, ``sd2_base``, ``sd21_base``, ``sdxl_base``).

Each stand-in is the real model's architecture with its channels divided by :data:`SCALE` and
random weights: the same pipeline class, scheduler (class and config), tokenizer class and
text-encoder structure (two encoders for SDXL: ``CLIPTextModel`` + ``CLIPTextModelWithProjection``),
the same UNet block layout, number of attention heads per block (diffusers' ``attention_head_dim``
values, verbatim), linear vs convolutional projections, transformer depths, added conditioning
(SDXL's ``text_time``), VAE depth (8x downsampling) and latent scaling factor. It is built from
code, never from files, so tests prove the real models' path without their weights:
:func:`save_standin` writes a ``save_pretrained`` folder that ``model=<name> model.path=DIR`` (or a
Hugging Face cache laid out around it) loads through exactly the loader the real weights use.

What is scaled down: every channel count and hidden size by :data:`SCALE` (so per-head
dimensions shrink too), GroupNorm groups from 32 to 8 (32 does not divide the smaller widths),
and the tokenizer's vocabulary (the offline CLIP BPE of :mod:`harness.models.clip_tokenizer`).

The values below are those of the published ``config.json`` files of each model's folders on
the Hugging Face hub (cited per model); only the fields that shape the computation are written.
The hub is not reachable here, so they were checked against copies of those files in other
public code, and every value below agrees: the SD 1.5 UNet (widths, block types, heads,
cross-attention size, sample size, and ``use_linear_projection: false``, written out in a mirror
of the SD 1.5 folder saved by a later diffusers), the SD 2-base and SD 2.1-base UNets; SDXL's UNet,
VAE, both text encoders and scheduler; the CLIP ViT-L text tower of SD 1.5 and SDXL and the
OpenCLIP ViT-H tower of SD 2.x; the pad tokens of SDXL's two tokenizers (``<|endoftext|>`` and
``!`` in the ``special_tokens_map.json`` files of a diffusers folder fine-tuned from SDXL base;
fine-tunes keep the base tokenizers; one public non-diffusers port pads the first with ``!``).

``harness standin sd15 DIR`` writes the sd15 stand-in to DIR (the MMDiT stand-ins,
``sd3_medium`` ... ``flux_dev``, of :mod:`harness.models.mmdit_standins` too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from harness.models.clip_tokenizer import build_clip_tokenizer
from harness.models.tiny import TINY_VOCABULARY

#: channels and hidden sizes are the real ones divided by this
SCALE = 8
NORM_GROUPS = 8

_SD_SCHEDULER = {  # PNDM as in every SD 1.x/2.x folder's scheduler/scheduler_config.json
    "class": "PNDMScheduler",
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
    "prediction_type": "epsilon",
}

_CLIP_L = {  # openai/clip-vit-large-patch14 text tower (SD 1.x text_encoder/config.json; SDXL text_encoder)
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
    "hidden_act": "quick_gelu", "projection_dim": 768,
}

_OPENCLIP_H = {  # SD 2.x text_encoder/config.json: OpenCLIP ViT-H/14, penultimate layer (23 of 24)
    "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23,
    "hidden_act": "gelu", "projection_dim": 512,
}

_OPENCLIP_BIGG = {  # SDXL text_encoder_2/config.json: OpenCLIP ViT-bigG/14 (CLIPTextModelWithProjection)
    "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
    "hidden_act": "gelu", "projection_dim": 1280,
}

_SD_VAE = {  # vae/config.json of SD 1.5 / 2.x / SDXL: four blocks (8x downsampling), 4 latent channels
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
    "scaling_factor": 0.18215,
}

SD15_UNET = {  # stable-diffusion-v1-5/stable-diffusion-v1-5 unet/config.json
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 2,
    "attention_head_dim": 8,  # diffusers' name for the number of heads (8 in every block)
    "cross_attention_dim": 768,
    "use_linear_projection": False,  # 1x1 conv proj_in/proj_out
    "transformer_layers_per_block": 1,
    "sample_size": 64,
}

SD2_BASE_UNET = {  # stabilityai/stable-diffusion-2-base unet/config.json (2-1-base: the same values)
    **SD15_UNET,
    "attention_head_dim": [5, 10, 20, 20],  # heads per block (64-wide heads at full size)
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}

SDXL_UNET = {  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,  # 768 (CLIP-L) + 1280 (bigG) hidden states, concatenated
    "use_linear_projection": True,
    "transformer_layers_per_block": [1, 2, 10],
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    # pooled bigG embedding (1280) + 6 micro-conditioning numbers x 256: 2816 at full size
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
}

#: Everything each stand-in is built from (full-size values; :func:`build_standin` scales them).
STANDINS: dict[str, dict[str, Any]] = {
    "sd15": {"pipeline": "StableDiffusionPipeline", "unet": SD15_UNET, "text_encoders": [_CLIP_L],
             "pad_tokens": ["<|endoftext|>"], "vae": _SD_VAE, "scheduler": _SD_SCHEDULER},
    # SD 2.x pad with "!" (OpenCLIP pads with token 0), tokenizer/special_tokens_map.json
    "sd2_base": {"pipeline": "StableDiffusionPipeline", "unet": SD2_BASE_UNET, "text_encoders": [_OPENCLIP_H],
                 "pad_tokens": ["!"], "vae": _SD_VAE, "scheduler": _SD_SCHEDULER},
    "sd21_base": {"pipeline": "StableDiffusionPipeline", "unet": SD2_BASE_UNET, "text_encoders": [_OPENCLIP_H],
                  "pad_tokens": ["!"], "vae": _SD_VAE, "scheduler": _SD_SCHEDULER},
    "sdxl_base": {
        "pipeline": "StableDiffusionXLPipeline", "unet": SDXL_UNET, "text_encoders": [_CLIP_L, _OPENCLIP_BIGG],
        "pad_tokens": ["<|endoftext|>", "!"],
        "vae": {**_SD_VAE, "scaling_factor": 0.13025, "force_upcast": True},
        "scheduler": {  # stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
            "class": "EulerDiscreteScheduler",
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "steps_offset": 1, "timestep_spacing": "leading", "interpolation_type": "linear",
            "prediction_type": "epsilon", "use_karras_sigmas": False,
        },
    },
}


def _scaled(values: int | list[int], scale: int = SCALE) -> Any:
    return [v // scale for v in values] if isinstance(values, list) else values // scale


def unet_config(name: str, scale: bool = True) -> dict[str, Any]:
    """The UNet2DConditionModel arguments of stand-in ``name`` (``scale=False``: the full-size model)."""
    spec = STANDINS[name]
    config = dict(spec["unet"])
    config.update(in_channels=4, out_channels=4, norm_num_groups=32)
    if not scale:
        return config
    encoders = [_scaled_encoder(e) for e in spec["text_encoders"]]
    config["block_out_channels"] = _scaled(config["block_out_channels"])
    config["cross_attention_dim"] = sum(e["hidden_size"] for e in encoders)
    config["norm_num_groups"] = NORM_GROUPS
    if config.get("addition_embed_type") == "text_time":
        time_ids = (config["projection_class_embeddings_input_dim"] - spec["text_encoders"][-1]["projection_dim"])
        config["projection_class_embeddings_input_dim"] = encoders[-1]["projection_dim"] + time_ids
    return config


def _scaled_encoder(encoder: dict[str, Any], scale: int = SCALE) -> dict[str, Any]:
    return {**encoder, "hidden_size": encoder["hidden_size"] // scale,
            "intermediate_size": encoder["intermediate_size"] // scale,
            "projection_dim": encoder["projection_dim"] // scale}


def build_unet(name: str, scale: bool = True, weights_seed: int = 0) -> Any:
    """The stand-in's UNet (``scale=False``: the real model's full-size UNet), random weights."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(weights_seed)
    return UNet2DConditionModel(**unet_config(name, scale)).eval()


def build_standin(name: str, weights_seed: int = 0, full_size: bool = False) -> Any:
    """The stand-in pipeline of real model ``name`` (see module docstring), random weights from ``weights_seed``.

    ``full_size=True``: the real model's sizes everywhere (UNet, text encoder(s), VAE) with random
    weights and the small tokenizer, for timing at the real attention sizes (``make bench``).
    """
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if name not in STANDINS:
        raise KeyError(f"no stand-in for {name!r}; known: {sorted(STANDINS)}")
    spec = STANDINS[name]
    scale, groups = (1, 32) if full_size else (SCALE, NORM_GROUPS)
    unet = build_unet(name, not full_size, weights_seed)
    torch.manual_seed(weights_seed + 1)
    vae_spec = spec["vae"]
    blocks = len(vae_spec["block_out_channels"])
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=vae_spec["latent_channels"],
        block_out_channels=_scaled(vae_spec["block_out_channels"], scale), layers_per_block=vae_spec["layers_per_block"],
        down_block_types=["DownEncoderBlock2D"] * blocks, up_block_types=["UpDecoderBlock2D"] * blocks,
        norm_num_groups=groups, scaling_factor=vae_spec["scaling_factor"],
        force_upcast=vae_spec.get("force_upcast", True), sample_size=8 * spec["unet"]["sample_size"],
    ).eval()
    tokenizers, encoders = [], []
    for index, (encoder, pad_token) in enumerate(zip(spec["text_encoders"], spec["pad_tokens"], strict=True)):
        tokenizer = build_clip_tokenizer(TINY_VOCABULARY, model_max_length=77)
        tokenizer.pad_token = pad_token
        scaled = _scaled_encoder(encoder, scale)
        torch.manual_seed(weights_seed + 2 + index)
        config = CLIPTextConfig(
            vocab_size=len(tokenizer), max_position_embeddings=77, layer_norm_eps=1e-5,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **scaled,
        )
        # SDXL's second encoder is the one with the text projection (its pooled output conditions the UNet).
        model_class = CLIPTextModelWithProjection if index == 1 else CLIPTextModel
        encoders.append(model_class(config).eval())
        tokenizers.append(tokenizer)
    scheduler_spec = dict(spec["scheduler"])
    # from_config, as loading a folder does: keys a class does not take (PNDM and clip_sample) are ignored.
    scheduler = getattr(diffusers, scheduler_spec.pop("class")).from_config(scheduler_spec)
    pipeline_class = getattr(diffusers, spec["pipeline"])
    if spec["pipeline"] == "StableDiffusionXLPipeline":
        pipeline = pipeline_class(vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                  tokenizer=tokenizers[0], tokenizer_2=tokenizers[1], unet=unet,
                                  scheduler=scheduler, force_zeros_for_empty_prompt=True, add_watermarker=False)
    else:
        pipeline = pipeline_class(vae=vae, text_encoder=encoders[0], tokenizer=tokenizers[0], unet=unet,
                                  scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                  requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def save_standin(name: str, folder: str | Path, weights_seed: int = 0) -> Path:
    """Write stand-in ``name`` as a ``save_pretrained`` folder (safetensors), loadable with ``model.path``."""
    folder = Path(folder)
    build_standin(name, weights_seed).save_pretrained(str(folder), safe_serialization=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness standin",
                                     description="Write a real model's random-weight stand-in as a pipeline folder.")
    from harness.models.mmdit_standins import MMDIT_STANDINS, save_mmdit_standin

    parser.add_argument("name", choices=sorted(STANDINS) + sorted(MMDIT_STANDINS))
    parser.add_argument("folder")
    parser.add_argument("--weights-seed", type=int, default=0)
    parser.add_argument("--narrow", action="store_true", help="MMDiT stand-ins: a few blocks only (quick tries)")
    options = parser.parse_args(argv)
    if options.name in MMDIT_STANDINS:
        print(save_mmdit_standin(options.name, options.folder, options.weights_seed, options.narrow))
    else:
        print(save_standin(options.name, options.folder, options.weights_seed))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
