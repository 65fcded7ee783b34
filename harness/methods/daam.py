"""``method=daam``: per-word attribution maps from cross-attention (DAAM, Tang et al., ACL 2023).

For every word asked, the conditional prompt's cross-attention probabilities of the word's
tokens are summed over time at each layer's native resolution, upsampled (bicubic) to the
latent grid, clamped at >= 0, averaged over (layer, head) and over the word's sub-tokens.
Defaults are those of the reference code (castorini/daam v0.2.0); every choice is in
:class:`harness.schemas.daam.DAAMConfig`.

Each sample holds the image, ``arrays["heatmap:<word>"]`` (float32, latent resolution, before
any thresholding), optionally ``arrays["heatmap_steps:<word>"]`` (one map per UNet call), and
``meta["words"]`` (the words mapped, in order). Two sources: images generated from the prompt
(:func:`generate_with_maps`) or a given image noised to chosen timesteps and denoised one step
with the caption (:func:`trace_image`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.attention import AttentionTracer, BatchLayout, prompt_words, word_token_positions
from harness.attention.capture import DEFAULT_LAYER_PATTERNS
from harness.attention.joint import JointAttentionTracer, encode_prompts, is_joint_model, text_axis
from harness.attention.words import TextAxis
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.methods.base import Method, to_uint8
from harness.store.samples import Sample

NORMALIZATIONS = ("none", "token_sum", "minmax")
UPSAMPLING = ("bicubic", "bilinear", "nearest")
WORD_SOURCES = ("nouns", "all")
SOURCES = ("generate", "image")


def tracer_options(cfg: Any) -> dict[str, Any]:
    """The :class:`AttentionTracer` arguments of a DAAM config."""
    return {
        "layers": list(cfg.layers),
        "exclude_layers": list(cfg.exclude_layers or []),
        "factors": None if cfg.factors is None else list(cfg.factors),
        "exclude_factors": list(cfg.exclude_factors or []),
        "heads": None if cfg.heads is None else list(cfg.heads),
        "step_window": None if cfg.step_window is None else list(cfg.step_window),
        "per_step": bool(cfg.per_timestep),
        "upsample": str(cfg.upsample),
        "clamp": bool(cfg.clamp),
    }


def validate_config(cfg: Any) -> None:
    """Refuse option values the schema's types cannot rule out."""
    checks = [("normalize", NORMALIZATIONS), ("upsample", UPSAMPLING), ("words_source", WORD_SOURCES), ("source", SOURCES)]
    for key, allowed in checks:
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"method.{key}={getattr(cfg, key)!r} is not one of {', '.join(allowed)}.")
    occurrence = str(cfg.occurrence)
    if occurrence not in ("merge", "first", "last") and not (occurrence.isdigit() and int(occurrence) >= 1):
        raise ConfigError(f"method.occurrence={occurrence!r}: use merge, first, last or a 1-based number.")


def joint_options(options: dict[str, Any]) -> dict[str, Any]:
    """The :class:`JointAttentionTracer` arguments from DAAM tracer options: the UNet's default layer
    patterns (down and up blocks) mean every joint layer; map-size factors do not apply (one patch grid)."""
    joint = {key: options[key] for key in ("exclude_layers", "heads", "step_window", "per_step", "upsample", "clamp")
             if key in options}
    layers = options.get("layers")
    joint["layers"] = None if layers is None or list(layers) in (list(DEFAULT_LAYER_PATTERNS), ["*"]) else list(layers)
    return joint


def word_mapper(pipeline: Any, prompts: Sequence[str]) -> Any:
    """What maps a prompt's words to the maps' text axis: the tokenizer (UNet models) or the
    declared joint text axis (SD3/Flux: CLIP and T5 positions, see :func:`harness.attention.joint.text_axis`)."""
    return text_axis(pipeline, list(prompts)) if is_joint_model(pipeline) else pipeline.tokenizer


def mapped_positions(mapper: Any, prompt: str, word: str, occurrence: str = "merge") -> list[int]:
    """Positions of ``word`` on the maps' text axis (see :func:`word_mapper`)."""
    if isinstance(mapper, TextAxis):
        return mapper.word_positions(prompt, word, occurrence)
    return word_token_positions(mapper, prompt, word, occurrence)


