"""unCLIP models (DALL-E 2's two-stage design): Karlo and Stable Diffusion 2.1 unCLIP.

``model=karlo`` is Karlo's image-variation pipeline (diffusers' ``UnCLIPImageVariationPipeline``,
``kakaobrain/karlo-v1-alpha-image-variations``): the decoder and super-resolution stages of Karlo's
``UnCLIPPipeline`` with a CLIP ViT-L/14 image encoder in front, so an image -> CLIP image embedding
-> image loop exists. Its text encoder is CLIP's with projection, so captions embed into the same
space (text diffs). ``model=sd21_unclip`` is ``StableUnCLIPImg2ImgPipeline``
(``stabilityai/stable-diffusion-2-1-unclip``): SD 2.1 conditioned on a noised CLIP image embedding;
its text encoder has no projection into the image-embedding space, so text diffs are refused.

Both load from ``model.path`` or the offline Hugging Face cache only; a missing folder stops with
the usual missing-weights message. ``model=tiny_karlo`` and ``model=tiny_sd21_unclip`` are random
stand-ins of the same classes built from config (component shapes as in diffusers' own pipeline
tests), used by tests and smoke runs through the same code.

:class:`UnCLIPModel` is the one interface the unCLIP methods use: ``encode_images``,
``encode_texts`` (unit-normalised CLIP embeddings) and ``decode`` (embedding -> image).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import ConfigError, HarnessError, MissingWeightsError
from harness.models.loader import LoadedModel, _hub_cache_dir, resolve_device

UNCLIP_MODELS = {
    "karlo": ("kakaobrain/karlo-v1-alpha-image-variations", "UnCLIPImageVariationPipeline", 256),
    "sd21_unclip": ("stabilityai/stable-diffusion-2-1-unclip", "StableUnCLIPImg2ImgPipeline", 768),
}
TINY_EMBEDDING = 32


@dataclass
class UnCLIPModel(LoadedModel):
    """A loaded unCLIP pipeline with CLIP encoders and an embedding decoder."""

    kind: str = "karlo"  #: karlo | sd21_unclip
    super_res_steps: int = 7

    def identity(self) -> dict[str, Any]:
        return {"model": self.name, "fingerprint": self.fingerprint, "kind": self.kind, "dtype": str(self.dtype)}

    def check_daam(self) -> None:
        """DAAM needs a text-to-image pass whose cross-attention reads the caption's tokens."""
        if self.kind == "karlo":
            raise HarnessError(
                f"model={self.name}: method=daam generates from a prompt with a UNet; Karlo has no prior here and its "
                "decoder's attention is traced by method=unclip_daam (DAAM of a record image's caption through the "
                "decoder's text cross-attention, docs/unclip.md).")
        raise HarnessError(
            f"model={self.name}: DAAM is not available for StableUnCLIPImg2ImgPipeline in this harness: its UNet has "
            "text cross-attention, but a pass needs an image embedding as well as the prompt, which the DAAM method "
            "does not supply (docs/unclip.md). Use model=sd21_base for DAAM on the same UNet family.")

    @property
    def image_encoder(self) -> Any:
        return self.pipeline.image_encoder

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray]) -> torch.Tensor:
        """Unit-norm CLIP image embeddings (N, D) of uint8 HxWx3 images (the pipeline's own processor)."""
        processor = self.pipeline.feature_extractor
        pixels = processor(images=[np.asarray(i) for i in images], return_tensors="pt").pixel_values
        embeds = self.image_encoder(pixels.to(self.device, self.image_encoder.dtype)).image_embeds.float()
        return torch.nn.functional.normalize(embeds, dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm CLIP text embeddings (N, D) in the image-embedding space (Karlo only)."""
        encoder = self.pipeline.text_encoder
        if not hasattr(encoder, "text_projection"):
            raise HarnessError(
                f"model={self.name}: its text encoder ({type(encoder).__name__}) has no projection into the CLIP "
                "image-embedding space, so captions cannot move an image embedding (text diffs). Use model=karlo.")
        tokens = self.pipeline.tokenizer(texts, padding="max_length", max_length=self.pipeline.tokenizer.model_max_length,
                                         truncation=True, return_tensors="pt")
        embeds = encoder(tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device)).text_embeds
        return torch.nn.functional.normalize(embeds.float(), dim=-1)

    @torch.no_grad()
    def decode(self, embedding: torch.Tensor, generator: torch.Generator, steps: int, guidance_scale: float,
               prompt: str = "") -> np.ndarray:
        """One image (uint8 HxWx3) from one image embedding (D,), rescaled to the encoder's norm."""
        embedding = embedding.reshape(1, -1).to(self.device, self.dtype)
        if self.kind == "karlo":
            output = self.pipeline(image_embeddings=embedding * self._embedding_scale(), decoder_num_inference_steps=steps,
                                   super_res_num_inference_steps=self.super_res_steps, generator=generator,
                                   decoder_guidance_scale=guidance_scale, output_type="np")
        else:
            output = self.pipeline(image_embeds=embedding * self._embedding_scale(), prompt=prompt,
                                   num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator,
                                   height=self.default_height, width=self.default_width, output_type="np")
        return np.clip(np.round(output.images[0] * 255.0), 0, 255).astype(np.uint8)

    def _embedding_scale(self) -> float:
        # Interpolated or edited embeddings are unit-norm; the decoder was trained on the encoder's
        # raw embeddings, whose norm we restore (the mean norm seen while encoding, else 1).
        return float(getattr(self, "_norm", 1.0))

    @torch.no_grad()
    def raw_norm(self, images: list[np.ndarray]) -> float:
        """Mean norm of the encoder's raw embeddings of ``images``; remembered for :meth:`decode`."""
        processor = self.pipeline.feature_extractor
        pixels = processor(images=[np.asarray(i) for i in images], return_tensors="pt").pixel_values
        embeds = self.image_encoder(pixels.to(self.device, self.image_encoder.dtype)).image_embeds.float()
        self._norm = float(embeds.norm(dim=-1).mean())
        return self._norm


# ----------------------------------------------------------------------------- tiny stand-ins


def _tiny_text_parts(weights_seed: int, with_projection: bool) -> tuple[Any, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from harness.models.clip_tokenizer import build_clip_tokenizer
    from harness.models.tiny import TINY_VOCABULARY

    tokenizer = build_clip_tokenizer(TINY_VOCABULARY, model_max_length=77)
    torch.manual_seed(weights_seed)
    config = CLIPTextConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, hidden_size=TINY_EMBEDDING, projection_dim=TINY_EMBEDDING,
                            intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=len(tokenizer), max_position_embeddings=77)
    encoder = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)
    return tokenizer, encoder.eval()


