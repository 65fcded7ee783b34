"""``harness daam "<prompt>" [key=value ...]``: a per-word heat-map method on one prompt.

    harness daam "a cat on a red chair" model=sd2_base seed=0 steps=30 guidance_scale=7.5 \\
        height=512 width=512 out=daam-out [words=cat,chair] [scheduler=dpm_solver] [model.path=DIR]
    harness daam "a cat on a red chair" model=sd2_base image=photo.jpg image_timesteps=250,500,750 out=DIR
    harness daam "a cat" model=toy layers=up_blocks.* normalize=minmax pag_scale=1.5 out=DIR
    harness daam "a cat on a red chair" model=flux_schnell steps=4 guidance_scale=0 out=DIR
    harness daam "a cat on a red chair" model=sd3_medium method=concept_attention concepts=cat,chair,background

Joint-attention models (sd3_medium, sd35_medium, flux_schnell, flux_dev, toy_mmdit) give word maps
from the image x text block of every joint attention (Flux's single-stream blocks included) with
the same options; ``method=concept_attention concepts=...`` gives ConceptAttention maps per
concept (output space, and the raw cross-attention variant).

This is the registered method (``method=daam`` by default; ``method=NAME`` for another method
whose samples carry ``heatmap:<word>`` arrays) run on one prompt through the same config,
validation and code as ``harness run``: every option of the method's schema is accepted
(``key=value`` or ``method.key=value``; lists as ``a,b`` or ``[a,b]``), and a misspelt one
stops with the closest match. Shorthands: ``model=NAME`` (or ``model.path=DIR``),
``scheduler=`` (``model.scheduler``), ``seed=`` (the generator seed itself), ``steps``,
``guidance_scale``, ``height``, ``width``, ``negative_prompt`` (``generation.*``), ``words=a,b``
(default: every word of the prompt), ``image=PATH`` (DAAM on a given image, noised to each of
``image_timesteps`` and denoised one step with the prompt), ``threshold=`` (of the overlay
figure only) and ``out=DIR``. Any other dotted key is a Hydra override (``model.device=cpu``).

Writes ``out/image.png``, ``out/heatmaps.npz`` (key = word; float maps at latent resolution,
before thresholding; ``heatmaps_steps.npz`` with ``per_timestep=true``), ``out/overlay.png`` and
``out/meta.json``. The noise comes from a CPU ``torch.Generator`` seeded with ``seed``, so the
image can be reproduced with diffusers alone: ``pipe(prompt, num_inference_steps=steps,
guidance_scale=g, height=h, width=w, generator=torch.Generator("cpu").manual_seed(seed))``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError

#: Options of the command itself (not of the run config).
OWN_OPTIONS = {"out": "daam-out", "threshold": 0.4, "image": None}
#: Shorthand -> the run-config key it sets.
SHORTHANDS = {"scheduler": "model.scheduler", "steps": "generation.steps",
              "guidance_scale": "generation.guidance_scale", "height": "generation.height",
              "width": "generation.width", "negative_prompt": "generation.negative_prompt", "seed": "seed"}
#: Default generation settings of the command (the reference ``daam`` command's).
DEFAULTS = ["generation.steps=30", "generation.guidance_scale=7.5", "figures=false"]
_PLAIN = re.compile(r"[\w.*/:+-]+")


def _quote(text: str) -> str:
    """A Hydra override value that stays the string ``text``."""
    if _PLAIN.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _value(text: str, listed: bool) -> str:
    """``a,b`` -> ``[a,b]`` (a list, not a Hydra sweep); quoted where needed."""
    if text.startswith("[") or text.startswith("'") or text.startswith('"'):
        return text
    if listed or "," in text:
        return "[" + ",".join(_quote(item.strip()) for item in text.split(",") if item.strip()) + "]"
    return _quote(text)


def parse_args(argv: list[str]) -> tuple[str, dict[str, Any], list[str], list[tuple[str, str]]]:
    """(prompt, the command's own options, run-config overrides, the method's options as
    (key, text)) from ``"<prompt>" key=value ...``."""
    prompt = None
    options = dict(OWN_OPTIONS)
    model: str | None = None
    model_path: str | None = None
    overrides: list[str] = []
    method_options: list[tuple[str, str]] = []
    for argument in argv:
        key, sep, value = argument.partition("=")
        if not sep:
            if prompt is not None:
                raise ConfigError(f"Two prompts given ({prompt!r} and {argument!r}); quote the prompt as one argument.")
            prompt = argument
            continue
        if key in OWN_OPTIONS:
            options[key] = value
        elif key == "model":
            model = value
        elif key == "method":
            overrides.append(f"method={value}")
        elif key in SHORTHANDS:
            overrides.append(f"{SHORTHANDS[key]}={_quote(value)}")
        elif key.startswith("method."):
            method_options.append((key.removeprefix("method."), value))
        elif "." in key:
            if key == "model.path":
                model_path = value
            overrides.append(f"{key}={value}")
        else:  # an option of the method (its schema checks the name and the type)
            method_options.append((key, value))
    if prompt is None or not prompt.strip():
        raise ConfigError('No prompt given: harness daam "<prompt>" model=NAME [key=value ...]')
    if model is None:
        model = _model_of_folder(model_path)
    if options["image"]:
        overrides.append("method.source=image")
    options["threshold"] = _number("threshold", options["threshold"])
    method = [o for o in overrides if o.startswith("method=")] or ["method=daam"]
    rest = [o for o in overrides if not o.startswith("method=")]
    return prompt, options, [f"model={model}", *method[-1:], *DEFAULTS, *rest], method_options


def _number(key: str, text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={text!r} is not a number.") from None


def _model_of_folder(path: str | None) -> str:
    if not path:
        raise ConfigError("Say which model: model=NAME (tiny_random, sd15, sd2_base, sd21_base, sdxl_base, toy) "
                          "or model.path=DIR (a save_pretrained folder).")
    index = Path(path).expanduser() / "model_index.json"
    class_name = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
    return "sdxl_base" if "XL" in class_name else "sd2_base"


def daam_config(argv: list[str]) -> tuple[str, dict[str, Any], Any]:
    """(prompt, the command's own options, the run config) of ``harness daam ARGV``, composed
    by :func:`harness.compose.compose` like ``harness run``'s."""
    import dataclasses

    from omegaconf import OmegaConf

    from harness.compose import compose, resolve_run_config

    prompt, options, overrides, method_options = parse_args(argv)
    # which of the method's options are lists (``layers=up_blocks.*`` is a list of one), from its schema
    schema = OmegaConf.get_type(compose(overrides).method)
    fields = {f.name: f for f in dataclasses.fields(schema)} if schema else {}
    listed = {name for name, f in fields.items() if "list" in str(f.type)}
    overrides += [f"method.{key}={_value(text, key in listed)}" for key, text in method_options]
    if "words_source" in fields and "words_source" not in dict(method_options) \
            and not any(o.startswith("method.words_source=") for o in overrides):
        overrides.append("method.words_source=all")  # default: every word of the prompt (DAAM's methods)
    return prompt, options, resolve_run_config(compose(overrides))


def run_daam(argv: list[str]) -> Path:
    """Do the work of :func:`main`; returns the output folder."""
    import numpy as np
    from omegaconf import OmegaConf
    from PIL import Image

    from harness.data.prompts import PromptRecord, PromptSet
    from harness.heatmaps import overlay_figure
    from harness.run import build_method
    from harness.validation import check_prompts, read_image

    prompt, options, cfg = daam_config(argv)
    words = list(cfg.method.get("words") or [])
    check_prompts(str(cfg.model.name), [("prompt", prompt), *(("words", word) for word in words)])
    meta: dict[str, Any] = {}
    if options["image"]:
        read_image(options["image"], key="image")  # a missing or unreadable file stops before the model loads
        meta[str(cfg.method.get("image_key", "image"))] = str(Path(options["image"]).expanduser())
    record = PromptRecord("prompt", prompt, int(cfg.seed), meta)
    method, settings = build_method(cfg, PromptSet("harness daam", [record]))
    sample = method.run_batch([record], [int(cfg.seed)])[0]  # the seed is the generator's own
    maps = {key.split(":", 1)[1]: value for key, value in sample.arrays.items() if key.startswith("heatmap:")}
    if not maps:
        raise ConfigError(f"method={cfg.method.name} gives no per-word heat maps (heatmap:<word> arrays); "
                          "harness daam needs a method that does (daam, ...).")
    out = Path(options["out"]).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample.image).save(out / "image.png")
    np.savez(out / "heatmaps.npz", **maps)
    # Other map families of the method, one file each: heatmap_steps:<word> -> heatmaps_steps.npz
    # (per_timestep=true), heatmap_cross:<concept> -> heatmaps_cross.npz (ConceptAttention's raw variant).
    families: dict[str, dict[str, Any]] = {}
    for key, value in sample.arrays.items():
        prefix, _, word = key.partition(":")
        if prefix.startswith("heatmap_") and word:
            families.setdefault(prefix.removeprefix("heatmap_"), {})[word] = value
    for family, family_maps in families.items():
        np.savez(out / f"heatmaps_{family}.npz", **family_maps)
    figure = overlay_figure(sample.image, maps, title=prompt, threshold=options["threshold"])
    figure.savefig(out / "overlay.png")
    pipeline = method.model.pipeline
    document = {
        "prompt": prompt, "words": list(maps), "model": method.model.identity(), "seed": int(cfg.seed),
        "steps": settings.steps, "guidance_scale": settings.guidance_scale, "height": settings.height,
        "width": settings.width, "scheduler": type(pipeline.scheduler).__name__,
        "method": OmegaConf.to_container(cfg.method, resolve=True), "image": options["image"],
        **{key: value for key, value in sample.meta.items() if key not in ("seconds",)},
    }
    (out / "meta.json").write_text(json.dumps(document, indent=1, default=str) + "\n")
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
