"""The toy MMDiT: an SD3-shaped joint-attention transformer for the toy world (``model=toy_mmdit``).

The pipeline is diffusers' ``StableDiffusion3Pipeline`` around a small ``SD3Transformer2DModel``
and the toy model's own components (a toy pipeline folder such as ``weights/toy``): its
autoencoder (4 latent channels, 2x downsampling: a 32x32 image is a 16x16 latent, 8x8 patches of
2x2) and its toy CLIP text encoder and tokenizer. SD3 wants two CLIP towers with projections
and an optional T5; the toy text encoder fills both CLIP slots (the same weights twice, as
``CLIPTextModelWithProjection`` with an identity projection, so the pooled vector is the toy
encoder's pooled output) and there is no T5 (the pipeline then appends zero tokens, as SD3
without T5 does). Everything the pipeline feeds the transformer comes from its own
``encode_prompt``, in training and at inference alike.

Flow matching as SD3 trains: ``x_s = (1 - s) x_0 + s noise``, the transformer predicts
``noise - x_0`` at timestep ``1000 s``, ``s`` drawn logit-normal (diffusers'
``compute_density_for_timestep_sampling``). Training is :mod:`harness.toy.train_mmdit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.errors import MissingWeightsError

#: the transformer (SD3 layout: joint blocks, the last context_pre_only; patch 2; sin-cos positions)
TOY_MMDIT_TRANSFORMER: dict[str, Any] = {
    "sample_size": 16, "patch_size": 2, "in_channels": 4, "out_channels": 4, "num_layers": 6,
    "attention_head_dim": 16, "num_attention_heads": 4, "joint_attention_dim": 256,  # two 128-wide toy CLIP towers
    "caption_projection_dim": 64, "pooled_projection_dim": 256, "pos_embed_max_size": 16,
}
#: flow-matching scheduler; shift 1 (SD3's 3.0 is for 128x128 latents; ours are 16x16)
TOY_MMDIT_SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0}
#: the length of the (all-zero) T5 stretch the SD3 pipeline appends without T5; kept at its default
MAX_SEQUENCE_LENGTH = 256


def _with_projection(text_encoder: Any) -> Any:
    """The toy ``CLIPTextModel`` as ``CLIPTextModelWithProjection`` with an identity projection."""
    from transformers import CLIPTextModelWithProjection

    config = text_encoder.config
    config.projection_dim = config.hidden_size
    projected = CLIPTextModelWithProjection(config).eval()
    projected.text_model.load_state_dict(text_encoder.state_dict(), strict=True)
    with torch.no_grad():
        projected.text_projection.weight.copy_(torch.eye(config.hidden_size))
    return projected.requires_grad_(False)


def build_toy_mmdit(components: str | Path, transformer: Any | None = None, weights_seed: int = 0) -> Any:
    """A ``StableDiffusion3Pipeline`` from a toy pipeline folder's VAE, text encoder and tokenizer, and
    ``transformer`` (None: a new one with random weights from ``weights_seed``)."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    components = Path(components)
    needed = [components / "vae", components / "text_encoder", components / "tokenizer"]
    missing = [str(p) for p in needed if not p.is_dir()]
    if missing:
        raise MissingWeightsError(f"The toy components folder {components} lacks {', '.join(missing)}. Give a toy "
                                  "pipeline folder (weights/toy, restored with `git checkout -- weights/toy` or "
                                  "trained with `make toy-model`).")
    vae = diffusers.AutoencoderKL.from_pretrained(components / "vae").eval().requires_grad_(False)
    if vae.config.shift_factor is None:  # the SD3 pipeline adds the shift when decoding
        vae.register_to_config(shift_factor=0.0)
    text_encoder = _with_projection(CLIPTextModel.from_pretrained(components / "text_encoder"))
    text_encoder_2 = _with_projection(CLIPTextModel.from_pretrained(components / "text_encoder"))
    tokenizer = CLIPTokenizer.from_pretrained(components / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(components / "tokenizer")
    if transformer is None:
        torch.manual_seed(weights_seed)
        transformer = diffusers.SD3Transformer2DModel(**TOY_MMDIT_TRANSFORMER)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**TOY_MMDIT_SCHEDULER)
    pipeline = diffusers.StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, text_encoder_3=None, tokenizer_3=None)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline



def save_toy_mmdit(pipeline: Any, folder: str | Path) -> Path:
    """``save_pretrained`` (safetensors). The folder has no T5; ``model=toy_mmdit`` (the harness loader)
    passes ``text_encoder_3=None, tokenizer_3=None``, as must a direct ``from_pretrained`` call."""
    folder = Path(folder)
    pipeline.save_pretrained(str(folder), safe_serialization=True)
    return folder
