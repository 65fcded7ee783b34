"""The toy model's image autoencoder: a small diffusers AutoencoderKL, 32x32x3 <-> 16x16x4.

One down-sampling stage (Stable Diffusion has three) keeps the latent grid at 16x16, so the
UNet's cross-attention runs at 16x16 and 8x8 like SD's low-resolution layers. Trained with a
pixel reconstruction loss and a small KL weight, as SD's VAE (without its GAN loss, which
flat-coloured shapes do not need).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from harness.toy.data import ScenePool


def build_autoencoder() -> AutoencoderKL:
    """A fresh, randomly initialised toy autoencoder."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC images -> float NCHW in [-1, 1], the range diffusers' VAEs use."""
    # a copy: images read back from the store are read-only, which torch.from_numpy warns about
    return torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_autoencoder(
    pool: ScenePool,
    out_dir: Path,
    steps: int = 600,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    log_every: int = 100,
    build=build_autoencoder,
    object_weight: float = 1.0,
) -> AutoencoderKL:
    """Train the autoencoder `build()` on pool images and save it (diffusers format) to `out_dir`.

    `object_weight` > 1 weighs the reconstruction error of object pixels (pool label > 0) that
    many times a background pixel's: textured backgrounds cover most pixels and would otherwise
    take the capacity that small textured objects need.

    After training, the latent scaling factor is set to 1 / std of the latents of 2,048 pool
    images, as Stable Diffusion's 0.18215 was chosen, so the UNet sees unit-variance latents.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = build()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    log = []
    start = time.time()
    for step in range(1, steps + 1):
        index = rng.integers(0, len(pool), batch_size)
        batch = images_to_tensor(pool.images[index])
        posterior = vae.encode(batch).latent_dist
        latents = posterior.sample(generator=generator)
        reconstruction = vae.decode(latents).sample
        # L1 keeps flat colours and sharp edges better than L2 alone.
        error = (reconstruction - batch).abs() + (reconstruction - batch) ** 2
        if object_weight != 1.0:
            weights = 1.0 + (object_weight - 1.0) * torch.from_numpy(pool.labels[index] > 0).float()[:, None]
            reconstruction_loss = (error * weights).sum() / (weights.sum() * error.shape[1])
        else:
            reconstruction_loss = error.mean()
        kl = posterior.kl().mean()
        loss = reconstruction_loss + kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps:
            entry = {"step": step, "loss": float(loss), "reconstruction": float(reconstruction_loss), "kl": float(kl),
                     "elapsed_s": round(time.time() - start, 1)}
            log.append(entry)
            print("autoencoder", json.dumps(entry), flush=True)

    vae.eval()
    with torch.no_grad():
        sample = images_to_tensor(pool.images[:2048])
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in sample.split(256)])
        scaling = float(1.0 / latents.std())
        reconstruction = torch.cat([vae.decode(chunk).sample for chunk in latents.split(256)])
        pixel_error = float((reconstruction.clamp(-1, 1) - sample).abs().mean() * 127.5)
    vae.register_to_config(scaling_factor=scaling)
    out_dir = Path(out_dir)
    vae.save_pretrained(out_dir, safe_serialization=True)
    summary = {"steps": steps, "batch_size": batch_size, "seed": seed, "scaling_factor": scaling,
               "mean_abs_pixel_error_0_255": pixel_error, "wall_s": round(time.time() - start, 1), "log": log}
    (out_dir / "train_state.json").write_text(json.dumps(summary, indent=1))
    print("autoencoder done", json.dumps({k: v for k, v in summary.items() if k != "log"}), flush=True)
    return vae


def finetune_decoder(
    vae: AutoencoderKL,
    pool: ScenePool,
    out_dir: Path,
    steps: int = 1500,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 1,
    log_every: int = 50,
    save_every: int = 250,
) -> AutoencoderKL:
    """Train only the decoder further, the encoder frozen (as SD's ft-MSE decoder was made).

    The latent space stays exactly what the UNet was trained on, so the improved decoder can
    replace the old one in a finished pipeline. Saves to `out_dir` every `save_every` steps.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    vae.requires_grad_(False)
    decoder_parameters = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in decoder_parameters:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(decoder_parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=learning_rate * 0.05)
    start = time.time()
    out_dir = Path(out_dir)
    for step in range(1, steps + 1):
        batch = images_to_tensor(pool.images[rng.integers(0, len(pool), batch_size)])
        with torch.no_grad():
            latents = vae.encode(batch).latent_dist.sample(generator=generator)
        reconstruction = vae.decode(latents).sample
        loss = (reconstruction - batch).abs().mean() + ((reconstruction - batch) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder_parameters, 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0:
            print("decoder", json.dumps({"step": step, "loss": round(float(loss.detach()), 5),
                                         "elapsed_s": round(time.time() - start, 1)}), flush=True)
        if step % save_every == 0 or step == steps:
            vae.save_pretrained(out_dir, safe_serialization=True)
            (out_dir / "train_state.json").write_text(json.dumps({"decoder_finetune_steps": step, "seed": seed,
                                                                   "wall_s": round(time.time() - start, 1)}))
    return vae.requires_grad_(False).eval()
