"""Guidance methods ``plain``, ``cfg``, ``pag`` and ``cfg_pag`` behind one interface.

PAG (Ahn et al., "Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance",
ECCV 2024) runs through diffusers' own PAG pipelines
(``AutoPipelineForText2Image.from_pipe(pipeline, enable_pag=True)``, i.e.
``StableDiffusionPAGPipeline`` for SD 1.x/2.x), with ``pag_scale``, ``pag_adaptive_scale`` and
``pag_applied_layers`` passed straight through; ``plain`` and ``cfg`` call the model's own
pipeline. Nothing of the sampling loop is rewritten here.

What diffusers lacks is added in its own style:

* the paper's ablation perturbations of the self-attention map (``random_mask``,
  ``additive_noise``, ``off_diagonal``) as attention processors handed to
  ``set_pag_applied_layers(..., pag_attn_processors=...)``; ``identity`` (the paper's PAG) uses
  diffusers' own ``PAG(CFG)IdentitySelfAttnProcessor2_0``;
* a layer pattern that matches no self-attention layer fails before sampling, listing the
  candidate layers;
* the processors are always restored (diffusers restores them only when a call finishes);
* every sample records ``seconds`` and ``unet_calls``.

``unet_calls`` (per image) = the number of UNet evaluations spent on that image, counting each
guidance branch as one evaluation, as the paper counts cost: a forward hook on the UNet adds
the batch rows of every real forward call and divides by the number of images in the batch.
So per denoising step plain = 1, CFG = 2, PAG = 2, CFG+PAG = 3, whatever the batch size.

A new guidance method plugs in by registering one class: subclass :class:`GuidedSampling`, set
``name`` (and ``uses_cfg`` / ``uses_pag``), override :meth:`GuidedSampling.pipeline_for` or
:meth:`GuidedSampling.call_kwargs`, and add one ``METHODS.register`` line plus a
``conf/method/<name>.yaml``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from harness.attention import swap_processors
from harness.attention.explicit import finish, merge_heads, project
from harness.attention.swap import resolve_unet
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.methods.base import GenerationSettings, Method, to_uint8
from harness.models.loader import LoadedModel
from harness.store.samples import Sample

# ---------------------------------------------------------------------------------------------
# Attention perturbations (the paper's ablation, Table "perturbation type"). Each takes the
# pre-softmax attention logits (batch, heads, query, key) of the perturbed branch and returns
# attention probabilities. Definitions are ours where the paper gives no formula: see docs/pag.md.
# ---------------------------------------------------------------------------------------------


def _identity(logits: torch.Tensor, strength: float, noise: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Each token attends only to itself (PAG proper)."""
    eye = torch.eye(logits.shape[-2], logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return eye.expand_as(logits)


def _off_diagonal(logits: torch.Tensor, strength: float, noise: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Each token attends to every token but itself: the diagonal is masked before the softmax."""
    eye = torch.eye(logits.shape[-2], logits.shape[-1], dtype=torch.bool, device=logits.device)
    return logits.masked_fill(eye, float("-inf")).softmax(dim=-1)


def _random_mask(logits: torch.Tensor, strength: float, noise: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Each off-diagonal entry is masked with probability ``strength``; the diagonal is kept so
    that every token attends to at least one token."""
    uniform = noise(kind="uniform")
    drop = uniform < strength
    eye = torch.eye(logits.shape[-2], logits.shape[-1], dtype=torch.bool, device=logits.device)
    return logits.masked_fill(drop & ~eye, float("-inf")).softmax(dim=-1)


def _additive_noise(logits: torch.Tensor, strength: float, noise: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Gaussian noise of standard deviation ``strength`` added to the attention logits."""
    return (logits + strength * noise(kind="normal")).softmax(dim=-1)


PERTURBATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "identity": _identity,
    "random_mask": _random_mask,
    "additive_noise": _additive_noise,
    "off_diagonal": _off_diagonal,
}


class PerturbedSelfAttnProcessor:
    """A PAG attention processor with a chosen perturbation, in the style of diffusers'
    ``PAGCFGIdentitySelfAttnProcessor2_0`` / ``PAGIdentitySelfAttnProcessor2_0``.

    The batch is ``[uncond, cond, perturbed]`` (``with_cfg``) or ``[cond, perturbed]``: the leading
    rows get ordinary attention (diffusers' ``AttnProcessor2_0``), the last chunk gets attention
    probabilities from :data:`PERTURBATIONS`. Random perturbations draw from one generator per
    image (:meth:`set_generators`), so an image does not depend on its batch neighbours.
    """

    def __init__(self, perturbation: str, strength: float = 0.5, with_cfg: bool = True) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        if perturbation not in PERTURBATIONS:
            raise ConfigError(f"Unknown perturbation {perturbation!r}; known: {', '.join(PERTURBATIONS)}.")
        self.perturbation = perturbation
        self.strength = float(strength)
        self.with_cfg = with_cfg
        self.generators: list[torch.Generator] | None = None
        self._plain = AttnProcessor2_0()

    def set_generators(self, generators: list[torch.Generator] | None) -> None:
        """One generator per image of the coming batch (random perturbations only)."""
        self.generators = generators

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        chunks = 3 if self.with_cfg else 2
        images = hidden_states.shape[0] // chunks

        def split(tensor: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            if tensor is None or tensor.shape[0] != hidden_states.shape[0]:
                return tensor, tensor
            return tensor[:-images], tensor[-images:]

        guided_states, perturbed_states = split(hidden_states)
        guided_mask, perturbed_mask = split(attention_mask)
        guided_temb, perturbed_temb = split(temb)
        guided = self._plain(attn, guided_states, None, guided_mask, guided_temb)
        perturbed = self._perturbed(attn, perturbed_states, perturbed_mask, perturbed_temb)
        return torch.cat([guided, perturbed])

    def _noise(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, kind: str) -> torch.Tensor:
        # Drawn on the CPU from each image's own generator, then moved: identical on every device.
        draw = torch.rand if kind == "uniform" else torch.randn
        generators = self.generators
        if generators is None or len(generators) != shape[0]:
            raise RuntimeError("random perturbations need one generator per image: call set_generators() first")
        parts = [draw(shape[1:], generator=g, dtype=torch.float32) for g in generators]
        return torch.stack(parts).to(device=device, dtype=dtype)

    def _perturbed(self, attn: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
                   temb: torch.Tensor | None) -> torch.Tensor:
        # diffusers' AttnProcessor2_0 with the softmax made explicit so the attention map can be
        # perturbed (SDPA does not expose it).
        projected = project(attn, hidden_states, None, attention_mask, temb)
        logits = (projected.query @ projected.key.transpose(-1, -2)) * attn.scale
        if projected.attention_mask is not None:
            logits = logits + projected.attention_mask

        def noise(kind: str) -> torch.Tensor:
            return self._noise(tuple(logits.shape), logits.dtype, logits.device, kind)

        probabilities = PERTURBATIONS[self.perturbation](logits, self.strength, noise)
        attended = probabilities.to(projected.value.dtype) @ projected.value
        return finish(attn, projected, merge_heads(attended))


# ---------------------------------------------------------------------------------------------
# Layer patterns, processor restoration, UNet call counting
# ---------------------------------------------------------------------------------------------


def self_attention_layers(unet: torch.nn.Module) -> list[str]:
    """Names of the UNet's self-attention modules (the candidates for PAG)."""
    from diffusers.models.attention_processor import Attention

    return [name for name, module in unet.named_modules()
            if isinstance(module, Attention) and not module.is_cross_attention]


def matching_layers(pattern: str, layer_names: list[str]) -> list[str]:
    """The layers a ``pag_applied_layers`` entry selects.

    Mirrors the matching rule of diffusers' ``PAGMixin._set_pag_attn_processor`` (regex search in
    the module name, refusing a trailing-number mismatch such as ``blocks.1`` vs ``blocks.10``);
    diffusers only raises a bare ValueError mid-call, so we check beforehand.
    """

    def fake_integral_match(layer_id: str, name: str) -> bool:
        layer_id, name = layer_id.split(".")[-1], name.split(".")[-1]
        return layer_id.isnumeric() and name.isnumeric() and layer_id == name

    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"method.pag_applied_layers: {pattern!r} is not a valid regular expression ({error}).") from None
    return [name for name in layer_names if compiled.search(name) and not fake_integral_match(pattern, name)]


def check_layer_patterns(patterns: list[str], unet: torch.nn.Module) -> dict[str, list[str]]:
    """Every pattern's matches; a pattern matching nothing raises :class:`ConfigError` with the candidates."""
    if not patterns:
        raise ConfigError("method.pag_applied_layers is empty; name at least one layer pattern (e.g. [mid]).")
    names = self_attention_layers(unet)
    matches = {pattern: matching_layers(pattern, names) for pattern in patterns}
    empty = [pattern for pattern, found in matches.items() if not found]
    if empty:
        blocks = sorted({_block_of(name) for name in names})
        raise ConfigError(
            f"method.pag_applied_layers: {', '.join(repr(p) for p in empty)} match no self-attention layer of "
            f"this UNet. Patterns are regular expressions searched in module names. Blocks: {', '.join(blocks)}. "
            f"Self-attention layers ({len(names)}): {', '.join(names)}."
        )
    return matches


def _block_of(name: str) -> str:
    parts = name.split(".")
    return parts[0] if parts[0] == "mid_block" else ".".join(parts[:2])


class UNetCallCounter:
    """Counts UNet evaluations per image (batch rows of every forward call / images in the batch)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.rows = 0
        self.forward_calls = 0

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))  # UNet / SD3-Flux transformer
        self.rows += int(sample.shape[0])
        self.forward_calls += 1

    def __enter__(self) -> UNetCallCounter:
        self._handle = self.unet.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()

    def per_image(self, images: int) -> float:
        return self.rows / max(1, images)


# ---------------------------------------------------------------------------------------------
# The methods
# ---------------------------------------------------------------------------------------------


class GuidedSampling(Method):
    """Text-to-image sampling with a guidance rule; subclasses fix which guidance is on."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    uses_cfg: ClassVar[bool] = False
    uses_pag: ClassVar[bool] = False

    def __init__(self, method_cfg: Any, model: LoadedModel, generation: GenerationSettings) -> None:
        super().__init__(method_cfg, model, generation)
        if not self.uses_cfg:
            # The rows' hp.guidance_scale comes from this shared settings object: record what
            # is really used (1 = no CFG branch) rather than the config default.
            generation.guidance_scale = 1.0
        self.unconditional = bool(getattr(method_cfg, "unconditional", False))
        self._pipeline: Any = None

    # Hooks for new guidance methods --------------------------------------------------------
    def pipeline_for(self) -> Any:
        """The diffusers pipeline this method samples with (built once)."""
        return self.model.pipeline

    def call_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the pipeline call."""
        return {}

    def begin_batch(self, seeds: list[int]) -> None:
        """Called before each batch (e.g. to seed random perturbations)."""

    # ---------------------------------------------------------------------------------------
    @property
    def pipeline(self) -> Any:
        if self._pipeline is None:
            self._pipeline = self.pipeline_for()
            self._pipeline.set_progress_bar_config(disable=True)
        return self._pipeline

    def prompt_of(self, record: PromptRecord) -> str:
        return "" if self.unconditional else record.prompt

    def sample_spec(self, record: PromptRecord, seed: int) -> dict[str, Any]:
        spec = super().sample_spec(record, seed)
        spec["prompt"] = self.prompt_of(record)  # unconditional samples do not depend on the caption
        return spec

    @torch.no_grad()
    def run_batch(self, records: list[PromptRecord], seeds: list[int]) -> list[Sample]:
        settings = self.generation
        pipeline = self.pipeline
        self.begin_batch(seeds)
        prompts = [self.prompt_of(r) for r in records]
        negative = [settings.negative_prompt] * len(records) if settings.negative_prompt and self.uses_cfg else None
        denoiser = resolve_unet(pipeline)
        # PAG pipelines install their own processors: swap_processors with nothing to install puts
        # every original back afterwards, even when sampling fails
        with swap_processors(denoiser, {}), UNetCallCounter(denoiser) as counter:
            started = time.perf_counter()
            output = pipeline(
                prompt=prompts,
                negative_prompt=negative,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale,
                height=settings.height,
                width=settings.width,
                generator=self.generators(seeds),
                output_type="np",
                **self.call_kwargs(),
            )
            seconds = (time.perf_counter() - started) / len(records)
        meta = {"seconds": seconds, "unet_calls": counter.per_image(len(records)),
                "guidance_scale": settings.guidance_scale}
        samples = []
        for prompt, image in zip(prompts, to_uint8(output.images), strict=True):
            samples.append(Sample(image=image, meta={**meta, "prompt_used": prompt}))
        return samples


class Plain(GuidedSampling):
    """``method=plain``: no guidance (guidance_scale 1, one UNet branch per step)."""

    name = "plain"


class CFG(GuidedSampling):
    """``method=cfg``: classifier-free guidance with ``generation.guidance_scale``."""

    name = "cfg"
    uses_cfg = True


class PAG(GuidedSampling):
    """``method=pag``: perturbed-attention guidance without CFG, via diffusers' PAG pipeline."""

    name = "pag"
    uses_pag = True

    def __init__(self, method_cfg: Any, model: LoadedModel, generation: GenerationSettings) -> None:
        super().__init__(method_cfg, model, generation)
        self.layers = [str(layer) for layer in method_cfg.pag_applied_layers]
        denoiser = resolve_unet(model.pipeline)
        check_layer_patterns(self.layers, denoiser)
        self.perturbation = str(method_cfg.perturbation)
        if self.perturbation not in PERTURBATIONS:
            raise ConfigError(f"method.perturbation={self.perturbation!r} is unknown; known: {', '.join(PERTURBATIONS)}.")
        if self.perturbation != "identity" and not hasattr(model.pipeline, "unet"):
            # the ablation processors follow the UNet's AttnProcessor2_0; the joint (SD3) processors differ
            raise ConfigError(f"method.perturbation={self.perturbation!r} is written for UNet self-attention; on "
                              f"{type(model.pipeline).__name__} only perturbation=identity (diffusers' own PAG) runs.")
        self.processors: tuple[PerturbedSelfAttnProcessor, PerturbedSelfAttnProcessor] | None = None

    def pipeline_for(self) -> Any:
        from diffusers import AutoPipelineForText2Image

        try:
            pipeline = AutoPipelineForText2Image.from_pipe(self.model.pipeline, enable_pag=True,
                                                           pag_applied_layers=self.layers)
        except (ValueError, KeyError) as error:
            raise ConfigError(f"diffusers has no PAG pipeline for {type(self.model.pipeline).__name__} "
                              f"(model {self.model.name!r}): {error}") from None
        if self.perturbation != "identity":
            strength = float(self.cfg.perturbation_strength)
            self.processors = (PerturbedSelfAttnProcessor(self.perturbation, strength, with_cfg=True),
                               PerturbedSelfAttnProcessor(self.perturbation, strength, with_cfg=False))
            pipeline.set_pag_applied_layers(self.layers, pag_attn_processors=self.processors)
        return pipeline

    def begin_batch(self, seeds: list[int]) -> None:
        self.pipeline  # noqa: B018 - builds the processors on first use
        if self.processors is not None:
            # A stream apart from the latents' ([seed, 1] in a SeedSequence), one per image.
            for processor in self.processors:
                processor.set_generators([
                    torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
                    for seed in seeds])

    def call_kwargs(self) -> dict[str, Any]:
        return {"pag_scale": float(self.cfg.pag_scale), "pag_adaptive_scale": float(self.cfg.pag_adaptive_scale)}


class CFGPAG(PAG):
    """``method=cfg_pag``: CFG and PAG together (batch [uncond, cond, cond-perturbed])."""

    name = "cfg_pag"
    uses_cfg = True


__all__ = ["CFG", "CFGPAG", "PAG", "PERTURBATIONS", "GuidedSampling", "PerturbedSelfAttnProcessor", "Plain",
           "UNetCallCounter", "check_layer_patterns", "self_attention_layers"]
