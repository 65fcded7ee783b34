"""``harness daam "<prompt>" [key=value ...]``: DAAM heat maps for one prompt, like the reference's ``daam`` command.

    harness daam "a cat on a red chair" model=sd2_base seed=0 steps=30 guidance_scale=7.5 \\
        height=512 width=512 out=daam-out [words=cat,chair] [scheduler=dpm_solver] [model.path=DIR]
    harness daam "a cat on a red chair" model=sd2_base image=photo.jpg image_timesteps=250,500,750 out=DIR
    harness daam "a cat on a red chair" model=flux_schnell steps=4 guidance_scale=0 out=DIR
    harness daam "a cat on a red chair" model=sd3_medium method=concept_attention concepts=cat,chair,background

Joint-attention models (sd3_medium, sd35_medium, flux_schnell, flux_dev, toy_mmdit) give word maps
from the image x text block of every joint attention (Flux's single-stream blocks included) with
the same options; ``method=concept_attention concepts=...`` writes ConceptAttention maps per
concept instead (``heatmaps.npz``, output space; ``heatmaps_cross.npz``, the raw cross-attention
variant), on the generated image or on ``image=PATH`` (noised to ``image_timesteps``).

Writes ``out/image.png``, ``out/heatmaps.npz`` (key = word; float maps at latent resolution,
before thresholding), ``out/overlay.png`` and ``out/meta.json``. The model folder's own
scheduler is used unless ``scheduler=`` is given; the noise comes from a CPU
``torch.Generator`` seeded with ``seed``, so the image can be reproduced with diffusers alone:
``pipe(prompt, num_inference_steps=steps, guidance_scale=g, height=h, width=w,
generator=torch.Generator("cpu").manual_seed(seed))``. With ``image=PATH`` the maps are those of
the given image (resized to height x width), noised to each of ``image_timesteps`` and denoised
one step with the prompt; ``steps`` and ``guidance_scale`` are then unused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError

#: key -> (type, default); DAAM options (layers, normalize, ...) are the method's config fields.
OPTIONS: dict[str, tuple[type, Any]] = {
    "model": (str, None),
    "model.path": (str, None),
    "model.device": (str, "auto"),
    "model.dtype": (str, "auto"),
    "scheduler": (str, None),
    "seed": (int, 0),
    "steps": (int, 30),
    "guidance_scale": (float, 7.5),
    "height": (int, None),
    "width": (int, None),
    "negative_prompt": (str, ""),
    "out": (str, "daam-out"),
    "words": (list, None),
    "threshold": (float, 0.4),
    "image": (str, None),
    "image_timesteps": (list, ["250", "500", "750"]),
    "method": (str, "daam"),
    "concepts": (list, None),
    "concept_layers": (list, None),
}
METHODS = ("daam", "concept_attention")
#: pipeline class in a folder's model_index.json -> the model name its loader takes
FOLDER_MODELS = {"StableDiffusion3Pipeline": "sd3_medium", "FluxPipeline": "flux_dev"}
DAAM_OPTIONS = {"layers": list, "exclude_layers": list, "factors": list, "exclude_factors": list, "heads": list,
                "step_window": list, "per_timestep": bool, "upsample": str, "clamp": bool, "normalize": str,
                "occurrence": str, "pag_scale": float}


def _convert(key: str, text: str, kind: type) -> Any:
    try:
        if kind is list:
            return [item.strip() for item in text.split(",") if item.strip()]
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not a valid {kind.__name__}.") from None


def parse_args(argv: list[str]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(prompt, options, DAAM config overrides) from ``"<prompt>" key=value ...``."""
    prompt = None
    options = {key: default for key, (_, default) in OPTIONS.items()}
    daam: dict[str, Any] = {}
    for argument in argv:
        key, sep, value = argument.partition("=")
        if not sep:
            if prompt is not None:
                raise ConfigError(f"Two prompts given ({prompt!r} and {argument!r}); quote the prompt as one argument.")
            prompt = argument
            continue
        key = key.removeprefix("method.")
        if key in OPTIONS:
            options[key] = _convert(key, value, OPTIONS[key][0])
        elif key in DAAM_OPTIONS:
            converted = _convert(key, value, DAAM_OPTIONS[key])
            if key in ("factors", "exclude_factors", "heads", "step_window"):
                converted = [int(_convert(key, item, int)) for item in converted]
            daam[key] = converted
        else:
            known = ", ".join(sorted(OPTIONS) + sorted(DAAM_OPTIONS))
            raise ConfigError(f"Unknown option {key!r}. Known: {known}.")
    if prompt is None or not prompt.strip():
        raise ConfigError('No prompt given: harness daam "<prompt>" model=NAME [key=value ...]')
    return prompt, options, daam


