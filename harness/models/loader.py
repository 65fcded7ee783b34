"""Load a diffusers pipeline from ``model=<name>``: built in, a local folder, or the offline cache.

Nothing is ever downloaded: real weights come from ``model.path`` (a folder written by
``save_pretrained``) or from the Hugging Face cache with ``local_files_only=True``. When they
are missing, one :class:`MissingWeightsError` names the model, every place looked in, and how
to provide the weights.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness import REPO_ROOT
from harness.attention.swap import resolve_unet
from harness.errors import ConfigError, MissingWeightsError
from harness.registry import MODELS

log = logging.getLogger(__name__)

# Never reach for the network at run time, whatever the caller's environment says.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass(frozen=True)
class ModelSpec:
    """A real model the harness knows by name."""

    model_id: str
    pipeline_class: str = "StableDiffusionPipeline"
    height: int = 512
    width: int = 512
    local_dir: str | None = None  #: shipped with the repo (relative to its root)


KNOWN_MODELS: dict[str, ModelSpec] = {
    "sd15": ModelSpec("stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "sd2_base": ModelSpec("stabilityai/stable-diffusion-2-base"),
    "sd21_base": ModelSpec("stabilityai/stable-diffusion-2-1-base"),
    "sdxl_base": ModelSpec("stabilityai/stable-diffusion-xl-base-1.0", "StableDiffusionXLPipeline", 1024, 1024),
    "toy": ModelSpec("harness/toy", local_dir="weights/toy", height=32, width=32),
    # World v1's model under its own name, so v1 figures stay reproducible once `toy` moves to v2.
    "toy_v1": ModelSpec("harness/toy", local_dir="weights/toy", height=32, width=32),
    # multi-modal diffusion transformers (joint attention; see harness.models.mmdit_standins)
    "sd3_medium": ModelSpec("stabilityai/stable-diffusion-3-medium-diffusers", "StableDiffusion3Pipeline", 1024, 1024),
    "sd35_medium": ModelSpec("stabilityai/stable-diffusion-3.5-medium", "StableDiffusion3Pipeline", 1024, 1024),
    "flux_schnell": ModelSpec("black-forest-labs/FLUX.1-schnell", "FluxPipeline", 1024, 1024),
    "flux_dev": ModelSpec("black-forest-labs/FLUX.1-dev", "FluxPipeline", 1024, 1024),
    "toy_mmdit": ModelSpec("harness/toy_mmdit", "StableDiffusion3Pipeline", 32, 32, local_dir="weights/toy_mmdit"),
}

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm_solver": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
}


@dataclass
class LoadedModel:
    """A pipeline with what identifies it (for content addresses and result rows)."""

    name: str
    pipeline: Any
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    default_height: int
    default_width: int

    def identity(self) -> dict[str, Any]:
        """What decides this model's outputs, for sample keys: weights' content, scheduler, dtype and
        the versions of the libraries that compute them (an upgrade regenerates; see
        :mod:`harness.store.identity`)."""
        from harness.store.identity import numerics_versions

        scheduler = type(self.pipeline.scheduler).__name__
        return {"model": self.name, "fingerprint": self.fingerprint, "scheduler": scheduler, "dtype": str(self.dtype),
                "libraries": numerics_versions()}


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """CUDA with float16 when available, else CPU with float32; either may be overridden."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model.device={device} was asked for, but CUDA is not available here. Use model.device=cpu.")
    if dtype == "auto":
        torch_dtype = torch.float16 if resolved.type == "cuda" else torch.float32
    else:
        try:
            torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
        except KeyError:
            raise ConfigError(f"model.dtype={dtype!r} is not one of auto, float32, float16, bfloat16") from None
    return resolved, torch_dtype


def load_model(model_cfg: Any) -> LoadedModel:
    """Load the pipeline described by a :class:`harness.config.ModelConfig`."""
    loader = MODELS.get(model_cfg.name)
    return loader(model_cfg)


