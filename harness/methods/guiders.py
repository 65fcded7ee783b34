"""``method=guider``: any of diffusers' guider classes (``diffusers.guiders``) by name.

diffusers (>= 0.35) ships guidance methods as guider objects: ``ClassifierFreeGuidance``,
``PerturbedAttentionGuidance``, ``SmoothedEnergyGuidance``, ``SkipLayerGuidance``,
``AdaptiveProjectedGuidance``, ``AdaptiveProjectedMixGuidance``, ``ClassifierFreeZeroStarGuidance``,
``TangentialClassifierFreeGuidance``, ``FrequencyDecoupledGuidance``, ``AutoGuidance``,
``MagnitudeAwareGuidance``. The guider is built from ``method.guider`` and ``method.params``
(its own constructor arguments, passed through) with ``method.start`` / ``method.stop`` (the
guidance interval every guider has). Nothing of a guider is re-implemented here.

How a guider is driven, step by step, is diffusers' modular pipelines' denoise step
(``StableDiffusionXLLoopDenoiser``): ``set_state`` -> ``prepare_inputs`` (one batch per
branch: conditional, unconditional, perturbed ...) -> for each branch ``prepare_models`` (the
hook-based guiders put their attention / layer hooks on the UNet here), one UNet call,
``cleanup_models`` -> ``guider(branches).pred`` -> the scheduler step. diffusers has modular
pipelines for SDXL and SD3 but none for SD 1.x/2.x, so :func:`sample_with_guider` is that
denoise step inside the classic pipelines' sampling loop (their own ``encode_prompt``,
``prepare_latents``, scheduler and VAE), for ``StableDiffusionPipeline`` (SD 1.x/2.x, the toy
model, ``tiny_random``) and ``StableDiffusionXLPipeline``; tests pin it to diffusers' modular
SDXL pipeline for every guider and to the classic pipelines for CFG. SD3 runs through diffusers'
own modular SD3 pipeline. Other pipelines (Flux's is guidance-distilled and takes no guider,
unCLIP ...) stop with one error naming the model and the guider.

Hook-based guiders (PAG, SEG, SLG, AutoGuidance) need to know which transformer blocks to
perturb; on a UNet diffusers' ``fqn="auto"`` finds none, so ``method.layers`` names them as
``<module list>.<index>`` (default ``mid_block.attentions.0.transformer_blocks.0``: the
self-attention of the mid block, the PAG paper's layer) and becomes the guider's
``*_config`` argument unless ``method.params`` gives one.

Equal cost: ``method.budget_calls`` fixes the network calls per image; the steps are then the
most whose calls fit (:func:`steps_for_budget`, counted from the guider's own ``num_conditions``
at each step, so intervals are counted exactly). Every sample records ``unet_calls`` (measured
by a forward hook, as for the other guidance methods) and ``seconds``.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from omegaconf import OmegaConf

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.methods.base import GenerationSettings, to_uint8
from harness.methods.guidance import GuidedSampling, UNetCallCounter
from harness.models.loader import LoadedModel
from harness.store.samples import Sample

log = logging.getLogger(__name__)

#: The branch predictions a text-to-image UNet/transformer loop can give a guider: conditional,
#: unconditional and the conditional branch under the guider's own model hooks.
SUPPORTED_PREDICTIONS = frozenset({"pred_cond", "pred_uncond", "pred_cond_skip", "pred_cond_seg"})

#: The constructor argument that takes the layer configuration, per hook-based guider (diffusers'
#: ``LayerSkipConfig`` / ``SmoothedEnergyGuidanceConfig``, given as dicts).
LAYER_ARGUMENTS = {
    "PerturbedAttentionGuidance": ("perturbed_guidance_config", "perturbed_guidance_layers"),
    "SkipLayerGuidance": ("skip_layer_config", "skip_layer_guidance_layers"),
    "SmoothedEnergyGuidance": ("seg_guidance_config", "seg_guidance_layers"),
    "AutoGuidance": ("auto_guidance_config", "auto_guidance_layers"),
}


def available_guiders() -> dict[str, type]:
    """Every guider class of ``diffusers.guiders`` (name -> class)."""
    import diffusers.guiders as guiders

    base = guiders.BaseGuidance
    return {name: value for name, value in vars(guiders).items()
            if isinstance(value, type) and issubclass(value, base) and value is not base}


def guider_class(name: str) -> type:
    """The diffusers guider class called ``name``; unknown names get a "did you mean".

    ``SmoothedEnergyGuidance`` comes as :func:`counted_smoothed_energy_guidance` (diffusers 0.42.1's
    class, with the branch counter it forgets to keep)."""
    known = available_guiders()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"method.guider={name!r} is not a guider of diffusers.guiders.{hint} "
                          f"Known: {', '.join(sorted(known))}.")
    if name == "SmoothedEnergyGuidance":
        return counted_smoothed_energy_guidance()
    return known[name]


@functools.cache
def counted_smoothed_energy_guidance() -> type:
    """diffusers' ``SmoothedEnergyGuidance`` with the one line its ``prepare_models`` lacks.

    In diffusers 0.42.1 its ``prepare_models`` never increments ``_count_prepared`` (the base
    class and its siblings PAG and SLG do), so ``is_conditional`` never holds, the blur hook is
    never put on the UNet, the SEG branch equals the conditional one and SEG reduces to CFG at
    three branches' cost (pinned by a test). This subclass counts the branch as PAG's
    ``prepare_models`` does and leaves everything else to diffusers.
    """
    from diffusers.guiders import SmoothedEnergyGuidance

    class CountedSmoothedEnergyGuidance(SmoothedEnergyGuidance):
        def prepare_models(self, denoiser: torch.nn.Module) -> None:
            self._count_prepared += 1
            super().prepare_models(denoiser)

    CountedSmoothedEnergyGuidance.__name__ = CountedSmoothedEnergyGuidance.__qualname__ = "SmoothedEnergyGuidance"
    return CountedSmoothedEnergyGuidance


def layer_config(name: str, layers: list[str]) -> list[dict[str, Any]]:
    """``method.layers`` (``<module list>.<index>``) as the guider's layer-config dicts."""
    configs = []
    for layer in layers:
        fqn, _, index = str(layer).rpartition(".")
        if not fqn or not index.isdigit():
            raise ConfigError(f"method.layers entry {layer!r} must be '<module list>.<index>', e.g. "
                              "mid_block.attentions.0.transformer_blocks.0.")
        config = {"indices": [int(index)], "fqn": fqn}
        if name == "PerturbedAttentionGuidance":  # attention scores only (what PAG is); diffusers forces these
            config.update(skip_attention=False, skip_attention_scores=True, skip_ff=False)
        configs.append(config)
    return configs


