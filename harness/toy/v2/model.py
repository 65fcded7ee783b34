"""The toy v2 model's parts: a factor-4 autoencoder, the text encoder and its pretraining.

The UNet is v1's (`harness.toy.unet.build_unet`): its latent grid is 16x16x4 in both worlds,
with self- and cross-attention at 16x16 and 8x8. What changes is the autoencoder (64x64x3 <->
16x16x4, two down-sampling stages) and the text encoder's vocabulary (numerals, textures,
plurals, new shapes), which is pretrained with the v1 recipe (`harness.toy.text_encoder`,
whose docstring says why) extended to v2's attributes: texture and count heads on the noun.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn
from transformers import CLIPTextModel

from harness.toy.text_encoder import HIDDEN_SIZE, ImageEncoder, _hard_negatives, _info_nce, build_text_encoder
from harness.toy.tokens import EOS_ID
from harness.toy.v2.data import ATTRIBUTES, MAX_GROUPS, SPOKEN_OPTIONALLY, ScenePoolV2
from harness.toy.v2.tokens import V2
from harness.toy.v2.world import BACKGROUND_COLOURS, IMAGE_SIZE, OBJECT_COLOURS, PLURALS, SHAPES, TEXTURES


def build_autoencoder() -> AutoencoderKL:
    """A fresh toy v2 autoencoder: 64x64x3 <-> 16x16x4 (down-sampling factor 4)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(24, 48, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def build_text_encoder_v2() -> CLIPTextModel:
    """A fresh toy v2 text encoder (v1's architecture over the v2 vocabulary)."""
    return build_text_encoder(V2.vocab_size)


class AttributeHeads(nn.Module):
    """Contrastive projections and one classifier per attribute (pretraining only)."""

    def __init__(self, dim: int = HIDDEN_SIZE):
        super().__init__()
        self.text_projection = nn.Linear(dim, dim, bias=False)
        self.image_projection = nn.Linear(dim, dim, bias=False)
        self.noun_projection = nn.Linear(dim, dim, bias=False)
        self.object_projection = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        # optional attributes get one more class: "not said"
        self.attributes = nn.ModuleDict({
            k: nn.Linear(dim, len(v) + int(k in SPOKEN_OPTIONALLY)) for k, v in ATTRIBUTES.items()
        })
        self.background = nn.Linear(dim, len(BACKGROUND_COLOURS))
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))