def _model_config(options: dict[str, Any]) -> Any:
    from omegaconf import OmegaConf

    from harness.config import ModelConfig

    name = options["model"]
    if name is None:
        if not options["model.path"]:
            raise ConfigError("Say which model: model=NAME (tiny_random, sd15, sd2_base, sd21_base, sdxl_base, toy) "
                              "or model.path=DIR (a save_pretrained folder).")
        index = Path(options["model.path"]).expanduser() / "model_index.json"
        class_name = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
        name = FOLDER_MODELS.get(class_name) or ("sdxl_base" if "XL" in class_name else "sd2_base")
    cfg = OmegaConf.structured(ModelConfig)
    cfg.name = name
    cfg.path = options["model.path"]
    cfg.scheduler = options["scheduler"]
    cfg.device = options["model.device"]
    cfg.dtype = options["model.dtype"]
    return cfg


def _read_image(path: str, height: int, width: int) -> Any:
    import numpy as np
    from PIL import Image

    from harness.validation import read_image

    return np.asarray(read_image(path).resize((width, height), Image.Resampling.BICUBIC))


def validate_options(prompt: str, options: dict[str, Any], model_name: str | None) -> None:
    """The checks that need no model: generation values, and the toy vocabulary for prompt and words."""
    from harness.validation import check_generation, check_prompts

    check_generation(options["steps"], options["guidance_scale"], prefix="")
    for key in ("height", "width"):
        if options[key] is not None and options[key] < 1:
            raise ConfigError(f"{key}={options[key]}: image sizes must be positive.")
    if model_name:
        check_prompts(model_name, [("prompt", prompt), ("negative_prompt", options["negative_prompt"]),
                                   *(("words", word) for word in options["words"] or [])])