def pag_pipeline(pipeline: Any, applied_layers: Sequence[str]) -> Any:
    """diffusers' PAG counterpart of ``pipeline``, sharing its components (no copy of the weights)."""
    from diffusers import (
        StableDiffusion3PAGPipeline,
        StableDiffusionPAGPipeline,
        StableDiffusionXLPAGPipeline,
    )

    if hasattr(pipeline, "set_pag_applied_layers"):
        return pipeline
    name = type(pipeline).__name__
    pag_class = (StableDiffusion3PAGPipeline if "Diffusion3" in name else StableDiffusionXLPAGPipeline if "XL" in name
                 else StableDiffusionPAGPipeline)
    pag = pag_class.from_pipe(pipeline, pag_applied_layers=list(applied_layers))
    pag.set_progress_bar_config(disable=True)
    return pag


def generate_with_maps(pipeline: Any, prompts: list[str], generators: list[torch.Generator], *, steps: int,
                       guidance_scale: float, height: int, width: int, negative_prompt: str = "",
                       pag_scale: float = 0.0, options: dict[str, Any] | None = None) -> tuple[np.ndarray, AttentionTracer]:
    """Generate ``prompts`` while tracing; returns (images as floats in [0, 1], the finished tracer).

    The batch layout (which UNet rows are conditional) is read from the pipeline as it runs,
    so CFG on/off and CFG+PAG (a PAG pipeline with ``pag_scale > 0``) all work, for any batch size.
    """
    kwargs: dict[str, Any] = {}
    options = dict(options or {})
    if pag_scale > 0:
        if not hasattr(pipeline, "set_pag_applied_layers"):
            raise ConfigError("pag_scale > 0 needs a PAG pipeline (see pag_pipeline()).")
        kwargs["pag_scale"] = pag_scale
    if is_joint_model(pipeline):
        axis = text_axis(pipeline, prompts)
        tracer: AttentionTracer = JointAttentionTracer(pipeline, columns=axis.columns, **joint_options(options))
    else:
        options.setdefault("max_tokens", prompt_token_span(pipeline.tokenizer, prompts))
        tracer = AttentionTracer(pipeline, **options)
    if "Flux" in type(pipeline).__name__:  # guidance-distilled: no negative branch (true CFG is a separate call)
        negative_prompt = ""
    with tracer:
        output = pipeline(
            prompt=prompts,
            negative_prompt=[negative_prompt] * len(prompts) if negative_prompt else None,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            generator=generators,
            output_type="np",
            **kwargs,
        )
    return output.images, tracer


@torch.no_grad()
def trace_image(pipeline: Any, images: Sequence[np.ndarray], prompts: list[str], generators: list[torch.Generator], *,
                timesteps: Sequence[int], options: dict[str, Any] | None = None) -> AttentionTracer:
    """DAAM on given images: noise each to every timestep in ``timesteps``, denoise one step with its caption.

    ``images``: uint8 HxWx3 arrays (all the same size, a multiple of the VAE factor). The VAE
    posterior mean is used (deterministic); the noise comes from each image's generator, and
    the forward process is the model's own noise schedule (DDPM form of its scheduler config).
    Only the conditional branch is run: with no trajectory to steer, classifier-free guidance
    would add UNet rows that cannot change the conditional rows' attention. The returned tracer
    holds the maps summed over the timesteps.
    """
    from diffusers import DDPMScheduler

    if is_joint_model(pipeline):
        return trace_image_joint(pipeline, images, prompts, generators, timesteps=timesteps, options=options)
    if "XL" in type(pipeline).__name__ or getattr(pipeline, "text_encoder_2", None) is not None:
        raise ConfigError("DAAM on a given image supports SD 1.x/2.x-style pipelines (one text encoder); "
                          f"{type(pipeline).__name__} needs SDXL's added conditioning, which is not wired yet.")
    device = pipeline.unet.device
    dtype = pipeline.unet.dtype
    check_image_timesteps(pipeline, timesteps)
    pixels = np.stack([np.asarray(image, dtype=np.float32) / 127.5 - 1.0 for image in images])
    pixels = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device=device, dtype=dtype)
    latents = pipeline.vae.encode(pixels).latent_dist.mean * pipeline.vae.config.scaling_factor
    context, _ = pipeline.encode_prompt(prompts, device, 1, False)
    noising = DDPMScheduler.from_config(pipeline.scheduler.config)
    layout = BatchLayout.diffusers(cfg=False)
    options = dict(options or {})
    options.setdefault("max_tokens", prompt_token_span(pipeline.tokenizer, prompts))
    with AttentionTracer(pipeline.unet, layout=layout, **options) as tracer:
        for timestep in timesteps:
            noise = torch.stack([torch.randn(latents.shape[1:], generator=g, dtype=torch.float32) for g in generators])
            t = torch.tensor([int(timestep)] * len(prompts), dtype=torch.long)
            noisy = noising.add_noise(latents, noise.to(device=device, dtype=dtype), t.to(device))
            pipeline.unet(noisy, int(timestep), encoder_hidden_states=context)
    return tracer


