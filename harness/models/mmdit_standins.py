"""Faithful small stand-ins for the multi-modal diffusion transformers (``sd3_medium``,
``sd35_medium``, ``flux_schnell``, ``flux_dev``), in the manner of :mod:`harness.models.standins`.

Each stand-in is the real pipeline's architecture with its widths divided and random weights:
the same pipeline class (``StableDiffusion3Pipeline`` / ``FluxPipeline``), scheduler
(``FlowMatchEulerDiscreteScheduler`` with the published shift settings), tokenizers (CLIP BPE for
the CLIP towers, a T5 SentencePiece tokenizer, :mod:`harness.models.t5_tokenizer`), text encoders
(SD3: CLIP-L and OpenCLIP bigG, both ``CLIPTextModelWithProjection``, and a T5 v1.1 XXL encoder;
Flux: CLIP-L ``CLIPTextModel`` for the pooled vector and the T5 encoder for the sequence), the
transformer's block counts (SD3: 24 joint blocks, the last ``context_pre_only``; SD3.5 medium:
the first 13 with a second, image-only attention ``attn2`` and RMS q/k norms; Flux: 19
double-stream and 38 single-stream blocks), attention heads (24 everywhere), positional scheme
(SD3: learned 2-D sin-cos patch embedding cropped from a ``pos_embed_max_size`` grid, patch 2;
Flux: 3-axis rotary embedding, 2x2 packing outside the transformer, patch 1), pooled conditioning
(SD3: CLIP-L + bigG pooled, 2048 at full size; Flux: CLIP-L pooled, 768) and Flux-dev's guidance
embedding (``guidance_embeds``; schnell has none), and the 16-channel VAE with its scaling and
shift factors.

What is scaled down: the transformer and CLIP widths by :data:`SCALE` (per-head dimensions shrink
with them: SD3 64 -> 8, Flux 128 -> 16), Flux's transformer by :data:`FLUX_SCALE` and T5 by
:data:`T5_SCALE` (the T5-XXL and Flux trees are by far the largest; with 16 they stay small
enough for tests on a CPU); Flux's rotary axes ``[16, 56, 56]`` become ``[4, 2, 2]`` (each axis
needs an even width and their sum is the head width, 8; the two image axes stay equal); VAE
widths by :data:`SCALE` with GroupNorm 8 groups; vocabularies (CLIP's offline BPE and a T5
vocabulary of the same words); T5's 64 heads by :data:`T5_HEAD_SCALE` (a speed choice for tests:
the encoder is not what the attribution reads). ``narrow=True`` also cuts the block counts (for quick tests and
the 4,096-token memory bench only; the published counts are kept otherwise).

Checked against public copies of the published ``config.json`` files (other repositories that
embed them verbatim; the hub itself is not reachable here): SD3-medium transformer (patch 2,
16 in/out channels, 24 layers, 24 heads x 64, joint_attention_dim 4096, caption_projection_dim
1536, pooled_projection_dim 2048, pos_embed_max_size 192, sample_size 128, no qk_norm, no dual
attention); SD3.5-medium transformer (the same, with pos_embed_max_size 384, qk_norm rms_norm and
dual_attention_layers 0..12); FLUX.1-dev transformer (patch 1, in_channels 64, 19 + 38 layers,
24 heads x 128, joint_attention_dim 4096, pooled_projection_dim 768, guidance_embeds true,
axes_dims_rope [16, 56, 56]); the Flux VAE's shift factor 0.1159 and its 16 latent channels,
[128, 256, 512, 512] blocks and no quant convs; SD3's VAE scaling/shift 1.5305 / 0.0609.
Not checked against a copy here (taken from our knowledge of the published folders): FLUX.1-schnell
``guidance_embeds: false`` (one copy seen, unattributed), the schedulers' shift values (SD3/SD3.5
3.0; schnell 1.0 without dynamic shifting; dev dynamic shifting with base/max shift 0.5/1.15),
Flux's VAE scaling factor 0.3611, the T5 v1.1 XXL encoder's sizes (d_model 4096, d_ff 10240,
24 layers, 64 heads of 64, gated-gelu) and the max sequence lengths (SD3 256, schnell 256, dev 512).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.models.clip_tokenizer import build_clip_tokenizer
from harness.models.t5_tokenizer import build_t5_tokenizer
from harness.models.tiny import TINY_VOCABULARY

SCALE = 8
FLUX_SCALE = 16
T5_SCALE = 16
#: T5 keeps 1/4 of its 64 heads (16 heads of 16): 64 heads of width 4 made the encoder ten times slower on a CPU
T5_HEAD_SCALE = 4
NORM_GROUPS = 8

_CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
           "hidden_act": "quick_gelu", "projection_dim": 768}
_OPENCLIP_BIGG = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
                  "hidden_act": "gelu", "projection_dim": 1280}
T5_XXL = {  # google/t5-v1_1-xxl encoder (text_encoder_3 of SD3, text_encoder_2 of Flux)
    "d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
    "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
}

SD3_MEDIUM_TRANSFORMER = {  # stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 24,
    "attention_head_dim": 64, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "caption_projection_dim": 1536, "pooled_projection_dim": 2048, "pos_embed_max_size": 192,
}
SD35_MEDIUM_TRANSFORMER = {  # stabilityai/stable-diffusion-3.5-medium transformer/config.json
    **SD3_MEDIUM_TRANSFORMER, "pos_embed_max_size": 384, "qk_norm": "rms_norm",
    "dual_attention_layers": list(range(13)),
}
FLUX_TRANSFORMER = {  # black-forest-labs/FLUX.1-dev transformer/config.json (schnell: guidance_embeds false)
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
_VAE16 = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 16,
          "use_quant_conv": False, "use_post_quant_conv": False}
_FLOW_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}

#: Everything each stand-in is built from (full-size values).
MMDIT_STANDINS: dict[str, dict[str, Any]] = {
    "sd3_medium": {
        "pipeline": "StableDiffusion3Pipeline", "transformer": SD3_MEDIUM_TRANSFORMER,
        "vae": {**_VAE16, "scaling_factor": 1.5305, "shift_factor": 0.0609},
        "scheduler": _FLOW_SCHEDULER, "max_sequence_length": 256, "height": 1024,
    },
    "sd35_medium": {
        "pipeline": "StableDiffusion3Pipeline", "transformer": SD35_MEDIUM_TRANSFORMER,
        "vae": {**_VAE16, "scaling_factor": 1.5305, "shift_factor": 0.0609},
        "scheduler": _FLOW_SCHEDULER, "max_sequence_length": 256, "height": 1024,
    },
    "flux_schnell": {
        "pipeline": "FluxPipeline", "transformer": {**FLUX_TRANSFORMER, "guidance_embeds": False},
        "vae": {**_VAE16, "scaling_factor": 0.3611, "shift_factor": 0.1159},
        "scheduler": {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False},
        "max_sequence_length": 256, "height": 1024,
    },
    "flux_dev": {
        "pipeline": "FluxPipeline", "transformer": FLUX_TRANSFORMER,
        "vae": {**_VAE16, "scaling_factor": 0.3611, "shift_factor": 0.1159},
        "scheduler": {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                      "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096},
        "max_sequence_length": 512, "height": 1024,
    },
}

#: block counts of ``narrow=True`` stand-ins (SD3: joint blocks; Flux: double, single)
NARROW_BLOCKS = {"sd3": 3, "flux": (2, 2)}


def is_flux(name: str) -> bool:
    """Whether stand-in ``name`` is a Flux pipeline (else SD3-family)."""
    return MMDIT_STANDINS[name]["pipeline"] == "FluxPipeline"


def transformer_config(name: str, scale: bool = True, narrow: bool = False) -> dict[str, Any]:
    """The transformer arguments of stand-in ``name`` (``scale=False``: the full-size model)."""
    config = dict(MMDIT_STANDINS[name]["transformer"])
    flux = is_flux(name)
    if scale:
        factor = FLUX_SCALE if flux else SCALE
        config["attention_head_dim"] //= factor
        t5_width = T5_XXL["d_model"] // T5_SCALE
        config["joint_attention_dim"] = t5_width
        if flux:
            config["pooled_projection_dim"] = _CLIP_L["hidden_size"] // FLUX_SCALE  # CLIP-L pooler output
            config["axes_dims_rope"] = [4, 2, 2]
        else:
            config["caption_projection_dim"] = config["num_attention_heads"] * config["attention_head_dim"]
            config["pooled_projection_dim"] = (_CLIP_L["projection_dim"] + _OPENCLIP_BIGG["projection_dim"]) // SCALE
    if narrow:
        if flux:
            config["num_layers"], config["num_single_layers"] = NARROW_BLOCKS["flux"]
        else:
            config["num_layers"] = NARROW_BLOCKS["sd3"]
            config["dual_attention_layers"] = [i for i in config.get("dual_attention_layers", []) if i < config["num_layers"] - 1]
    return config


def _clip(encoder: dict[str, Any], scale: int, with_projection: bool, tokenizer: Any, weights_seed: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(weights_seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=77, layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **{**encoder, "hidden_size": encoder["hidden_size"] // scale,
           "intermediate_size": encoder["intermediate_size"] // scale,
           "projection_dim": encoder["projection_dim"] // scale})
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def _t5(tokenizer: Any, weights_seed: int, scale: int = T5_SCALE) -> Any:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(weights_seed)
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id,
                      **{**T5_XXL, "d_model": T5_XXL["d_model"] // scale, "d_ff": T5_XXL["d_ff"] // scale,
                         "num_heads": T5_XXL["num_heads"] // T5_HEAD_SCALE,
                         "d_kv": T5_XXL["d_kv"] * T5_HEAD_SCALE // scale})
    return T5EncoderModel(config).eval()


def build_mmdit_standin(name: str, weights_seed: int = 0, narrow: bool = False, vocabulary: Any = None) -> Any:
    """The stand-in pipeline of ``name`` (see module docstring), random weights from ``weights_seed``."""
    import diffusers

    if name not in MMDIT_STANDINS:
        raise KeyError(f"no MMDiT stand-in for {name!r}; known: {sorted(MMDIT_STANDINS)}")
    spec = MMDIT_STANDINS[name]
    words = list(vocabulary or TINY_VOCABULARY)
    flux = is_flux(name)
    torch.manual_seed(weights_seed)
    transformer_class = diffusers.FluxTransformer2DModel if flux else diffusers.SD3Transformer2DModel
    transformer = transformer_class(**transformer_config(name, narrow=narrow)).eval()
    torch.manual_seed(weights_seed + 1)
    vae_spec = spec["vae"]
    blocks = len(vae_spec["block_out_channels"])
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=vae_spec["latent_channels"],
        block_out_channels=[c // SCALE for c in vae_spec["block_out_channels"]], layers_per_block=vae_spec["layers_per_block"],
        down_block_types=["DownEncoderBlock2D"] * blocks, up_block_types=["UpDecoderBlock2D"] * blocks,
        norm_num_groups=NORM_GROUPS, scaling_factor=vae_spec["scaling_factor"], shift_factor=vae_spec["shift_factor"],
        use_quant_conv=vae_spec["use_quant_conv"], use_post_quant_conv=vae_spec["use_post_quant_conv"],
        sample_size=spec["height"],
    ).eval()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(dict(spec["scheduler"]))
    clip_tokenizer = build_clip_tokenizer(words, model_max_length=77)
    t5_tokenizer = build_t5_tokenizer(words, model_max_length=spec["max_sequence_length"])
    if flux:
        clip = _clip(_CLIP_L, FLUX_SCALE, False, clip_tokenizer, weights_seed + 2)
        t5 = _t5(t5_tokenizer, weights_seed + 3)
        pipeline = diffusers.FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tokenizer,
                                          text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer)
    else:
        clip_g_tokenizer = build_clip_tokenizer(words, model_max_length=77)
        clip_g_tokenizer.pad_token = "!"  # SD3's tokenizer_2 (bigG) pads with "!" as SDXL's does
        clip_l = _clip(_CLIP_L, SCALE, True, clip_tokenizer, weights_seed + 2)
        clip_g = _clip(_OPENCLIP_BIGG, SCALE, True, clip_g_tokenizer, weights_seed + 3)
        t5 = _t5(t5_tokenizer, weights_seed + 4)
        pipeline = diffusers.StableDiffusion3Pipeline(
            transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=clip_l, tokenizer=clip_tokenizer,
            text_encoder_2=clip_g, tokenizer_2=clip_g_tokenizer, text_encoder_3=t5, tokenizer_3=t5_tokenizer)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def save_mmdit_standin(name: str, folder: str | Path, weights_seed: int = 0, narrow: bool = False) -> Path:
    """Write stand-in ``name`` as a ``save_pretrained`` folder (safetensors), loadable with ``model.path``."""
    folder = Path(folder)
    build_mmdit_standin(name, weights_seed, narrow).save_pretrained(str(folder), safe_serialization=True)
    return folder
