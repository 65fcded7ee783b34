"""The toy model's text encoder: a small causal CLIPTextModel, pretrained as a toy CLIP, then frozen.

Why this shape. Stable Diffusion's cross-attention puts a noun's attention on its object
because its text encoder (CLIP) is pretrained and frozen: in a causal encoder the noun is the
last word of its phrase, so its hidden state can summarise the whole object ("a small red
circle"), and the UNet, which cannot change the encoder, learns to read objects from those
states. A jointly trained encoder lets the UNet route colour through the adjective instead
(METHODS.md §6). The pretraining here therefore asks more of the noun than CLIP's sentence
loss alone:

1. sentence-level contrastive loss (the end-of-text state vs a CNN image embedding), with
   hard negatives that change only one object's shape or only its colour;
2. object-level contrastive loss: each noun's hidden state vs the CNN features pooled over
   that object's exact mask, so the noun state must identify its object (shape, colour, size);
3. attribute heads on each noun's state (shape, colour or "not said", size or "not said") and
   on the word "background" (background colour);
4. optionally (`padding_weight` > 0), uninformative padding: the states of the padding after
   the end-of-text token are pulled to those of the empty caption. A causal encoder's padding
   states otherwise summarise the whole caption, and the UNet can read every object from
   them without looking at any word (run2 put 56% of its cross-attention on padding); constant
   padding only serves as an attention sink, like Stable Diffusion's start token.
Adjective states get no loss of their own. The image encoder and heads are thrown away.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from harness.toy.data import MAX_OBJECTS, ScenePool
from harness.toy.tokens import BOS_ID, CONTEXT_LENGTH, EOS_ID, PAD_ID, VOCAB_SIZE, WORD_TO_ID, encode
from harness.toy.world import ALL_COLOURS, OBJECT_COLOURS, SHAPES, SIZES

HIDDEN_SIZE = 128


def build_text_encoder(vocab_size: int = VOCAB_SIZE) -> CLIPTextModel:
    """A fresh toy CLIP text encoder (causal, like CLIP), in the training id space (v1's by default)."""
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=4 * HIDDEN_SIZE,
        projection_dim=HIDDEN_SIZE,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=CONTEXT_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    return CLIPTextModel(config)


class ImageEncoder(nn.Module):
    """A small CNN: 32x32 image -> 8x8 feature map and a global embedding (pretraining only)."""

    def __init__(self, width: int = 32, dim: int = HIDDEN_SIZE):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        # Two extra input channels give the CNN absolute position (x, y), which CNNs lack.
        self.features = nn.Sequential(
            block(5, width, 2), block(width, 2 * width, 1), block(2 * width, 2 * width, 2), block(2 * width, dim, 1),
        )
        self.global_head = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = images.shape
        ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
        feature_map = self.features(torch.cat([images, xs, ys], dim=1))
        return feature_map, self.global_head(feature_map.mean(dim=(2, 3)))


class PretrainingHeads(nn.Module):
    """Projections and classifiers used only during pretraining."""

    def __init__(self, dim: int = HIDDEN_SIZE):
        super().__init__()
        self.text_projection = nn.Linear(dim, dim, bias=False)
        self.image_projection = nn.Linear(dim, dim, bias=False)
        self.noun_projection = nn.Linear(dim, dim, bias=False)
        self.object_projection = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.shape = nn.Linear(dim, len(SHAPES))
        self.colour = nn.Linear(dim, len(OBJECT_COLOURS) + 1)  # last class: colour not said
        self.size = nn.Linear(dim, len(SIZES) + 1)  # last class: size not said
        self.background = nn.Linear(dim, len(ALL_COLOURS))
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))


def _info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between matched rows of a and b."""
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    target = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _hard_negatives(token_ids: np.ndarray, positions: np.ndarray, options: list[int], rng: np.random.Generator) -> np.ndarray:
    """Copies of `token_ids` with one object's word (at `positions`) swapped for another option."""
    out = token_ids.copy()
    for row in range(len(out)):
        valid = positions[row][positions[row] >= 0]
        if len(valid) == 0:
            continue
        position = int(valid[rng.integers(len(valid))])
        current = out[row, position]
        choices = [o for o in options if o != current]
        out[row, position] = choices[int(rng.integers(len(choices)))]
    return out