def check_layers(unet: torch.nn.Module, layers: list[str], model_name: str) -> None:
    """Each ``method.layers`` entry must name a block of a ``ModuleList`` of the denoiser."""
    names = dict(unet.named_modules())
    candidates = sorted(n for n, m in names.items() if isinstance(m, torch.nn.ModuleList)
                        and n.endswith("transformer_blocks"))
    for layer in layers:
        fqn, _, index = str(layer).rpartition(".")
        module = names.get(fqn)
        if not isinstance(module, torch.nn.ModuleList) or not index.isdigit() or int(index) >= len(module):
            raise ConfigError(
                f"method.layers: {layer!r} is not a block of model {model_name!r}'s denoiser. Give "
                f"'<module list>.<index>'; transformer-block lists here: {', '.join(candidates) or 'none'}.")


def build_guider(name: str, params: dict[str, Any] | None = None, start: float = 0.0, stop: float = 1.0,
                 layers: list[str] | None = None, model_name: str = "") -> Any:
    """A diffusers guider from its class name and constructor arguments (checked before building)."""
    cls = guider_class(name)
    unsupported = set(cls._input_predictions) - SUPPORTED_PREDICTIONS
    if unsupported:
        model = f"model {model_name!r} cannot take the guider {name}: it " if model_name else f"method.guider={name} "
        raise ConfigError(f"{model}needs the predictions {sorted(unsupported)}, which only its own model family's "
                          "pipeline provides (not a text-to-image SD/SDXL/SD3 pipeline).")
    kwargs = dict(params or {})
    kwargs.setdefault("start", float(start))
    kwargs.setdefault("stop", float(stop))
    if name in LAYER_ARGUMENTS:
        config_argument, layers_argument = LAYER_ARGUMENTS[name]
        if config_argument not in kwargs and layers_argument not in kwargs:
            if not layers:
                raise ConfigError(f"method.guider={name} perturbs chosen layers: set method.layers "
                                  "(e.g. [mid_block.attentions.0.transformer_blocks.0]) or method.params."
                                  f"{config_argument}.")
            kwargs[config_argument] = layer_config(name, layers)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"method.params of {name}: {unknown} are not its arguments; it accepts {', '.join(accepted)}.")
    with _quiet_guider_warning():
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"method.guider={name} with {kwargs}: {error}") from None


