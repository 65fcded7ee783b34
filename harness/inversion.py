"""DDPM edit-friendly inversion (Huberman-Spiegelglas, Kulikov and Michaeli, CVPR 2024).

"An Edit Friendly DDPM Noise Space": a real image ``x_0`` is noised independently at every
timestep of the sampling grid, ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps_t`` (one fresh
``eps_t`` per t), and the per-step DDPM noises ``z_t`` are then solved for, so that the DDPM
sampler (eta = 1)

    x_prev = mu_theta(x_t, t) + sigma_t z_t

started from ``x_T`` with those noises reproduces every ``x_t`` of the inversion and ends at
``x_0`` exactly (up to float rounding). Regenerating from any intermediate step with the stored
noises therefore reproduces the image, and an edit made at one step (EmerDiff's modulation)
changes the image only through that edit.

The schedule comes from diffusers' :class:`~diffusers.DDPMScheduler` built from the model's own
scheduler config (timesteps, alphas, spacing). The posterior mean and variance are written out
here because ``DDPMScheduler.step`` draws its own noise and cannot take a given ``z_t``.
On the last step ``sigma`` is 0 (abar_prev = 1): the residual is stored as the "noise" with a unit
scale, which keeps the reconstruction exact there too (see :attr:`InversionResult.noise_scales`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.errors import ConfigError

log = logging.getLogger(__name__)

_LOGGED: set[tuple[str, str]] = set()


def log_once(logger: logging.Logger, note: str) -> None:
    """Log ``note`` at INFO the first time this process sees it: per-image notes (a snapped
    timestep, a substituted layer) are the same for every image of a run and stay in each
    sample's ``meta.notes``."""
    if (logger.name, note) not in _LOGGED:
        _LOGGED.add((logger.name, note))
        logger.info(note)


#: Called before every UNet evaluation with (step index in the grid, timestep); methods use it to
#: tell their attention processors where in the trajectory they are.
StepCallback = Callable[[int, int], None]

#: Below this, sigma_t counts as zero (the final step onto x_0).
_ZERO_SIGMA = 1e-6


@dataclass
class InversionResult:
    """Everything needed to regenerate an inverted image.

    ``latents[i]`` is the UNet input of step ``i`` (the latent at ``timesteps[i]``); ``latents[T]``
    is ``x_0`` (the encoded image). Step ``i`` maps ``latents[i]`` to
    ``mu(latents[i]) + noise_scales[i] * noises[i]`` = ``latents[i + 1]``.
    """

    timesteps: torch.Tensor  #: (T,) the grid, descending
    latents: torch.Tensor  #: (T + 1, C, h, w)
    noises: torch.Tensor  #: (T, C, h, w): z_t (standard-normal-like where sigma_t > 0)
    noise_scales: torch.Tensor  #: (T,): sigma_t, or 1 where sigma_t = 0 (then noises holds the residual)
    prompt_embeds: torch.Tensor  #: (rows, L, D): [uncond, cond] with CFG, else [cond]
    guidance_scale: float

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def x0(self) -> torch.Tensor:
        return self.latents[-1:]


def make_ddpm_scheduler(pipeline: Any) -> Any:
    """A :class:`~diffusers.DDPMScheduler` with the model's training schedule."""
    from diffusers import DDPMScheduler

    config = dict(pipeline.scheduler.config)
    if config.get("variance_type") in ("learned", "learned_range"):
        raise ConfigError("Edit-friendly inversion needs a fixed-variance schedule; this model's scheduler "
                          f"has variance_type={config['variance_type']!r}.")
    # Keys of other scheduler classes (skip_prk_steps, set_alpha_to_one, ...) are ignored by from_config.
    return DDPMScheduler.from_config(config)


def timestep_grid(pipeline: Any, num_inference_steps: int) -> torch.Tensor:
    """The descending timestep grid of ``num_inference_steps`` DDPM steps for this model."""
    scheduler = make_ddpm_scheduler(pipeline)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler.timesteps.clone()


def snap_timestep(timestep: int, grid: torch.Tensor, what: str = "timestep") -> tuple[int, int, str | None]:
    """The grid index and value nearest to ``timestep``, with a note when it had to move.

    Ties go to the later (less noisy) step.
    """
    values = grid.tolist()
    distances = [abs(int(v) - int(timestep)) for v in values]
    best = min(distances)
    index = max(i for i, d in enumerate(distances) if d == best)
    snapped = int(values[index])
    note = None
    if snapped != int(timestep):
        note = (f"{what}={timestep} is not on the {len(values)}-step grid; snapped to the nearest grid "
                f"timestep {snapped} (step {index} of {len(values)}).")
        log_once(log, note)
    return index, snapped, note