def _tiny_image_parts(weights_seed: int, image_size: int = 32) -> tuple[Any, Any]:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(weights_seed + 3)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=TINY_EMBEDDING, projection_dim=TINY_EMBEDDING, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, intermediate_size=37, patch_size=4))
    return CLIPImageProcessor(crop_size=image_size, size=image_size), encoder.eval()


def build_tiny_karlo(weights_seed: int = 0) -> Any:
    """A random ``UnCLIPImageVariationPipeline``: 32x32 decoder with text cross-attention, 64x64 super-res."""
    from diffusers import UnCLIPImageVariationPipeline, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    tokenizer, text_encoder = _tiny_text_parts(weights_seed, with_projection=True)
    feature_extractor, image_encoder = _tiny_image_parts(weights_seed)
    time_dim, cross_dim = 32, 100
    torch.manual_seed(weights_seed + 4)
    text_proj = UnCLIPTextProjModel(clip_embeddings_dim=TINY_EMBEDDING, time_embed_dim=time_dim * 4,
                                    cross_attention_dim=cross_dim)
    torch.manual_seed(weights_seed + 5)
    decoder = UNet2DConditionModel(
        sample_size=32, in_channels=3, out_channels=6,  # mean and variance
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(time_dim, time_dim * 2),
        layers_per_block=1, cross_attention_dim=cross_dim, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type="identity")
    super_res = {"sample_size": 64, "layers_per_block": 1,
                 "down_block_types": ("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
                 "up_block_types": ("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
                 "block_out_channels": (time_dim, time_dim * 2), "in_channels": 6, "out_channels": 3}
    torch.manual_seed(weights_seed + 6)
    super_res_first = UNet2DModel(**super_res)
    torch.manual_seed(weights_seed + 7)
    super_res_last = UNet2DModel(**super_res)
    pipeline = UnCLIPImageVariationPipeline(
        decoder=decoder.eval(), text_encoder=text_encoder, tokenizer=tokenizer, text_proj=text_proj.eval(),
        feature_extractor=feature_extractor, image_encoder=image_encoder, super_res_first=super_res_first.eval(),
        super_res_last=super_res_last.eval(),
        decoder_scheduler=UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon", num_train_timesteps=1000),
        super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon",
                                            num_train_timesteps=1000))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def build_tiny_sd21_unclip(weights_seed: int = 0) -> Any:
    """A random ``StableUnCLIPImg2ImgPipeline`` at 32x32 (v-prediction, noised image-embedding class input)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableUnCLIPImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    tokenizer, text_encoder = _tiny_text_parts(weights_seed, with_projection=False)
    feature_extractor, image_encoder = _tiny_image_parts(weights_seed)
    torch.manual_seed(weights_seed + 4)
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=TINY_EMBEDDING)
    torch.manual_seed(weights_seed + 5)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64), attention_head_dim=(2, 4),
        class_embed_type="projection", projection_class_embeddings_input_dim=TINY_EMBEDDING * 2,
        cross_attention_dim=TINY_EMBEDDING, layers_per_block=1, upcast_attention=True, use_linear_projection=True)
    torch.manual_seed(weights_seed + 6)
    vae = AutoencoderKL(block_out_channels=(32,), norm_num_groups=32, latent_channels=4)
    pipeline = StableUnCLIPImg2ImgPipeline(
        feature_extractor=feature_extractor, image_encoder=image_encoder, image_normalizer=normalizer.eval(),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"), tokenizer=tokenizer,
        text_encoder=text_encoder, unet=unet.eval(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1),
        vae=vae.eval())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# ----------------------------------------------------------------------------- loaders


def _kind(name: str) -> str:
    return "karlo" if "karlo" in name else "sd21_unclip"


def load_tiny_unclip(model_cfg: Any) -> UnCLIPModel:
    """``model=tiny_karlo`` / ``model=tiny_sd21_unclip``: random stand-ins built from config."""
    kind = _kind(model_cfg.name)
    pipeline = build_tiny_karlo(model_cfg.weights_seed) if kind == "karlo" else build_tiny_sd21_unclip(model_cfg.weights_seed)
    device, dtype = resolve_device(model_cfg.device, "float32" if model_cfg.dtype == "auto" else model_cfg.dtype)
    pipeline = pipeline.to(device)
    fingerprint = f"{model_cfg.name}-" + hashlib.sha256(json.dumps({"seed": model_cfg.weights_seed, "v": 1}).encode()).hexdigest()[:16]
    size = 64 if kind == "karlo" else 32
    return UnCLIPModel(model_cfg.name, pipeline, fingerprint, device, dtype, size, size, kind=kind, super_res_steps=2)


def load_unclip(model_cfg: Any) -> UnCLIPModel:
    """``model=karlo`` / ``model=sd21_unclip`` from ``model.path`` or the offline cache (never downloaded)."""
    import diffusers

    if model_cfg.name not in UNCLIP_MODELS:
        raise ConfigError(f"unknown unCLIP model {model_cfg.name!r}; known: {', '.join(UNCLIP_MODELS)}")
    model_id, class_name, size = UNCLIP_MODELS[model_cfg.name]
    model_id = model_cfg.model_id or model_id
    pipeline_class = getattr(diffusers, class_name)
    device, dtype = resolve_device(model_cfg.device, model_cfg.dtype)
    tried = []
    source = model_cfg.path or model_id
    if model_cfg.path:
        tried.append(str(Path(model_cfg.path).expanduser()))
    else:
        tried.append(f"Hugging Face cache {_hub_cache_dir()} (model id {model_id}, local_files_only=True)")
    try:
        pipeline = pipeline_class.from_pretrained(str(Path(source).expanduser()) if model_cfg.path else model_id,
                                                  dtype=dtype, local_files_only=True)
    except (OSError, ValueError):
        places = "\n".join(f"  - {place}" for place in tried)
        raise MissingWeightsError(
            f"Weights for model {model_cfg.name!r} ({model_id}, {class_name}) were not found. Looked in:\n{places}\n"
            f"Provide the weights in one of two ways: (1) on a machine with network access run "
            f"`huggingface-cli download {model_id}` and copy its cache folder here (HF_HUB_CACHE), or (2) save the "
            f"pipeline with `{class_name}.from_pretrained('{model_id}').save_pretrained(DIR)` and run with model.path=DIR."
        ) from None
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    fingerprint = f"{model_cfg.name}-" + hashlib.sha256(str(source).encode()).hexdigest()[:16]
    height = model_cfg.height or size
    return UnCLIPModel(model_cfg.name, pipeline, fingerprint, device, dtype, height, model_cfg.width or size,
                       kind=_kind(model_cfg.name))