#: Guiders handed (N, C, H*W) predictions instead of (N, C, H, W): diffusers 0.42.1's
#: ``mambo_guidance`` takes ``torch.norm`` over all non-batch dims, which torch refuses for three
#: dims (4-D UNet latents); over (C, H*W) it is the same Frobenius norm, and the guider is
#: otherwise elementwise, so its result is unchanged (tested).
FLATTEN_SPATIAL = frozenset({"MagnitudeAwareGuidance"})


def fresh(guider: Any) -> Any:
    """A new guider with the same configuration and no state."""
    with _quiet_guider_warning():
        return guider.new()


@contextlib.contextmanager
def _quiet_guider_warning() -> Iterator[None]:
    # Every guider constructor logs "Guiders are currently an experimental feature": once per
    # run is enough (the method logs the diffusers version in the rows' provenance anyway).
    from diffusers.utils import logging as diffusers_logging

    logger = diffusers_logging.get_logger("diffusers.guiders.guider_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def calls_per_image(guider: Any, steps: int, loop_length: Callable[[int], int] | None = None) -> int:
    """Network calls one image costs with ``guider`` over ``steps`` steps: the sum of the guider's
    ``num_conditions`` at each iteration of the denoising loop (its intervals included), read from
    the guider itself. ``loop_length(steps)``: the loop's real length when the scheduler's differs
    from ``steps`` (PNDM, SD 1.x/2.x's default, runs ``steps + 1`` iterations)."""
    probe = fresh(guider)
    iterations = loop_length(steps) if loop_length is not None else steps
    total = 0
    for step in range(iterations):
        probe.set_state(step=step, num_inference_steps=iterations, timestep=torch.tensor(0))
        total += int(probe.num_conditions)
    return total


def steps_for_budget(guider: Any, budget_calls: int, loop_length: Callable[[int], int] | None = None) -> int:
    """The declared equal-cost rule: the most steps whose network calls per image fit the budget.

    So a guider with three branches per step gets a third of the budget's calls as steps, one
    with two branches half, and guidance confined to an interval buys back steps outside it.
    """
    if budget_calls < 1:
        raise ConfigError(f"method.budget_calls must be >= 1, not {budget_calls}.")
    steps = 0
    while calls_per_image(guider, steps + 1, loop_length) <= budget_calls:
        steps += 1
        if steps > budget_calls:  # every step costs at least one call
            break
    if steps == 0:
        raise ConfigError(f"method.budget_calls={budget_calls} does not buy one step of {type(guider).__name__} "
                          f"({calls_per_image(guider, 1, loop_length)} calls).")
    return steps


def schedule_length(scheduler: Any) -> Callable[[int], int]:
    """``steps -> iterations`` of the denoising loop with this scheduler (set on a copy)."""
    import copy

    def length(steps: int) -> int:
        probe = copy.deepcopy(scheduler)
        probe.set_timesteps(steps)
        return len(probe.timesteps)

    return length


@contextlib.contextmanager
def removed_hooks(module: torch.nn.Module) -> Iterator[None]:
    """Remove every diffusers hook added inside the block, also when sampling fails (a guider's
    ``cleanup_models`` only runs after a finished branch)."""
    from diffusers.hooks import HookRegistry

    def present() -> dict[int, set[str]]:
        found = {}
        for sub in module.modules():
            registry = getattr(sub, "_diffusers_hook", None)
            if isinstance(registry, HookRegistry):
                found[id(sub)] = set(registry.hooks)
        return found

    before = present()
    try:
        yield
    finally:
        for sub in module.modules():
            registry = getattr(sub, "_diffusers_hook", None)
            if isinstance(registry, HookRegistry):
                for name in set(registry.hooks) - before.get(id(sub), set()):
                    registry.remove_hook(name, recurse=False)


def preflight_hooks(guider: Any, denoiser: torch.nn.Module, model_name: str, pipeline_name: str) -> None:
    """Put the guider's hooks on the denoiser and take them off again, branch by branch, at a step
    inside its interval, before any sample: a denoiser whose attention diffusers' hooks cannot
    take (SD3's joint attention for the layer-skip guiders in 0.42.1) stops with one error."""
    probe = fresh(guider)

    def branches(step: int) -> int:
        probe.set_state(step=step, num_inference_steps=100, timestep=torch.tensor(500))
        return int(probe.num_conditions)

    busiest = max(range(100), key=branches)  # a step where every branch of the guider is on
    branches(busiest)
    try:
        with removed_hooks(denoiser):
            for _ in range(probe.num_conditions):
                probe.prepare_models(denoiser)
                probe.cleanup_models(denoiser)
    except ValueError as error:
        raise ConfigError(f"model {model_name!r} ({pipeline_name}) cannot take the guider {type(guider).__name__} "
                          f"with these layers: diffusers' hooks refuse them ({error}).") from None


def pipeline_family(pipeline: Any) -> str:
    """``sd`` | ``sdxl`` | ``sd3`` | ``other`` (which guider path a pipeline takes)."""
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    if isinstance(pipeline, StableDiffusionXLPipeline):
        return "sdxl"
    if isinstance(pipeline, StableDiffusionPipeline):
        return "sd"
    if isinstance(pipeline, StableDiffusion3Pipeline):
        return "sd3"
    return "other"


def check_supported(pipeline: Any, model_name: str, guider_name: str) -> str:
    """The pipeline's family, or one clear error naming the model and the guider."""
    family = pipeline_family(pipeline)
    if family == "other":
        kind = type(pipeline).__name__
        why = (" (Flux is guidance-distilled: diffusers' Flux pipelines take no guider)" if "Flux" in kind else "")
        raise ConfigError(f"model {model_name!r} ({kind}) cannot take the guider {guider_name}{why}. Guiders run on "
                          "Stable Diffusion 1.x/2.x, SDXL and SD3 pipelines (and the toy and tiny_random models).")
    return family


# ---------------------------------------------------------------------------------------------
# The sampling loop (SD 1.x/2.x and SDXL)
# ---------------------------------------------------------------------------------------------


def _conditioning(pipeline: Any, family: str, prompts: list[str], negative: list[str] | None,
                  height: int, width: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The (conditional, unconditional) inputs of the UNet, as the guider's ``prepare_inputs`` takes them."""
    device = pipeline.device
    if family == "sdxl":
        embeds, negative_embeds, pooled, negative_pooled = pipeline.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True,
            negative_prompt=negative)
        # SDXL's micro-conditioning with the pipeline defaults: original size = target size =
        # (height, width), crop (0, 0); the negative branch gets the same ids.
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=embeds.dtype, device=device)
        time_ids = time_ids.repeat(len(prompts), 1)
        return {"prompt_embeds": (embeds, negative_embeds), "time_ids": (time_ids, time_ids),
                "text_embeds": (pooled, negative_pooled)}
    embeds, negative_embeds = pipeline.encode_prompt(prompts, device, 1, True, negative)
    return {"prompt_embeds": (embeds, negative_embeds)}


