"""A quick check of where the toy UNet's cross-attention looks, used while training.

The probe reads the **dev** split only (`harness.toy.splits.eval_indices("dev", ...)`): it is
how checkpoints are compared, so it must never see a `test` scene. It renders the scenes,
noises their latents at fixed timesteps, runs the UNet once per timestep under
:class:`harness.attention.AttentionTracer` (every cross-attention layer, mid block included, all
heads, conditional rows only; each layer's map upsampled bicubic to the latent grid, clamped at
zero, averaged over (layer, head) and summed over timesteps: the harness's DAAM capture), then
turns each word's map into the harness's DAAM mask (:func:`harness.heatmaps.heatmap_to_mask`:
bilinear to the mask size, min-max normalised, > 0.4) and scores its IoU against the exact
mask of the word's object. It is a training diagnostic, not the harness's DAAM metric.

    harness toy probe weights/toy          # the probe of a saved pipeline, as JSON
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from harness.attention import AttentionTracer, BatchLayout
from harness.heatmaps import DEFAULT_THRESHOLD, heatmap_to_mask
from harness.overlap import mask_iou
from harness.toy.splits import eval_indices, scene_for_index
from harness.toy.tokens import encode
from harness.toy.world import caption, render_scene

THRESHOLD = DEFAULT_THRESHOLD
#: The split every checkpoint choice reads (never "test").
PROBE_SPLIT = "dev"


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
        mask = heatmap_to_mask(maps[position], (size, size), THRESHOLD)
        scores[word.role].append(mask_iou(mask, object_mask))
        if word.role == "noun":
            scores["centre_blob"].append(mask_iou(blob, object_mask))
    return scores


def _summary(all_scores: dict[str, list[float]]) -> dict[str, float]:
    return {f"miou_{k}": round(float(np.mean(v)), 4) for k, v in all_scores.items() if v} | {
        f"n_{k}": len(v) for k, v in all_scores.items() if v
    }


def probe_scenes(n_scenes: int = 48, seed: int = 0, world: str = "toy_gen") -> list[tuple[int, object]]:
    """(index, scene) of the probe's scenes: a seeded sample of the dev split of `world`."""
    return [(i, scene_for_index(world, i)) for i in eval_indices(PROBE_SPLIT, n_scenes, seed)]


@torch.no_grad()
def teacher_forced_probe(unet, text_encoder, vae, scheduler, n_scenes: int = 48, seed: int = 0,
                         timesteps: tuple[int, ...] = (100, 300, 500, 700, 900), world: str = "toy_gen",
                         tokenize=None) -> dict[str, float]:
    """Noun/adjective attention mIoU on rendered dev scenes of `world`, noised at fixed timesteps.

    `text_encoder` takes training-space token ids (`harness.toy.tokens`) unless `tokenize`
    (texts -> LongTensor of ids) says otherwise (an exported pipeline's tokenizer).
    """
    scenes = [scene for _, scene in probe_scenes(n_scenes, seed, world)]
    rendered = [render_scene(s) for s in scenes]
    captions = [caption(s) for s in scenes]
    images = torch.from_numpy(np.stack([r[0] for r in rendered])).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    texts = [c.text for c in captions]
    ids = tokenize(texts) if tokenize is not None else torch.from_numpy(np.stack([encode(t) for t in texts]))
    states = text_encoder(input_ids=ids).last_hidden_state
    generator = torch.Generator().manual_seed(seed)
    # Every cross-attention layer at every map size; the batch holds the conditional rows only.
    with AttentionTracer(unet, layers=None, exclude_factors=(), layout=BatchLayout(("cond",))) as tracer:
        for t in timesteps:
            noise = torch.randn(latents.shape, generator=generator)
            timestep = torch.full((len(scenes),), t, dtype=torch.long)
            unet(scheduler.add_noise(latents, noise, timestep), timestep, states)
        maps = tracer.token_maps().numpy()
    all_scores: dict[str, list[float]] = {}
    for k, (cap, (_, labels)) in enumerate(zip(captions, rendered)):
        masks = {m: labels == m for m in range(len(scenes[k].objects) + 1)}
        for role, values in word_map_ious(maps[k], cap, masks).items():
            all_scores.setdefault(role, []).extend(values)
    return _summary(all_scores)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="harness toy probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="a saved toy pipeline folder (e.g. weights/toy)")
    parser.add_argument("--scenes", type=int, default=48, help="dev scenes to probe (default 48, as during training)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from harness.toy.unet import training_scheduler

    unet = UNet2DConditionModel.from_pretrained(args.pipeline, subfolder="unet").eval()
    text_encoder = CLIPTextModel.from_pretrained(args.pipeline, subfolder="text_encoder").eval()
    vae = AutoencoderKL.from_pretrained(args.pipeline, subfolder="vae").eval()
    tokenizer = CLIPTokenizer.from_pretrained(args.pipeline, subfolder="tokenizer")

    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids

    result = teacher_forced_probe(unet, text_encoder, vae, training_scheduler(), args.scenes, args.seed,
                                  tokenize=tokenize)
    print(json.dumps({"split": PROBE_SPLIT, "scenes": args.scenes, "seed": args.seed, **result}))


if __name__ == "__main__":
    main()