def encode_image(pipeline: Any, image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """VAE latent (mean of the posterior, times the scaling factor) of uint8 HxWx3 image(s)."""
    vae = pipeline.vae
    if isinstance(image, np.ndarray):
        array = image[None] if image.ndim == 3 else image
        pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    else:
        pixels = image
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    with torch.no_grad():
        latent = vae.encode(pixels).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latent - shift) * vae.config.scaling_factor


def decode_latents(pipeline: Any, latents: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], (B, 3, H, W) float32, from latents."""
    vae = pipeline.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.no_grad():
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor + shift).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


def encode_prompt(pipeline: Any, prompt: str, guidance_scale: float) -> torch.Tensor:
    """Text embeddings: ``[uncond, cond]`` rows when ``guidance_scale > 1``, else ``[cond]``."""
    do_cfg = guidance_scale > 1.0
    with torch.no_grad():
        cond, uncond = pipeline.encode_prompt(prompt, pipeline.unet.device, 1, do_cfg, negative_prompt="")
    return torch.cat([uncond, cond]) if do_cfg else cond


class _Posterior:
    """The DDPM posterior q(x_prev | x_t, x0_hat) on a strided grid (formula (7) of Ho et al.)."""

    def __init__(self, scheduler: Any) -> None:
        if scheduler.config.get("thresholding", False):
            # dynamic thresholding (Imagen, DeepFloyd IF) is private to diffusers' schedulers; no
            # Stable Diffusion scheduler uses it
            raise ConfigError(f"DDPM inversion does not support a scheduler with thresholding=True "
                              f"({type(scheduler).__name__}); use the model's default scheduler.")
        self.scheduler = scheduler
        self.config = scheduler.config

    def coefficients(self, timestep: int) -> tuple[float, float, float, float, float]:
        alphas = self.scheduler.alphas_cumprod
        prev = int(self.scheduler.previous_timestep(timestep))
        abar_t = float(alphas[int(timestep)])
        abar_prev = float(alphas[prev]) if prev >= 0 else 1.0
        alpha_t = abar_t / abar_prev
        beta_t = 1.0 - alpha_t
        x0_coeff = abar_prev ** 0.5 * beta_t / (1.0 - abar_t)
        xt_coeff = alpha_t ** 0.5 * (1.0 - abar_prev) / (1.0 - abar_t)
        variance = max((1.0 - abar_prev) / (1.0 - abar_t) * beta_t, 0.0)
        return abar_t, abar_prev, x0_coeff, xt_coeff, variance ** 0.5

    def mean(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor) -> torch.Tensor:
        abar_t, _, x0_coeff, xt_coeff, _ = self.coefficients(timestep)
        prediction = self.config.prediction_type
        if prediction == "epsilon":
            x0 = (sample - (1 - abar_t) ** 0.5 * model_output) / abar_t ** 0.5
        elif prediction == "v_prediction":
            x0 = abar_t ** 0.5 * sample - (1 - abar_t) ** 0.5 * model_output
        elif prediction == "sample":
            x0 = model_output
        else:
            raise ConfigError(f"Unsupported prediction_type {prediction!r} for DDPM inversion.")
        if self.config.get("clip_sample", False):
            limit = self.config.get("clip_sample_range", 1.0)
            x0 = x0.clamp(-limit, limit)
        return x0_coeff * x0 + xt_coeff * sample

    def sigma(self, timestep: int) -> float:
        return self.coefficients(timestep)[4]


def _predict_noise(unet: Any, latents: torch.Tensor, timestep: int, embeds: torch.Tensor,
                   guidance_scale: float) -> torch.Tensor:
    """The (guided) model output for a batch of B latents; ``embeds`` has B or 2B rows (CFG)."""
    do_cfg = guidance_scale > 1.0
    model_input = torch.cat([latents, latents]) if do_cfg else latents
    output = unet(model_input.to(unet.dtype), timestep, encoder_hidden_states=embeds).sample.float()
    if do_cfg:
        uncond, cond = output.chunk(2)
        output = uncond + guidance_scale * (cond - uncond)
    return output


def _batched_embeds(embeds: torch.Tensor, batch: int, guidance_scale: float) -> torch.Tensor:
    """Rows for a batch: ``[cond x B]``, or ``[uncond x B, cond x B]`` with CFG."""
    if guidance_scale > 1.0:
        uncond, cond = embeds[:1], embeds[1:2]
        return torch.cat([uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)])
    return embeds[:1].expand(batch, -1, -1)


@torch.no_grad()
def invert(
    pipeline: Any,
    image: np.ndarray | None = None,
    *,
    x0: torch.Tensor | None = None,
    prompt: str = "",
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    on_step: StepCallback | None = None,
) -> InversionResult:
    """Edit-friendly DDPM inversion of ``image`` (uint8 HxWx3) or of a given latent ``x0`` (1xCxhxw).

    ``generator`` draws the independent forward noises (CPU generator: same result on any
    device). ``on_step(i, t)`` is called before the UNet evaluation of step ``i`` -- the same
    evaluation a regeneration makes at that step, so processors installed by the caller see
    exactly the unmodulated pass (EmerDiff reads its features and attention maps here).
    """
    if (image is None) == (x0 is None):
        raise ValueError("invert() needs exactly one of image= or x0=")
    unet = pipeline.unet
    device = unet.device
    scheduler = make_ddpm_scheduler(pipeline)
    scheduler.set_timesteps(num_inference_steps)
    posterior = _Posterior(scheduler)
    timesteps = scheduler.timesteps.clone()
    if x0 is None:
        x0 = encode_image(pipeline, image)
    x0 = x0.float().to(device)
    embeds = encode_prompt(pipeline, prompt, guidance_scale)

    # Independent noising per timestep (the "edit friendly" part: not a single shared noise).
    alphas = scheduler.alphas_cumprod
    latents = []
    for timestep in timesteps.tolist():
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(device)
        abar = float(alphas[int(timestep)])
        latents.append(abar ** 0.5 * x0 + (1 - abar) ** 0.5 * eps)
    latents.append(x0)
    latents = torch.cat(latents)

    noises = torch.empty_like(latents[:-1])
    scales = torch.empty(len(timesteps), dtype=torch.float32)
    for index, timestep in enumerate(timesteps.tolist()):
        if on_step is not None:
            on_step(index, int(timestep))
        model_output = _predict_noise(unet, latents[index:index + 1], int(timestep), embeds, guidance_scale)
        mean = posterior.mean(model_output, int(timestep), latents[index:index + 1])
        sigma = posterior.sigma(int(timestep))
        scale = sigma if sigma > _ZERO_SIGMA else 1.0
        noises[index] = ((latents[index + 1:index + 2] - mean) / scale)[0]
        scales[index] = scale
    return InversionResult(timesteps, latents, noises, scales, embeds, float(guidance_scale))


@torch.no_grad()
def regenerate(
    pipeline: Any,
    inversion: InversionResult,
    start_step: int = 0,
    *,
    batch_size: int = 1,
    start_latents: torch.Tensor | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Rerun the DDPM sampler from step ``start_step`` with the stored noises; returns x_0 (B, C, h, w).

    ``batch_size`` trajectories run together (all start from ``latents[start_step]`` unless
    ``start_latents`` is given); they differ only through what the caller's processors do
    (``on_step`` says which step each UNet call belongs to). With nothing changed, every row
    equals the inverted ``x_0`` up to float rounding.
    """
    if not 0 <= start_step < inversion.num_steps:
        raise ValueError(f"start_step must be in [0, {inversion.num_steps - 1}], got {start_step}")
    unet = pipeline.unet
    scheduler = make_ddpm_scheduler(pipeline)
    scheduler.set_timesteps(inversion.num_steps)
    if not torch.equal(scheduler.timesteps.cpu(), inversion.timesteps.cpu()):
        raise ValueError("the pipeline's schedule does not match the inversion's timestep grid")
    posterior = _Posterior(scheduler)
    if start_latents is None:
        latents = inversion.latents[start_step:start_step + 1].expand(batch_size, -1, -1, -1).clone()
    else:
        latents = start_latents.float().clone()
        batch_size = latents.shape[0]
    embeds = _batched_embeds(inversion.prompt_embeds, batch_size, inversion.guidance_scale)
    for index in range(start_step, inversion.num_steps):
        timestep = int(inversion.timesteps[index])
        if on_step is not None:
            on_step(index, timestep)
        model_output = _predict_noise(unet, latents, timestep, embeds, inversion.guidance_scale)
        mean = posterior.mean(model_output, timestep, latents)
        latents = mean + inversion.noise_scales[index].item() * inversion.noises[index:index + 1]
    return latents