def _swap_nouns(token_ids: np.ndarray, positions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hard negatives: one group's noun swapped for another shape in the same number."""
    table = V2.word_to_id
    singular = [table[s] for s in SHAPES]
    plural = [table[PLURALS[s]] for s in SHAPES]
    form = {i: singular for i in singular} | {i: plural for i in plural}
    out = token_ids.copy()
    for row in range(len(out)):
        valid = positions[row][positions[row] >= 0]
        if len(valid):
            position = int(valid[rng.integers(len(valid))])
            choices = [o for o in form[int(out[row, position])] if o != out[row, position]]
            out[row, position] = choices[int(rng.integers(len(choices)))]
    return out


def attribute_targets(pool: ScenePoolV2, index: np.ndarray, rows: np.ndarray, slots: np.ndarray) -> dict[str, torch.Tensor]:
    """Per (scene, group) target class of every attribute; unsaid optional ones -> the last class."""
    out = {}
    for k, values in ATTRIBUTES.items():
        target = getattr(pool, k)[index][rows, slots].astype(np.int64)
        if k in SPOKEN_OPTIONALLY:
            target = np.where(getattr(pool, f"{k}_said")[index][rows, slots], target, len(values))
        out[k] = torch.from_numpy(target)
    return out


def pretrain_text_encoder_v2(
    pool: ScenePoolV2,
    out_dir: Path,
    steps: int = 400,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    padding_weight: float = 1.0,
    log_every: int = 25,
) -> CLIPTextModel:
    """Pretrain the v2 text encoder on `pool`; save it to `out_dir` and return it.

    Losses (v1's recipe): sentence contrastive against a CNN with hard negatives (one noun,
    colour or texture word swapped), object contrastive between each noun's state and the CNN
    features pooled over its group's exact mask, attribute heads on the noun state (shape,
    colour, texture, size, count) and on "background", and uninformative padding.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    text_encoder = build_text_encoder_v2()
    image_encoder = ImageEncoder()
    heads = AttributeHeads()
    parameters = [*text_encoder.parameters(), *image_encoder.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.05)
    colour_ids = [V2.word_to_id[c] for c in OBJECT_COLOURS]
    texture_ids = [V2.word_to_id[t] for t in TEXTURES]
    empty = torch.from_numpy(V2.encode(""))[None]
    log, start = [], time.time()
    for step in range(1, steps + 1):
        index = rng.integers(0, len(pool), batch_size)
        token_ids = pool.token_ids[index]
        negatives = [
            _swap_nouns(token_ids, pool.noun_position[index], rng),
            _hard_negatives(token_ids, pool.colour_position[index], colour_ids, rng),
            _hard_negatives(token_ids, pool.texture_position[index], texture_ids, rng),
        ]
        all_ids = torch.cat([torch.from_numpy(np.concatenate([token_ids, *negatives])), empty])
        hidden = text_encoder(input_ids=all_ids).last_hidden_state
        hidden, empty_hidden, all_ids = hidden[:-1], hidden[-1], all_ids[:-1]
        eos_at = (all_ids == EOS_ID).int().argmax(dim=1)
        is_padding = torch.arange(all_ids.shape[1])[None] > eos_at[:, None]
        padding_loss = (((hidden - empty_hidden[None].detach()) ** 2).mean(-1) * is_padding).sum() / is_padding.sum()
        sentence = heads.text_projection(hidden[torch.arange(len(all_ids)), eos_at])

        images = torch.from_numpy(pool.images[index]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        feature_map, image_global = image_encoder(images)
        scale = heads.log_scale.exp().clamp(max=100)
        logits = scale * F.normalize(heads.image_projection(image_global), dim=-1) @ F.normalize(sentence, dim=-1).T
        target = torch.arange(batch_size)
        sentence_loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :batch_size].T, target))

        rows, slots = np.nonzero(pool.noun_position[index] >= 0)
        noun_states = hidden[torch.from_numpy(rows), torch.from_numpy(pool.noun_position[index][rows, slots].astype(np.int64))]
        labels = torch.from_numpy(pool.labels[index][rows]).long()
        masks = (labels == torch.from_numpy(slots + 1).view(-1, 1, 1)).float()
        masks = F.avg_pool2d(masks.unsqueeze(1), 4).squeeze(1)  # to the CNN's stride-4 grid
        pooled = torch.einsum("nchw,nhw->nc", feature_map[torch.from_numpy(rows)], masks) / masks.sum((1, 2)).clamp(min=1e-3)[:, None]
        object_loss = _info_nce(heads.noun_projection(noun_states), heads.object_projection(pooled), scale)

        targets = attribute_targets(pool, index, rows, slots)
        attribute_loss = sum(F.cross_entropy(heads.attributes[k](noun_states), targets[k]) for k in ATTRIBUTES)
        has_bg = np.nonzero(pool.background_position[index] >= 0)[0]
        if len(has_bg):
            bg_states = hidden[torch.from_numpy(has_bg), torch.from_numpy(pool.background_position[index][has_bg].astype(np.int64))]
            attribute_loss = attribute_loss + F.cross_entropy(heads.background(bg_states),
                                                              torch.from_numpy(pool.background[index][has_bg].astype(np.int64)))
        loss = sentence_loss + object_loss + attribute_loss + padding_weight * padding_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps:
            with torch.no_grad():
                accuracy = {f"noun_{k}_accuracy": round(float((heads.attributes[k](noun_states).argmax(1) == targets[k]).float().mean()), 3)
                            for k in ATTRIBUTES}
            entry = {"step": step, "loss": round(float(loss), 4), "sentence": round(float(sentence_loss), 4),
                     "object": round(float(object_loss), 4), "attributes": round(float(attribute_loss), 4),
                     "padding": round(float(padding_loss), 4),
                     "sentence_accuracy": round(float((logits.argmax(1) == target).float().mean()), 3), **accuracy,
                     "elapsed_s": round(time.time() - start, 1)}
            log.append(entry)
            print("text_encoder", json.dumps(entry), flush=True)
    out_dir = Path(out_dir)
    text_encoder.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "train_state.json").write_text(json.dumps(
        {"steps": steps, "batch_size": batch_size, "seed": seed, "padding_weight": padding_weight,
         "wall_s": round(time.time() - start, 1), "max_groups": MAX_GROUPS, "log": log}, indent=1))
    return text_encoder
