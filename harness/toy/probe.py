"""A quick check of where the toy UNet's cross-attention looks, used while training.

The probe captures the conditional rows of every cross-attention layer (`attn2`), sums the
softmax maps over heads, layers and timesteps (each layer upsampled bicubic to the latent grid
and clamped at zero, as DAAM does), min-max normalises each word's map, thresholds it at 0.4
and scores its IoU against the exact mask of the word's object. It is a training diagnostic,
not the harness's DAAM implementation.

`teacher_forced_probe` runs on rendered toy_gen scenes (noised latents of the real image at
fixed timesteps).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from harness.metrics.overlap import mask_iou
from harness.toy.splits import scene_for_index
from harness.toy.tokens import encode
from harness.toy.world import ALL_COLOURS, OBJECT_COLOURS, caption, render_scene

THRESHOLD = 0.4


class _CaptureCrossAttention:
    """Cross-attention that also adds the conditional rows' head-summed maps to `store`."""

    def __init__(self, store: dict, name: str):
        self.store, self.name = store, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        batch = hidden_states.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (batch*heads, hw, tokens)
        rows = self.store["rows"]
        if rows is not None:
            maps = probs.view(batch, attn.heads, *probs.shape[1:])[rows].sum(dim=1)  # (n, hw, tokens)
            side = int(round(maps.shape[1] ** 0.5))
            maps = maps.permute(0, 2, 1).reshape(len(rows), -1, side, side)
            grid = self.store["grid"]
            maps = F.interpolate(maps, size=(grid, grid), mode="bicubic", align_corners=False).clamp(min=0)
            self.store["sum"] = maps if self.store["sum"] is None else self.store["sum"] + maps
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


@contextmanager
def capture_cross_attention(unet, grid: int):
    """Swap every attn2 processor for a capturing one; always restores the originals.

    Yields a dict: set `store["rows"]` to the batch rows to record (None = record nothing);
    `store["sum"]` accumulates (rows, tokens, grid, grid) maps.
    """
    original = unet.attn_processors
    store: dict = {"rows": None, "sum": None, "grid": grid}
    processors = {
        name: (_CaptureCrossAttention(store, name) if name.endswith("attn2.processor") else proc)
        for name, proc in original.items()
    }
    unet.set_attn_processor(processors)
    try:
        yield store
    finally:
        unet.set_attn_processor(original)


def word_map_ious(maps: np.ndarray, cap, masks: dict[int, np.ndarray]) -> dict[str, list[float]]:
    """IoU per word role: noun, colour, size, det (the object's determiner vs the object)."""
    size = next(iter(masks.values())).shape[0]
    scores: dict[str, list[float]] = {"noun": [], "colour": [], "size": [], "det": [], "centre_blob": []}
    yy, xx = np.mgrid[:size, :size]
    blob = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2) < size * 0.25
    for position, word in enumerate(cap.words, start=1):
        if word.object_index is None or word.role not in scores:
            continue
        object_mask = masks[word.object_index + 1]
        heat = torch.from_numpy(maps[position])[None, None].float()
        heat = F.interpolate(heat, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()
        heat = (heat - heat.min()) / max(heat.max() - heat.min(), 1e-8)
        scores[word.role].append(mask_iou(heat > THRESHOLD, object_mask))
        if word.role == "noun":
            scores["centre_blob"].append(mask_iou(blob, object_mask))
    return scores


def _summary(all_scores: dict[str, list[float]]) -> dict[str, float]:
    return {f"miou_{k}": round(float(np.mean(v)), 4) for k, v in all_scores.items() if v} | {
        f"n_{k}": len(v) for k, v in all_scores.items() if v
    }


@torch.no_grad()
def teacher_forced_probe(unet, text_encoder, vae, scheduler, n_scenes: int = 48, seed: int = 0,
                         timesteps: tuple[int, ...] = (100, 300, 500, 700, 900), split: str = "toy_gen") -> dict[str, float]:
    """Noun/adjective attention mIoU on rendered `split` scenes, noised at fixed timesteps.

    `text_encoder` takes training-space token ids (`harness.toy.tokens`).
    """
    scenes = [scene_for_index(split, i) for i in range(n_scenes)]
    rendered = [render_scene(s) for s in scenes]
    captions = [caption(s) for s in scenes]
    images = torch.from_numpy(np.stack([r[0] for r in rendered])).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    states = text_encoder(input_ids=torch.from_numpy(np.stack([encode(c.text) for c in captions]))).last_hidden_state
    generator = torch.Generator().manual_seed(seed)
    grid = latents.shape[-1]
    with capture_cross_attention(unet, grid) as store:
        store["rows"] = torch.arange(n_scenes)
        for t in timesteps:
            noise = torch.randn(latents.shape, generator=generator)
            timestep = torch.full((n_scenes,), t, dtype=torch.long)
            unet(scheduler.add_noise(latents, noise, timestep), timestep, states)
        maps = store["sum"].numpy()
    all_scores: dict[str, list[float]] = {}
    for k, (cap, (_, labels)) in enumerate(zip(captions, rendered)):
        masks = {m: labels == m for m in range(len(scenes[k].objects) + 1)}
        for role, values in word_map_ious(maps[k], cap, masks).items():
            all_scores.setdefault(role, []).extend(values)
    return _summary(all_scores)


def colour_masks(image: np.ndarray, scene) -> dict[int, np.ndarray]:
    """Masks of a generated image: each pixel goes to the nearest colour the prompt names.

    Mask id i + 1 = pixels nearest object i's colour; 0 = the background colour. Only valid when
    a scene's objects have distinct colours (the probe skips other scenes).
    """
    palette = np.array([ALL_COLOURS[scene.background]] + [OBJECT_COLOURS[o.colour] for o in scene.objects], float)
    distance = ((image[:, :, None, :].astype(float) - palette[None, None]) ** 2).sum(-1)
    nearest = distance.argmin(-1)
    return {m: nearest == m for m in range(len(palette))}