def pretrain_text_encoder(
    pool: ScenePool,
    out_dir: Path,
    steps: int = 1500,
    batch_size: int = 96,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log_every: int = 50,
    padding_weight: float = 0.0,
) -> CLIPTextModel:
    """Pretrain the toy CLIP on the pool, save the text encoder to `out_dir`, return it."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    text_encoder = build_text_encoder()
    image_encoder = ImageEncoder()
    heads = PretrainingHeads()
    parameters = [*text_encoder.parameters(), *image_encoder.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.05)
    shape_ids = [WORD_TO_ID[s] for s in SHAPES]
    colour_ids = [WORD_TO_ID[c] for c in OBJECT_COLOURS]
    log = []
    start = time.time()
    for step in range(1, steps + 1):
        index = rng.integers(0, len(pool), batch_size)
        token_ids = pool.token_ids[index]
        shape_negatives = _hard_negatives(token_ids, pool.noun_position[index], shape_ids, rng)
        colour_negatives = _hard_negatives(token_ids, pool.colour_position[index], colour_ids, rng)
        all_ids = torch.from_numpy(np.concatenate([token_ids, shape_negatives, colour_negatives]))
        if padding_weight == 0:
            # The encoder is causal: dropping the trailing padding leaves every earlier state unchanged.
            all_ids = all_ids[:, : int((all_ids == EOS_ID).int().argmax(dim=1).max()) + 1]
        else:
            # The empty caption rides along as the padding target.
            all_ids = torch.cat([all_ids, torch.from_numpy(encode(""))[None]])
        hidden = text_encoder(input_ids=all_ids).last_hidden_state  # (3B, L, D)
        padding_loss = torch.zeros(())
        if padding_weight > 0:
            hidden, empty = hidden[:-1], hidden[-1]
            all_ids = all_ids[:-1]
            eos_at = (all_ids == EOS_ID).int().argmax(dim=1, keepdim=True)
            is_padding = torch.arange(all_ids.shape[1])[None] > eos_at
            padding_loss = (((hidden - empty[None].detach()) ** 2).mean(-1) * is_padding).sum() / is_padding.sum()
        eos_position = (all_ids == EOS_ID).int().argmax(dim=1)
        sentence = heads.text_projection(hidden[torch.arange(len(all_ids)), eos_position])

        images = torch.from_numpy(pool.images[index]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        feature_map, image_global = image_encoder(images)
        image_embedding = heads.image_projection(image_global)
        scale = heads.log_scale.exp().clamp(max=100)

        # 1. Sentence level: image -> its caption among all captions and hard negatives.
        logits = scale * F.normalize(image_embedding, dim=-1) @ F.normalize(sentence, dim=-1).T
        target = torch.arange(batch_size)
        sentence_loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :batch_size].T, target))

        # 2. Object level: noun state vs CNN features pooled over the object's exact mask.
        labels = torch.from_numpy(pool.labels[index]).long()
        rows, slots = np.nonzero(pool.noun_position[index] >= 0)
        noun_states = hidden[torch.from_numpy(rows), torch.from_numpy(pool.noun_position[index][rows, slots].astype(np.int64))]
        masks = (labels[torch.from_numpy(rows)] == torch.from_numpy(slots + 1).view(-1, 1, 1)).float()
        masks = F.avg_pool2d(masks.unsqueeze(1), 4).squeeze(1)  # to the 8x8 feature grid
        pooled = torch.einsum("nchw,nhw->nc", feature_map[torch.from_numpy(rows)], masks) / masks.sum((1, 2)).clamp(min=1e-3).unsqueeze(1)
        object_loss = _info_nce(heads.noun_projection(noun_states), heads.object_projection(pooled), scale)

        # 3. Attributes read from the noun state (and the background word).
        shape_target = torch.from_numpy(pool.shape[index][rows, slots].astype(np.int64))
        colour_target = torch.from_numpy(np.where(pool.colour_said[index][rows, slots], pool.colour[index][rows, slots], len(OBJECT_COLOURS)).astype(np.int64))
        size_target = torch.from_numpy(np.where(pool.size_said[index][rows, slots], pool.size[index][rows, slots], len(SIZES)).astype(np.int64))
        attribute_loss = (
            F.cross_entropy(heads.shape(noun_states), shape_target)
            + F.cross_entropy(heads.colour(noun_states), colour_target)
            + F.cross_entropy(heads.size(noun_states), size_target)
        )
        has_background = np.nonzero(pool.background_position[index] >= 0)[0]
        if len(has_background):
            background_states = hidden[torch.from_numpy(has_background), torch.from_numpy(pool.background_position[index][has_background].astype(np.int64))]
            attribute_loss = attribute_loss + F.cross_entropy(
                heads.background(background_states), torch.from_numpy(pool.background[index][has_background].astype(np.int64))
            )

        loss = sentence_loss + object_loss + attribute_loss + padding_weight * padding_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps:
            with torch.no_grad():
                loss, sentence_loss, object_loss, attribute_loss = (x.detach() for x in (loss, sentence_loss, object_loss, attribute_loss))
                sentence_accuracy = float((logits.argmax(1) == target).float().mean())
                shape_accuracy = float((heads.shape(noun_states).argmax(1) == shape_target).float().mean())
                colour_accuracy = float((heads.colour(noun_states).argmax(1) == colour_target).float().mean())
            entry = {
                "step": step, "loss": round(float(loss), 4), "sentence": round(float(sentence_loss), 4),
                "object": round(float(object_loss), 4), "attributes": round(float(attribute_loss), 4), "padding": round(float(padding_loss), 4),
                "sentence_accuracy": round(sentence_accuracy, 3), "noun_shape_accuracy": round(shape_accuracy, 3),
                "noun_colour_accuracy": round(colour_accuracy, 3), "elapsed_s": round(time.time() - start, 1),
            }
            log.append(entry)
            print("text_encoder", json.dumps(entry), flush=True)
    out_dir = Path(out_dir)
    text_encoder.save_pretrained(out_dir, safe_serialization=True)
    summary = {"steps": steps, "batch_size": batch_size, "seed": seed, "padding_weight": padding_weight, "wall_s": round(time.time() - start, 1),
               "max_objects": MAX_OBJECTS, "log": log}
    (out_dir / "train_state.json").write_text(json.dumps(summary, indent=1))
    return text_encoder
