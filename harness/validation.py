"""Input checks shared by ``harness run`` and ``harness daam``: one clear message, before any work.

Each check raises a :class:`ConfigError` (a :class:`HarnessError`: the CLI prints the message
alone and exits with status 2) before a model runs or anything is written to the sample store:

- generation settings: ``steps >= 1``, ``guidance_scale >= 0``, ``batch_size >= 1``, positive
  ``height``/``width`` that are multiples of what the model needs (derived from its
  config by :func:`size_multiple`);
- prompts for the toy model: every word in the toy vocabulary (:func:`check_prompts`);
- images given by path: a readable image file (:func:`read_image`).

Light at import (no torch); the model-dependent checks read the loaded pipeline's configs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, DataError

#: Models whose text encoder knows only a closed vocabulary (checked word by word).
CLOSED_VOCABULARY_MODELS = ("toy", "toy_mmdit")


def check_generation(steps: Any = None, guidance_scale: Any = None, batch_size: Any = None,
                     prefix: str = "generation.") -> None:
    """The model-independent generation checks; ``None`` skips a value."""
    if steps is not None and int(steps) < 1:
        raise ConfigError(f"{prefix}steps={steps}: the number of denoising steps must be >= 1.")
    if guidance_scale is not None and float(guidance_scale) < 0:
        raise ConfigError(f"{prefix}guidance_scale={guidance_scale}: the guidance scale must be >= 0 "
                          "(1 = no classifier-free guidance).")
    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"{prefix}batch_size={batch_size}: the batch size must be >= 1.")


def size_multiple(pipeline: Any) -> int:
    """What image height and width must be a multiple of for this pipeline.

    The VAE shrinks the image by ``vae_scale_factor`` and the UNet halves the latent once per
    down block but the last, so both sizes must divide by ``vae_scale_factor * 2**(down blocks - 1)``
    for every attention map to tile the image exactly (8 * 8 = 64 for Stable Diffusion 1/2, 32 for
    SDXL, 8 for the toy and tiny_random models); diffusers' pipelines also refuse sizes that are
    not multiples of 8, so the answer is the least common multiple of both.
    """
    vae_factor = int(getattr(pipeline, "vae_scale_factor", 0) or 0)
    vae = getattr(pipeline, "vae", None)
    if not vae_factor and vae is not None:
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if getattr(pipeline, "unet", None) is None and getattr(pipeline, "transformer", None) is not None:
        return math.lcm(8, max(1, vae_factor or 1) * 2)  # SD3 patchifies 2x2 latents, Flux packs them 2x2
    unet = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    blocks = len(getattr(getattr(unet, "config", None), "down_block_types", None) or [None])
    return math.lcm(8, max(1, vae_factor or 1) * 2 ** max(0, blocks - 1))


def check_size(height: Any, width: Any, multiple: int, model: str = "the model", prefix: str = "generation.") -> None:
    """Positive sizes that are multiples of ``multiple``."""
    for key, value in (("height", height), ("width", width)):
        if value is None:
            continue
        if int(value) < 1 or int(value) % multiple:
            raise ConfigError(f"{prefix}{key}={value}: image sizes for {model} must be positive multiples of "
                              f"{multiple} (VAE scale factor x 2**(UNet down blocks - 1)); "
                              f"e.g. {max(multiple, round(int(value) / multiple) * multiple)}.")


def check_store(store: Any) -> None:
    """``store.arrays`` is one of :data:`harness.store.samples.ARRAYS_POLICIES`."""
    from harness.store.samples import ARRAYS_POLICIES

    policy = store.get("arrays", "keep") if hasattr(store, "get") else getattr(store, "arrays", "keep")
    if policy not in ARRAYS_POLICIES:
        raise ConfigError(f"store.arrays={policy}: say keep (per-sample arrays stay in the store) or drop "
                          "(removed once the run has scored its samples; images stay).")


def check_prompts(model: str, prompts: Iterable[tuple[str, str]]) -> None:
    """Every (where, prompt) in the closed vocabulary of ``model`` (the toy model); others pass."""
    if model not in CLOSED_VOCABULARY_MODELS:
        return
    from harness.errors import HarnessError
    from harness.toy.world import check_prompt_words

    for where, prompt in prompts:
        try:
            check_prompt_words(str(prompt or ""))
        except HarnessError as error:
            raise ConfigError(f"{where}: {error}") from None


def read_image(path: str | Path, key: str = "image") -> Any:
    """An RGB PIL image from ``path``; DataError naming the file when it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{key}={path}: no such file.")
    try:
        with Image.open(file) as pil:
            return pil.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"{key}={path}: not a readable image ({type(error).__name__}: {error}); "
                        "give a PNG or JPEG file.") from None


def check_config(cfg: Any) -> None:
    """The checks of a run config that need no model (``harness run`` makes them before building anything)."""
    gen = cfg.generation
    check_generation(gen.steps, gen.guidance_scale, gen.batch_size)
    for key in ("height", "width"):  # 0 would silently mean the model's default size
        value = gen.get(key) if hasattr(gen, "get") else getattr(gen, key, None)
        if value is not None and int(value) < 1:
            raise ConfigError(f"generation.{key}={value}: image sizes must be positive (null: the model's own size).")
    size = cfg.dataset.get("size") if hasattr(cfg.dataset, "get") else None
    if size is not None and int(size) < 1:
        raise ConfigError(f"dataset.size={size}: keep at least 1 record (null: the whole set).")


def validate_run(cfg: Any, model: Any, settings: Any, prompt_set: Any) -> None:
    """All checks of ``harness run``, after the model is loaded and before any sample is generated."""
    check_config(cfg)
    gen = cfg.generation
    pipeline = getattr(model, "pipeline", None)
    if pipeline is not None:
        check_size(settings.height, settings.width, size_multiple(pipeline), f"model={cfg.model.name}")
    texts = [(f"dataset record {record.id!r}", record.prompt) for record in prompt_set.records]
    texts.append(("generation.negative_prompt", gen.negative_prompt))
    method_prompt = cfg.method.get("prompt") if hasattr(cfg.method, "get") else None
    if isinstance(method_prompt, str):
        texts.append(("method.prompt", method_prompt))
    check_prompts(str(cfg.model.name), texts)