def load_tiny_random(model_cfg: Any) -> LoadedModel:
    """``model=tiny_random``: built from config with seeded random weights."""
    from omegaconf import OmegaConf

    from harness.models.tiny import build_tiny_random, tiny_fingerprint

    # plain lists and dicts: the fingerprint is JSON of it (a ListConfig from an override is not JSON)
    architecture = OmegaConf.to_container(OmegaConf.create(dict(model_cfg.architecture or {})), resolve=True)
    try:
        pipeline = build_tiny_random(architecture, model_cfg.weights_seed)
    except ValueError as error:
        raise ConfigError(f"model.architecture: {error}") from None
    device, dtype = resolve_device(model_cfg.device, model_cfg.dtype)
    pipeline = _finish(pipeline, model_cfg, device, dtype)
    fingerprint = "tiny_random-" + tiny_fingerprint(architecture, model_cfg.weights_seed)
    return LoadedModel("tiny_random", pipeline, fingerprint, device, dtype, model_cfg.height or 32, model_cfg.width or 32)


#: in-process narrowed MMDiT stand-ins for smoke runs: name -> stand-in (see harness.models.mmdit_standins)
TINY_MMDIT = {"tiny_sd3": "sd3_medium", "tiny_flux": "flux_schnell"}


def load_tiny_mmdit(model_cfg: Any) -> LoadedModel:
    """``model=tiny_sd3`` / ``tiny_flux``: a narrowed random-weight SD3-medium / FLUX.1-schnell stand-in, built in process."""
    from harness.models.mmdit_standins import build_mmdit_standin

    standin = TINY_MMDIT[model_cfg.name]
    pipeline = _finish(build_mmdit_standin(standin, model_cfg.weights_seed, narrow=True), model_cfg,
                       *resolve_device(model_cfg.device, model_cfg.dtype))
    device, dtype = resolve_device(model_cfg.device, model_cfg.dtype)
    fingerprint = f"{model_cfg.name}-narrow-seed{model_cfg.weights_seed}"
    return LoadedModel(model_cfg.name, pipeline, fingerprint, device, dtype, model_cfg.height or 64, model_cfg.width or 64)


def load_pretrained(model_cfg: Any) -> LoadedModel:
    """A known real model (``sd15``, ``sd2_base``, ``toy``, ...) from a folder or the offline cache."""
    import diffusers

    spec = KNOWN_MODELS.get(model_cfg.name)
    if spec is None:  # a registered name without a spec: only model.path can say where it is
        spec = ModelSpec(model_cfg.model_id or model_cfg.name, "DiffusionPipeline")
    model_id = model_cfg.model_id or spec.model_id
    pipeline_class = getattr(diffusers, spec.pipeline_class)
    device, dtype = resolve_device(model_cfg.device, model_cfg.dtype)
    tried: list[str] = []
    source: str | None = None
    candidates: list[Path] = []
    if model_cfg.path:
        candidates.append(Path(model_cfg.path).expanduser())
    elif spec.local_dir:
        candidates.append(REPO_ROOT / spec.local_dir)
    pipeline = None
    for folder in candidates:
        tried.append(str(folder))
        if (folder / "model_index.json").is_file():
            pipeline = _from_pretrained(pipeline_class, str(folder), dtype, model_cfg.name, spec)
            source = str(folder)
            break
    if pipeline is None and not model_cfg.path and not spec.local_dir:
        cache = _hub_cache_dir()
        tried.append(f"Hugging Face cache {cache} (model id {model_id}, local_files_only=True)")
        snapshot = _hub_snapshot(model_id, cache)
        if snapshot is not None:
            pipeline = _from_pretrained(pipeline_class, str(snapshot), dtype, model_cfg.name, spec)
            source = f"hf-cache:{snapshot}"
    if pipeline is None:
        raise MissingWeightsError(_missing_message(model_cfg.name, model_id, tried, spec))
    pipeline = _finish(pipeline, model_cfg, device, dtype)
    fingerprint = f"{model_cfg.name}-{weights_fingerprint(source)}"
    height = model_cfg.height or spec.height
    width = model_cfg.width or spec.width
    return LoadedModel(model_cfg.name, pipeline, fingerprint, device, dtype, height, width)


def _from_pretrained(pipeline_class: Any, folder: str, dtype: torch.dtype, name: str,
                     spec: ModelSpec | None = None) -> Any:
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}  # diffusers >= 0.36: dtype, not torch_dtype
    if "StableDiffusionPipeline" == pipeline_class.__name__:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    kwargs.update(absent_components(pipeline_class, folder))
    try:
        return pipeline_class.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as error:
        raise MissingWeightsError(
            f"The pipeline folder {folder} for model {name!r} exists but could not be loaded: {error}. "
            "It must be a complete folder written by save_pretrained (model_index.json and every "
            "component's weights in safetensors)." + (f" {_restore_hint(spec)}" if spec and spec.local_dir else "")
        ) from None