def run_daam(argv: list[str]) -> Path:
    """Do the work of :func:`main`; returns the output folder."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from PIL import Image

    from harness.methods.base import to_uint8
    from harness.methods.daam import (
        generate_with_maps,
        pag_pipeline,
        trace_image,
        tracer_options,
        validate_config,
        word_heat_maps,
    )
    from harness.methods.daam_figures import overlay_figure
    from harness.models.loader import load_model
    from harness.schemas.daam import DAAMConfig
    from harness.validation import check_size, size_multiple

    prompt, options, overrides = parse_args(argv)
    if options["method"] not in METHODS:
        raise ConfigError(f"method={options['method']!r} is not one of {', '.join(METHODS)}.")
    if options["method"] == "concept_attention" and not options["concepts"]:
        raise ConfigError("method=concept_attention needs concepts=word,word,... (e.g. concepts=cat,background).")
    cfg = OmegaConf.structured(DAAMConfig)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    validate_config(cfg)
    model_cfg = _model_config(options)
    validate_options(prompt, options, str(model_cfg.name))
    timesteps = [int(_convert("image_timesteps", t, int)) for t in options["image_timesteps"]]
    model = load_model(model_cfg)
    getattr(model, "check_daam", lambda: None)()  # models without this DAAM path refuse here (unCLIP)
    pipeline = model.pipeline
    from harness.attention import prompt_words
    from harness.methods.daam import mapped_positions, word_mapper

    mapper = word_mapper(pipeline, [prompt])
    words = options["words"] or list(dict.fromkeys(prompt_words(prompt)))
    if options["method"] == "concept_attention":
        return _run_concepts(prompt, options, cfg, model, pipeline)
    for word in words:  # a word not in the prompt fails here, before any generation
        mapped_positions(mapper, prompt, word, str(cfg.occurrence))
    height = options["height"] or model.default_height
    width = options["width"] or model.default_width
    check_size(height, width, size_multiple(pipeline), f"model={model.name}", prefix="")
    image = _read_image(options["image"], height, width) if options["image"] else None  # before any generation
    if cfg.pag_scale > 0:
        pipeline = pag_pipeline(pipeline, cfg.pag_applied_layers)
    generator = torch.Generator(device="cpu").manual_seed(options["seed"])
    if image is not None:  # DAAM on a given image: noise it to each timestep, denoise one step with the prompt
        tracer = trace_image(pipeline, [image], [prompt], [generator], timesteps=timesteps, options=tracer_options(cfg))
    else:
        floats, tracer = generate_with_maps(pipeline, [prompt], [generator], steps=options["steps"],
                                            guidance_scale=options["guidance_scale"], height=height, width=width,
                                            negative_prompt=options["negative_prompt"], pag_scale=float(cfg.pag_scale),
                                            options=tracer_options(cfg))
        image = to_uint8(floats)[0]
    maps = word_heat_maps(tracer.token_maps()[0], mapper, prompt, words, str(cfg.occurrence), cfg.normalize)
    out = Path(options["out"]).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out / "image.png")
    np.savez(out / "heatmaps.npz", **maps)
    arrays = {}
    if cfg.per_timestep and tracer.steps.maps:
        steps = torch.stack(tracer.steps.maps, dim=1)[0]
        arrays = word_heat_maps(steps, mapper, prompt, words, str(cfg.occurrence), cfg.normalize)
        np.savez(out / "heatmaps_steps.npz", **arrays)
    figure = overlay_figure(image, maps, title=prompt, threshold=options["threshold"])
    figure.savefig(out / "overlay.png")
    meta = {
        "prompt": prompt, "words": words, "model": model.identity(), "seed": options["seed"], "steps": options["steps"],
        "guidance_scale": options["guidance_scale"], "height": height, "width": width,
        "scheduler": type(pipeline.scheduler).__name__, "latent_size": list(tracer.latent_size),
        "token_positions": {w: mapped_positions(mapper, prompt, w, str(cfg.occurrence)) for w in words},
        "daam": OmegaConf.to_container(cfg), "layers": tracer.layers_used(),
        "step_timesteps": tracer.steps.timesteps if arrays else None,
        "image": options["image"], "image_timesteps": options["image_timesteps"] if options["image"] else None,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return out


def _run_concepts(prompt: str, options: dict[str, Any], cfg: Any, model: Any, pipeline: Any) -> Path:
    """``method=concept_attention``: ConceptAttention maps of the generated (or given) image."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from PIL import Image

    from harness.attention.joint import concept_embeddings, is_joint_model
    from harness.methods.base import to_uint8
    from harness.methods.concept_attention import generate_with_concepts
    from harness.methods.daam import trace_image_joint
    from harness.methods.daam_figures import overlay_figure
    from harness.validation import check_size, size_multiple

    if not is_joint_model(pipeline):
        raise ConfigError(f"method=concept_attention needs a joint-attention model (sd3_medium, sd35_medium, "
                          f"flux_schnell, flux_dev, toy_mmdit); model={model.name} has none.")
    concepts = list(options["concepts"])
    height = options["height"] or model.default_height
    width = options["width"] or model.default_width
    check_size(height, width, size_multiple(pipeline), f"model={model.name}", prefix="")
    generator = torch.Generator(device="cpu").manual_seed(options["seed"])
    layers = options["concept_layers"]
    if options["image"]:
        image = _read_image(options["image"], height, width)
        timesteps = [int(_convert("image_timesteps", t, int)) for t in options["image_timesteps"]]
        tracer = trace_image_joint(pipeline, [image], [prompt], [generator], timesteps=timesteps, options={"layers": []},
                                   concepts=concept_embeddings(pipeline, concepts), concept_layers=layers)
    else:
        floats, tracer = generate_with_concepts(
            pipeline, [prompt], [generator], concepts, steps=options["steps"], guidance_scale=options["guidance_scale"],
            height=height, width=width, negative_prompt=options["negative_prompt"], concept_layers=layers,
            step_window=cfg.step_window, upsample=str(cfg.upsample), clamp=bool(cfg.clamp))
        image = to_uint8(floats)[0]
    maps = {c: m for c, m in zip(concepts, tracer.concept_maps("concept_attention")[0].numpy().astype(np.float32))}
    cross = {c: m for c, m in zip(concepts, tracer.concept_maps("cross_attention")[0].numpy().astype(np.float32))}
    out = Path(options["out"]).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out / "image.png")
    np.savez(out / "heatmaps.npz", **maps)
    np.savez(out / "heatmaps_cross.npz", **cross)
    overlay_figure(image, maps, title=prompt, threshold=options["threshold"]).savefig(out / "overlay.png")
    meta = {"prompt": prompt, "method": "concept_attention", "concepts": concepts, "model": model.identity(),
            "seed": options["seed"], "steps": options["steps"], "guidance_scale": options["guidance_scale"],
            "height": height, "width": width, "concept_layers": tracer.concept_layers,
            "latent_size": list(tracer.latent_size), "image": options["image"],
            "daam": OmegaConf.to_container(cfg)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return out


def main(argv: list[str]) -> int:
    """Entry point of ``harness daam``; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    try:
        out = run_daam(list(argv))
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    print(f"DAAM: {out}/image.png, {out}/heatmaps.npz, {out}/overlay.png")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
