"""The toy model's denoiser: a small Stable-Diffusion-shaped UNet2DConditionModel, and its schedules."""

from __future__ import annotations

from pathlib import Path

from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file

from harness.errors import HarnessError
from harness.toy.text_encoder import HIDDEN_SIZE

#: The folder of a training run that holds its latest UNet checkpoint.
CHECKPOINT = "unet_checkpoint"

LATENT_SIZE = 16
# Stable Diffusion's training schedule ("scaled_linear" betas from 0.00085 to 0.012).
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def build_unet() -> UNet2DConditionModel:
    """A fresh toy UNet: cross-attention at 16x16 and 8x8 (down and up) and in the 4x4 mid block."""
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(48, 96, 96),
        layers_per_block=1,
        cross_attention_dim=HIDDEN_SIZE,
        attention_head_dim=4,  # diffusers' historical name: this is the number of heads
        norm_num_groups=16,
    )


def training_scheduler() -> DDPMScheduler:
    """The noise schedule used in training."""
    return DDPMScheduler(**SCHEDULE, prediction_type="epsilon", clip_sample=False)


def sampling_scheduler() -> DDIMScheduler:
    """The scheduler shipped with the pipeline (DDIM on the training schedule, as SD 1.x ships)."""
    return DDIMScheduler(**SCHEDULE, prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1)


def load_ema_unet(run_dir: Path):
    """The UNet of a run's checkpoint with its EMA weights (what gets exported)."""
    path = Path(run_dir) / CHECKPOINT / "ema_unet.safetensors"
    if not path.exists():
        raise HarnessError(f"no UNet checkpoint at {path}; train one with `harness toy train`")
    unet = build_unet()
    missing, unexpected = unet.load_state_dict(load_file(path), strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise HarnessError(f"{path} does not match the toy UNet (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return unet.eval()