#: components a pipeline runs without although diffusers does not list them as optional (SD3 without T5)
ABSENT_ALLOWED = {"StableDiffusion3Pipeline": ("text_encoder_3", "tokenizer_3")}


def absent_components(pipeline_class: Any, folder: str) -> dict[str, None]:
    """``{name: None}`` for the allowed components a folder's ``model_index.json`` leaves out or sets to null
    (an SD3 folder saved without T5, such as the toy MMDiT), so ``from_pretrained`` accepts the folder."""
    import json

    index_path = Path(folder) / "model_index.json"
    if not index_path.is_file():
        return {}
    index = json.loads(index_path.read_text())
    allowed = ABSENT_ALLOWED.get(pipeline_class.__name__, ())
    return {name: None for name in allowed if not index.get(name) or index[name][0] is None}


def _hub_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):  # read now, not at import: set by a caller after importing is honoured
        return os.environ["HF_HUB_CACHE"]
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub ships with diffusers
        return os.path.expanduser("~/.cache/huggingface/hub")


def _missing_message(name: str, model_id: str, tried: list[str], spec: ModelSpec) -> str:
    places = "\n".join(f"  - {place}" for place in tried)
    if spec.local_dir:
        how = _restore_hint(spec)
    else:
        how = (
            f"Provide the weights in one of two ways: (1) on a machine with network access run "
            f"`huggingface-cli download {model_id}` and copy its cache folder here (HF_HUB_CACHE), or "
            f"(2) save the pipeline with `{spec.pipeline_class}.from_pretrained('{model_id}').save_pretrained(DIR)` "
            f"and run with model.path=DIR."
        )
    return f"Weights for model {name!r} ({model_id}) were not found. Looked in:\n{places}\n{how}"


def _restore_hint(spec: ModelSpec) -> str:
    if spec.model_id == "harness/toy_mmdit":
        return (f"Train it with `python -m harness.toy.train_mmdit --components weights/toy --export {spec.local_dir}` "
                "(see harness/toy/train_mmdit.py), or give model.path=DIR.")
    return (f"Restore the shipped folder {spec.local_dir} (git checkout -- {spec.local_dir}) or retrain it "
            "with `make toy-model`.")


def _hub_snapshot(model_id: str, cache: str) -> Path | None:
    """The resolved snapshot folder (``snapshots/<commit>`` of the ``main`` ref) of ``model_id`` in
    the local cache, or None; never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def weights_fingerprint(source: str) -> str:
    """Identity of the weights a pipeline was loaded from: the snapshot commit of a Hugging Face
    cache entry (``hf-cache:<snapshot folder>``), else the SHA-256 of every file of the folder
    (memoised, see :class:`harness.store.identity.HashIndex`)."""
    from harness.store.identity import hub_snapshot_identity, weights_identity

    if source.startswith("hf-cache:"):
        return hub_snapshot_identity(source[len("hf-cache:"):])
    began = time.perf_counter()
    identity = weights_identity(source)
    log.debug("weights identity of %s in %.2f s", source, time.perf_counter() - began)
    return identity


def _finish(pipeline: Any, model_cfg: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if model_cfg.scheduler:
        pipeline.scheduler = make_scheduler(model_cfg.scheduler, pipeline.scheduler.config)
    pipeline = pipeline.to(device)
    if resolve_unet(pipeline).dtype != dtype:  # folders load in their own dtype; cast only when asked to
        pipeline = pipeline.to(dtype=dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def make_scheduler(name: str, config: Any) -> Any:
    """A scheduler by short name (``ddim``, ``dpm_solver``, ...) or diffusers class name, from ``config``."""
    import diffusers

    class_name = SCHEDULERS.get(name, name)
    scheduler_class = getattr(diffusers, class_name, None)
    if scheduler_class is None or not class_name.endswith("Scheduler"):
        known = ", ".join(sorted(SCHEDULERS))
        raise ConfigError(f"Unknown scheduler {name!r}. Known: {known} (or any diffusers *Scheduler class name).")
    return scheduler_class.from_config(config)