@torch.no_grad()
def sample_with_guider(pipeline: Any, guider: Any, prompts: list[str], negative_prompts: list[str] | None,
                       steps: int, height: int, width: int, generators: list[torch.Generator],
                       on_step_end: Callable[[int], None] | None = None, decode_latents: bool = True) -> Any:
    """Images (N, H, W, 3) floats in [0, 1] from an SD 1.x/2.x or SDXL pipeline driven by ``guider``.

    The classic pipelines' own pieces (prompt encoding, latents, scheduler, VAE decoding) around
    the modular pipelines' guider step (see the module docstring). ``on_step_end(step)`` is
    called after each scheduler step (the bench times steps with it); ``decode_latents=False``
    returns the final latents.
    """
    family = pipeline_family(pipeline)
    device = pipeline.device
    unet, scheduler = pipeline.unet, pipeline.scheduler
    inputs = _conditioning(pipeline, family, prompts, negative_prompts, height, width)
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    latents = pipeline.prepare_latents(len(prompts), unet.config.in_channels, height, width,
                                       inputs["prompt_embeds"][0].dtype, device, generators, None)
    extra_step_kwargs = pipeline.prepare_extra_step_kwargs(generators, 0.0)
    guider = fresh(guider)  # fresh state (APG's momentum buffer) for every batch
    flatten = type(guider).__name__ in FLATTEN_SPATIAL
    with removed_hooks(unet):
        for i, t in enumerate(timesteps):
            scaled = scheduler.scale_model_input(latents, t)
            guider.set_state(step=i, num_inference_steps=len(timesteps), timestep=t)
            branches = guider.prepare_inputs(inputs)
            for branch in branches:
                guider.prepare_models(unet)
                added = ({"text_embeds": branch.text_embeds, "time_ids": branch.time_ids}
                         if family == "sdxl" else None)
                branch.noise_pred = unet(scaled, t, encoder_hidden_states=branch.prompt_embeds,
                                         added_cond_kwargs=added, return_dict=False)[0]
                if flatten:
                    branch.noise_pred = branch.noise_pred.flatten(2)
                guider.cleanup_models(unet)
            noise_pred = guider(branches)[0].reshape(latents.shape)
            latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
            if on_step_end is not None:
                on_step_end(i)
    return decode(pipeline, latents) if decode_latents else latents