def encode_images_joint(pipeline: Any, images: Sequence[np.ndarray]) -> torch.Tensor:
    """VAE latents of uint8 images as an SD3/Flux transformer takes them: posterior mean, shifted and
    scaled by the VAE's ``shift_factor`` / ``scaling_factor``, (images, 16, H/8, W/8)."""
    transformer = pipeline.transformer
    pixels = np.stack([np.asarray(image, dtype=np.float32) / 127.5 - 1.0 for image in images])
    pixels = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device=transformer.device, dtype=pipeline.vae.dtype)
    latents = pipeline.vae.encode(pixels).latent_dist.mean
    shift = pipeline.vae.config.shift_factor or 0.0
    return ((latents - shift) * pipeline.vae.config.scaling_factor).to(transformer.dtype)


def joint_denoiser_call(pipeline: Any, latents: torch.Tensor, sigma: float, context: torch.Tensor,
                        pooled: torch.Tensor, guidance: float = 3.5) -> Any:
    """One transformer evaluation of SD3 or Flux on latents (images, 16, h, w) at noise level ``sigma``.

    Flux's 2x2 packing and position ids are written here as its pipeline lays them out
    (``FluxPipeline._pack_latents`` / ``_prepare_latent_image_ids``, which are private)."""
    transformer = pipeline.transformer
    images = latents.shape[0]
    if "Flux" not in type(pipeline).__name__:
        timestep = torch.full((images,), sigma * 1000.0, device=latents.device, dtype=latents.dtype)
        return transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=context,
                           pooled_projections=pooled, return_dict=False)
    channels, height, width = latents.shape[1:]
    packed = latents.view(images, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    packed = packed.reshape(images, (height // 2) * (width // 2), channels * 4)
    ids = torch.zeros(height // 2, width // 2, 3, device=latents.device, dtype=latents.dtype)
    ids[..., 1] += torch.arange(height // 2, device=latents.device, dtype=latents.dtype)[:, None]
    ids[..., 2] += torch.arange(width // 2, device=latents.device, dtype=latents.dtype)[None, :]
    text_ids = torch.zeros(context.shape[1], 3, device=latents.device, dtype=latents.dtype)
    embedded = None
    if transformer.config.guidance_embeds:
        embedded = torch.full((images,), float(guidance), device=latents.device, dtype=torch.float32)
    timestep = torch.full((images,), sigma, device=latents.device, dtype=latents.dtype)
    return transformer(hidden_states=packed, timestep=timestep, guidance=embedded, pooled_projections=pooled,
                       encoder_hidden_states=context, txt_ids=text_ids, img_ids=ids.reshape(-1, 3), return_dict=False)


@torch.no_grad()
def check_image_timesteps(pipeline: Any, timesteps: Sequence[int]) -> None:
    """Given-image timesteps must be some, and each inside the scheduler's training range."""
    if not timesteps:
        raise ConfigError("image_timesteps is empty: give at least one timestep to noise the image to.")
    steps_total = int(pipeline.scheduler.config.num_train_timesteps)
    bad = [t for t in timesteps if not 0 <= int(t) < steps_total]
    if bad:
        raise ConfigError(f"image timesteps {bad} lie outside [0, {steps_total}).")


def trace_image_joint(pipeline: Any, images: Sequence[np.ndarray], prompts: list[str], generators: list[torch.Generator],
                      *, timesteps: Sequence[int], options: dict[str, Any] | None = None,
                      concepts: torch.Tensor | None = None, concept_layers: Sequence[str] | None = None) -> JointAttentionTracer:
    """Joint-attention maps (and concept maps) of given images: each is encoded, noised to every
    timestep in ``timesteps`` by the flow-matching forward process ``(1 - s) x + s noise`` with
    ``s = t / num_train_timesteps``, and passed once through the transformer with its caption
    (conditional branch only). The tracer's maps are summed over the timesteps."""
    check_image_timesteps(pipeline, timesteps)
    latents = encode_images_joint(pipeline, images)
    context, pooled = encode_prompts(pipeline, list(prompts), latents.device)
    axis = text_axis(pipeline, prompts)
    tracer = JointAttentionTracer(pipeline.transformer, columns=axis.columns, layout=BatchLayout.diffusers(cfg=False),
                                  concepts=concepts, concept_layers=concept_layers, **joint_options(dict(options or {})))
    with tracer:
        for timestep in timesteps:
            noise = torch.stack([torch.randn(latents.shape[1:], generator=g, dtype=torch.float32) for g in generators])
            sigma = int(timestep) / int(pipeline.scheduler.config.num_train_timesteps)
            noisy = (1.0 - sigma) * latents + sigma * noise.to(latents)
            joint_denoiser_call(pipeline, noisy, sigma, context, pooled)
    return tracer


def prompt_token_span(tokenizer: Any, prompts: Sequence[str]) -> int:
    """Text positions the maps must keep: start token, the longest prompt's tokens, end token."""
    longest = max(len(tokenizer(p, add_special_tokens=False, truncation=False)["input_ids"]) for p in prompts)
    return min(longest + 2, int(tokenizer.model_max_length))


def words_for(record: PromptRecord, cfg: Any) -> list[str]:
    """The words to map for ``record``: explicit ``cfg.words``, else its nouns, else every word."""
    if cfg.words:
        return [str(w) for w in cfg.words]
    nouns = record.meta.get("nouns") if isinstance(record.meta, dict) else None
    if cfg.words_source == "nouns" and nouns:
        return [str(n) for n in nouns]
    words = prompt_words(record.prompt)
    if not words:
        raise DataError(f"Record {record.id!r} has no words to map in its prompt {record.prompt!r}.")
    return list(dict.fromkeys(words))


def word_heat_maps(token_maps: torch.Tensor, tokenizer: Any, prompt: str, words: Sequence[str],
                   occurrence: str = "merge", normalize: str = "none") -> dict[str, np.ndarray]:
    """Per-word maps from one image's token maps ``(tokens, H, W)`` (or ``(steps, tokens, H, W)``).

    A word's map is the mean over its token positions (all sub-tokens; repeated words by
    ``occurrence``). ``normalize``: ``none``; ``token_sum`` divides every token map by the sum
    over the prompt's own tokens (start and padding tokens left out), as the reference's
    ``normalize=True``; ``minmax`` rescales each word map to [0, 1].
    """
    token_axis = token_maps.ndim - 3
    if normalize == "token_sum" and isinstance(tokenizer, TextAxis):
        own = torch.tensor(tokenizer.prompt_positions(prompt), device=token_maps.device)
        token_maps = token_maps / (token_maps.index_select(token_axis, own).sum(dim=token_axis, keepdim=True) + 1e-6)
    elif normalize == "token_sum":
        count = len(tokenizer(prompt, add_special_tokens=False, truncation=False)["input_ids"])
        count = min(count, int(tokenizer.model_max_length) - 2, token_maps.shape[token_axis] - 1)
        denominator = token_maps.narrow(token_axis, 1, count).sum(dim=token_axis, keepdim=True) + 1e-6
        token_maps = token_maps / denominator
    result: dict[str, np.ndarray] = {}
    for word in words:
        positions = mapped_positions(tokenizer, prompt, word, occurrence)
        if positions[-1] >= token_maps.shape[token_axis]:
            raise ConfigError(f"The word {word!r} is at token {positions[-1]}, beyond the {token_maps.shape[token_axis]} "
                              "token positions traced (max_tokens).")
        index = torch.tensor(positions, device=token_maps.device)
        heat = token_maps.index_select(token_axis, index).mean(dim=token_axis)
        if normalize == "minmax":
            low = heat.amin(dim=(-2, -1), keepdim=True)
            high = heat.amax(dim=(-2, -1), keepdim=True)
            heat = (heat - low) / (high - low + 1e-8)
        result[word] = heat.float().cpu().numpy().astype(np.float32)
    return result


class DAAM(Method):
    """DAAM heat maps for every word asked of each prompt (see module docstring)."""

    name = "daam"
    version = "1"

    def __init__(self, method_cfg: Any, model: Any, generation: Any) -> None:
        super().__init__(method_cfg, model, generation)
        validate_config(method_cfg)
        getattr(model, "check_daam", lambda: None)()  # models without a DAAM path refuse here (unCLIP)
        self._pag = None

    def extra_spec(self, record: PromptRecord) -> dict[str, Any]:
        spec: dict[str, Any] = {"words": words_for(record, self.cfg)}
        if self.cfg.source == "image":
            spec["image"] = str(record.meta.get(self.cfg.image_key))
        return spec

    def save_figures(self, run_dir: str | Path, records: list[PromptRecord], samples: dict[str, Sample],
                     rows: Any = None) -> list[Path]:
        """Overlay figures (image + map per word) into ``<run_dir>/figures/`` (the run's figure hook)."""
        from harness.heatmaps import save_overlays

        return save_overlays(run_dir, records, samples)

    def _pipeline(self) -> Any:
        if self.cfg.pag_scale > 0:
            if self._pag is None:
                self._pag = pag_pipeline(self.model.pipeline, self.cfg.pag_applied_layers)
            return self._pag
        return self.model.pipeline

    def run_batch(self, records: list[PromptRecord], seeds: list[int]) -> list[Sample]:
        cfg, settings = self.cfg, self.generation
        pipeline = self.model.pipeline
        words = [words_for(record, cfg) for record in records]
        mapper = word_mapper(pipeline, [r.prompt for r in records])
        for record, asked in zip(records, words):  # fail on a bad word before any generation
            for word in asked:
                mapped_positions(mapper, record.prompt, word, str(cfg.occurrence))
        started = time.perf_counter()
        options = tracer_options(cfg)
        if cfg.source == "image":
            images = [load_image(record, cfg.image_key, settings.height, settings.width) for record in records]
            tracer = trace_image(pipeline, images, [r.prompt for r in records], self.generators(seeds),
                                 timesteps=list(cfg.image_timesteps), options=options)
            unet_calls = len(cfg.image_timesteps) * tracer.branches
        else:
            floats, tracer = generate_with_maps(
                self._pipeline(), [r.prompt for r in records], self.generators(seeds), steps=settings.steps,
                guidance_scale=settings.guidance_scale, height=settings.height, width=settings.width,
                negative_prompt=settings.negative_prompt, pag_scale=float(cfg.pag_scale), options=options)
            images = to_uint8(floats)
            unet_calls = (tracer.call_index + 1) * tracer.branches
        token_maps = tracer.token_maps()
        step_maps = torch.stack(tracer.steps.maps, dim=1) if cfg.per_timestep and tracer.steps.maps else None
        seconds = (time.perf_counter() - started) / len(records)
        layers = tracer.layers_used()
        samples = []
        for index, (record, asked) in enumerate(zip(records, words)):
            maps = word_heat_maps(token_maps[index], mapper, record.prompt, asked, str(cfg.occurrence), cfg.normalize)
            arrays = {f"heatmap:{word}": heat for word, heat in maps.items()}
            meta: dict[str, Any] = {
                "words": list(asked),
                "token_positions": {w: mapped_positions(mapper, record.prompt, w, str(cfg.occurrence)) for w in asked},
                "latent_size": list(tracer.latent_size),
                "layers": [layer["name"] for layer in layers],
                "seconds": seconds,
                "unet_calls": unet_calls,
            }
            if step_maps is not None:
                per_step = word_heat_maps(step_maps[index], mapper, record.prompt, asked, str(cfg.occurrence), cfg.normalize)
                arrays.update({f"heatmap_steps:{word}": heat for word, heat in per_step.items()})
                meta["step_timesteps"] = list(tracer.steps.timesteps)
            samples.append(Sample(image=images[index], arrays=arrays, meta=meta))
        return samples


def load_image(record: PromptRecord, key: str, height: int, width: int) -> np.ndarray:
    """The record's image (``record.meta[key]``, a path) as uint8 RGB at ``height`` x ``width``."""
    from PIL import Image

    path = record.meta.get(key) if isinstance(record.meta, dict) else None
    if not path:
        raise DataError(f"Record {record.id!r} has no meta[{key!r}] image path, which method.source=image needs.")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"The image {path} of record {record.id!r} does not exist.")
    with Image.open(path) as pil:
        return np.asarray(pil.convert("RGB").resize((width, height), Image.Resampling.BICUBIC))