def decode(pipeline: Any, latents: torch.Tensor) -> Any:
    """Latents -> images (N, H, W, 3) in [0, 1], as the classic pipelines decode (SDXL's latent
    mean/std when its VAE declares them)."""
    vae = pipeline.vae
    latents = latents.to(vae.dtype)
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    image = vae.decode(latents, return_dict=False)[0]
    return pipeline.image_processor.postprocess(image, output_type="np")


def sample_with_modular_pipeline(pipeline: Any, guider: Any, prompts: list[str], negative_prompts: list[str] | None,
                                 steps: int, height: int, width: int, generators: list[torch.Generator]) -> Any:
    """SD3: diffusers' own modular pipeline with the guider (components taken from ``pipeline``)."""
    from diffusers.modular_pipelines import StableDiffusion3AutoBlocks

    modular = StableDiffusion3AutoBlocks().init_pipeline()
    components = {name: value for name, value in pipeline.components.items() if value is not None}
    modular.update_components(**components, guider=fresh(guider))
    kwargs = {"negative_prompt": negative_prompts} if negative_prompts else {}
    images = modular(prompt=prompts, num_inference_steps=steps, height=height, width=width, generator=generators,
                     output_type="np", output="images", **kwargs)
    return images


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------


class GuiderSampling(GuidedSampling):
    """``method=guider``: text-to-image sampling guided by a diffusers guider (see the module docstring)."""

    name: ClassVar[str] = "guider"
    version: ClassVar[str] = "1"
    uses_cfg: ClassVar[bool] = True

    def __init__(self, method_cfg: Any, model: LoadedModel, generation: GenerationSettings) -> None:
        super().__init__(method_cfg, model, generation)
        self.guider_name = str(method_cfg.guider)
        self.family = check_supported(model.pipeline, model.name, self.guider_name)
        params = method_cfg.params
        params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params or {})
        # The CFG scale: the guider's own guidance_scale when given, else generation.guidance_scale,
        # and the rows' hp.guidance_scale says which one was used.
        accepted = inspect.signature(guider_class(self.guider_name).__init__).parameters
        if "guidance_scale" in accepted:
            params.setdefault("guidance_scale", float(generation.guidance_scale))
            generation.guidance_scale = float(params["guidance_scale"])
        layers = [str(layer) for layer in (method_cfg.layers or [])]
        if self.guider_name in LAYER_ARGUMENTS and layers and not set(LAYER_ARGUMENTS[self.guider_name]) & set(params):
            denoiser = model.pipeline.transformer if self.family == "sd3" else model.pipeline.unet
            check_layers(denoiser, layers, model.name)  # SD3: e.g. method.layers=[transformer_blocks.7]
        self.guider = build_guider(self.guider_name, params, float(method_cfg.start), float(method_cfg.stop), layers,
                                   model.name)
        denoiser = model.pipeline.transformer if self.family == "sd3" else model.pipeline.unet
        preflight_hooks(self.guider, denoiser, model.name, type(model.pipeline).__name__)
        loop_length = schedule_length(model.pipeline.scheduler) if self.family in ("sd", "sdxl") else None
        budget = method_cfg.budget_calls
        if budget is not None:
            # The declared equal-cost rule; the rows' hp.steps then say the steps really used.
            generation.steps = steps_for_budget(self.guider, int(budget), loop_length)
        self.expected_calls = calls_per_image(self.guider, generation.steps, loop_length)
        log.info("guider %s: %d steps, %d network calls per image", self.guider_name, generation.steps,
                 self.expected_calls)

    def extra_spec(self, record: PromptRecord) -> dict[str, Any]:
        # A guider class the harness amends (SEG's counter) is another cache entry than diffusers' own.
        return {"guider_amended": "count_prepared"} if self.guider_name == "SmoothedEnergyGuidance" else {}

    @torch.no_grad()
    def run_batch(self, records: list[PromptRecord], seeds: list[int]) -> list[Sample]:
        settings = self.generation
        pipeline = self.pipeline
        prompts = [self.prompt_of(r) for r in records]
        negative = [settings.negative_prompt] * len(records) if settings.negative_prompt else None
        sample = sample_with_modular_pipeline if self.family == "sd3" else sample_with_guider
        denoiser = pipeline.transformer if self.family == "sd3" else pipeline.unet
        with UNetCallCounter(denoiser) as counter:
            started = time.perf_counter()
            images = sample(pipeline, self.guider, prompts, negative, settings.steps, settings.height, settings.width,
                            self.generators(seeds))
            seconds = (time.perf_counter() - started) / len(records)
        meta = {"seconds": seconds, "unet_calls": counter.per_image(len(records)),
                "guidance_scale": settings.guidance_scale, "guider": self.guider_name}
        return [Sample(image=image, meta={**meta, "prompt_used": prompt})
                for prompt, image in zip(prompts, to_uint8(images), strict=True)]


__all__ = ["GuiderSampling", "available_guiders", "build_guider", "calls_per_image", "guider_class",
           "sample_with_guider", "steps_for_budget"]
