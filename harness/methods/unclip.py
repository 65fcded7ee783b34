"""unCLIP's image-embedding manipulations (Ramesh et al., 2022, section 3): variations,
interpolations and text diffs, on any :class:`harness.models.unclip.UnCLIPModel`.

- ``unclip_variations``: decode an input image's CLIP embedding ``variations`` times, each with
  its own decoder noise (sample arrays ``variations`` (N, H, W, 3), ``variation_embeds`` (N, D),
  ``input_embed`` (D,)).
- ``unclip_interpolation``: slerp between the record's image and its partner image
  (``meta["image_b_path"]`` or ``meta["renderer_b_args"]``) at ``frames`` evenly spaced
  fractions, every frame decoded with the *same* noise, as the paper fixes it (arrays ``frames``,
  ``frame_embeds``, ``thetas``).
- ``unclip_textdiff``: ``z_d = normalise(t_to - t_from)`` for the captions ``meta["caption_from"]``
  and ``meta["caption_to"]``; each step size ``theta`` decodes ``slerp(z_i, z_d, theta)`` with the
  same noise (arrays ``edits``, ``edit_embeds``, ``target_text_embed``, ``step_sizes``).

Embeddings are unit-normalised before slerp and rescaled, before decoding, to the mean raw norm
of the record's own image embeddings (the scale the decoder was trained on). The decoded images are re-embedded with the model's own CLIP image encoder, the
features the unCLIP metrics (``harness.metrics.unclip``) score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.attention import prompt_words, swap_processors, word_token_positions
from harness.data.prompts import PromptRecord
from harness.errors import ConfigError, DataError
from harness.methods.base import Method
from harness.store.samples import Sample


def slerp(a: torch.Tensor, b: torch.Tensor, theta: float) -> torch.Tensor:
    """Spherical interpolation between the directions of ``a`` and ``b`` (unit-norm result).

    ``slerp(a, b, t) = sin((1 - t) w) / sin w * a + sin(t w) / sin w * b`` with ``w`` the angle
    between the unit vectors; linear interpolation (renormalised) when they are (anti)parallel
    within float precision. Written here: torch has no slerp.
    """
    a = torch.nn.functional.normalize(a.double(), dim=-1)
    b = torch.nn.functional.normalize(b.double(), dim=-1)
    cos = (a * b).sum(-1).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if float(torch.sin(omega)) < 1e-7:
        out = (1 - theta) * a + theta * b
    else:
        out = (torch.sin((1 - theta) * omega) * a + torch.sin(theta * omega) * b) / torch.sin(omega)
    return torch.nn.functional.normalize(out, dim=-1).float()


def text_diff_direction(text_from: torch.Tensor, text_to: torch.Tensor) -> torch.Tensor:
    """DALL-E 2's text diff: the unit vector along ``t_to - t_from`` (both unit-normalised first)."""
    a = torch.nn.functional.normalize(text_from.double(), dim=-1)
    b = torch.nn.functional.normalize(text_to.double(), dim=-1)
    diff = b - a
    if float(diff.norm()) < 1e-12:
        raise DataError("the two captions embed identically: their text diff has no direction")
    return torch.nn.functional.normalize(diff, dim=-1).float()


def partner_image(record: PromptRecord) -> np.ndarray:
    """The second image of an interpolation record (``image_b_path`` or ``renderer_b_args``)."""
    from harness.data.image_sets import load_record_image

    meta = record.meta
    if "image_b_path" in meta:
        partner = PromptRecord(f"{record.id}:b", record.prompt, record.seed, {"image_path": meta["image_b_path"]})
    elif "renderer_b_args" in meta and "renderer" in meta:
        partner = PromptRecord(f"{record.id}:b", record.prompt, record.seed,
                               {"renderer": meta["renderer"], "renderer_args": meta["renderer_b_args"]})
    else:
        raise DataError(f"Record {record.id!r} has no second image for interpolation: its meta needs image_b_path "
                        "or renderer_b_args (dataset=unclip_toy builds both).")
    return load_record_image(partner)[0]


class _UnclipMethod(Method):
    version = "1"

    def __init__(self, method_cfg: Any, model: Any, generation: Any) -> None:
        super().__init__(method_cfg, model, generation)
        if not hasattr(model, "decode") or not hasattr(model, "encode_images"):
            raise ConfigError(f"method={self.name} needs an unCLIP model (model=karlo, sd21_unclip, tiny_karlo or "
                              f"tiny_sd21_unclip), not model={model.name}.")

    def extra_spec(self, record: PromptRecord) -> dict[str, Any]:
        return {"meta": {k: v for k, v in record.meta.items() if k != "nouns"}}

    def _image(self, record: PromptRecord) -> np.ndarray:
        from harness.data.image_sets import load_record_image

        return load_record_image(record)[0]

    def _embed(self, images: list[np.ndarray]) -> torch.Tensor:
        self.model.raw_norm(images)  # the decoder's input scale: the raw norm of this record's own images
        return self.model.encode_images(images)

    def _decode(self, embedding: torch.Tensor, seed: int, prompt: str = "") -> np.ndarray:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return self.model.decode(embedding, generator, self.generation.steps, self.generation.guidance_scale, prompt)

    def run_batch(self, records: list[PromptRecord], seeds: list[int]) -> list[Sample]:
        return [self.run_one(record, seed) for record, seed in zip(records, seeds)]

    def run_one(self, record: PromptRecord, seed: int) -> Sample:
        raise NotImplementedError


class UnclipVariations(_UnclipMethod):
    """``method=unclip_variations`` (module docstring)."""

    name = "unclip_variations"

    def run_one(self, record: PromptRecord, seed: int) -> Sample:
        image = self._image(record)
        embedding = self._embed([image])[0]
        variations = np.stack([self._decode(embedding, seed + k) for k in range(int(self.cfg.variations))])
        embeds = self.model.encode_images(list(variations)).numpy()
        return Sample(image=variations[0], arrays={"input": image, "variations": variations,
                                                   "variation_embeds": embeds, "input_embed": embedding.numpy()},
                      meta={"kind": "unclip_variations"})

    def save_figures(self, run_dir: str | Path, records: list[PromptRecord], samples: dict[str, Sample],
                     rows: Any = None) -> list[Path]:
        """``figures/variations_<id>.png``: the input, then its variations."""
        return _save_strips(run_dir, records, samples, "variations", "input", lambda s: [f"var {k}" for k in range(len(s.arrays["variations"]))])


class UnclipInterpolation(_UnclipMethod):
    """``method=unclip_interpolation`` (module docstring)."""

    name = "unclip_interpolation"

    def run_one(self, record: PromptRecord, seed: int) -> Sample:
        frames_n = int(self.cfg.frames)
        if frames_n < 2:
            raise ConfigError(f"method.frames={frames_n}: an interpolation needs at least 2 frames.")
        first, second = self._image(record), partner_image(record)
        embeds = self._embed([first, second])
        thetas = np.linspace(0.0, 1.0, frames_n)
        frames = np.stack([self._decode(slerp(embeds[0], embeds[1], float(t)), seed) for t in thetas])
        return Sample(image=frames[0], arrays={"frames": frames, "frame_embeds": self.model.encode_images(list(frames)).numpy(),
                                               "thetas": thetas, "endpoints": np.stack([first, second])},
                      meta={"kind": "unclip_interpolation"})

    def save_figures(self, run_dir: str | Path, records: list[PromptRecord], samples: dict[str, Sample],
                     rows: Any = None) -> list[Path]:
        """``figures/frames_<id>.png``: the interpolation strip."""
        return _save_strips(run_dir, records, samples, "frames", None, lambda s: [f"{t:.2f}" for t in s.arrays["thetas"]])


class UnclipTextdiff(_UnclipMethod):
    """``method=unclip_textdiff`` (module docstring)."""

    name = "unclip_textdiff"

    def __init__(self, method_cfg: Any, model: Any, generation: Any) -> None:
        super().__init__(method_cfg, model, generation)
        encoder = getattr(model.pipeline, "text_encoder", None)
        if not hasattr(encoder, "text_projection"):  # refuse before generating anything
            model.encode_texts([""])

    def run_one(self, record: PromptRecord, seed: int) -> Sample:
        try:
            caption_from, caption_to = record.meta["caption_from"], record.meta["caption_to"]
        except KeyError:
            raise DataError(f"Record {record.id!r}: a text diff needs meta caption_from and caption_to.") from None
        image = self._image(record)
        embedding = self._embed([image])[0]
        texts = self.model.encode_texts([caption_from, caption_to])
        direction = text_diff_direction(texts[0], texts[1])
        steps = [float(s) for s in self.cfg.step_sizes]
        edits = np.stack([self._decode(slerp(embedding, direction, s), seed) for s in steps])
        return Sample(image=edits[-1], arrays={"input": image, "edits": edits,
                                               "edit_embeds": self.model.encode_images(list(edits)).numpy(),
                                               "target_text_embed": texts[1].numpy(), "source_text_embed": texts[0].numpy(),
                                               "step_sizes": np.asarray(steps)},
                      meta={"kind": "unclip_textdiff", "caption_from": caption_from, "caption_to": caption_to})

    def save_figures(self, run_dir: str | Path, records: list[PromptRecord], samples: dict[str, Sample],
                     rows: Any = None) -> list[Path]:
        """``figures/edits_<id>.png`` strips (the metric ``unclip_textdiff`` plots its CLIP scores)."""
        return _save_strips(run_dir, records, samples, "edits", "input",
                            lambda s: [f"step {t:.2f}" for t in s.arrays["step_sizes"]])


def _save_strips(run_dir: str | Path, records: list[PromptRecord], samples: dict[str, Sample], key: str,
                 first_key: str | None, labels: Any) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from harness.heatmaps import figure_file_name

    folder = Path(run_dir) / "figures"
    written = []
    for record in records:
        sample = samples.get(record.id)
        if sample is None or key not in sample.arrays:
            continue
        panels = ([(sample.arrays[first_key], "input")] if first_key else []) + list(zip(sample.arrays[key], labels(sample)))
        figure, axes = plt.subplots(1, len(panels), figsize=(1.6 * len(panels), 1.9))
        for axis, (image, label) in zip(np.atleast_1d(axes), panels):
            axis.imshow(image)
            axis.set_title(label, fontsize=7)
            axis.axis("off")
        figure.suptitle(record.prompt, fontsize=7)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{key}_{figure_file_name(str(record.id))}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


# ----------------------------------------------------------------------------- DAAM through Karlo's decoder


def word_positions(tokenizer: Any, caption: str, words: list[str]) -> dict[str, list[int]]:
    """word -> its caption token positions (BOS at 0), first occurrence, by the harness's one
    word-to-token mapper (:func:`harness.attention.word_token_positions`): a word that is not in
    the caption is a ConfigError naming the caption's words, never silently dropped."""
    return {word: word_token_positions(tokenizer, caption, word, occurrence="first") for word in words}


def caption_conditioning(pipeline: Any, caption: str, guided: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt embeds, text hidden states, token mask) of ``caption`` for Karlo's decoder, encoded as
    ``UnCLIPPipeline`` encodes a prompt (the unconditional "" first when ``guided``), from the
    pipeline's public tokenizer and text encoder."""
    texts = ["", caption] if guided else [caption]
    tokens = pipeline.tokenizer(texts, padding="max_length", max_length=pipeline.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
    device = pipeline.text_encoder.device
    output = pipeline.text_encoder(tokens.input_ids.to(device))
    return output.text_embeds, output.last_hidden_state, tokens.attention_mask.bool().to(device)


class _DecoderTracer:
    """A copy of diffusers' ``AttnAddedKVProcessor`` that also keeps, per word, the conditional rows'
    attention to the word's caption tokens (written here: no library traces this processor).

    The decoder's keys are ``[context tokens (4), caption tokens (77), own pixels]`` in one softmax;
    a word's map is the probability mass on its tokens, mean over heads, at the layer's resolution.
    """

    def __init__(self, maps: dict[str, list[torch.Tensor]], offset: int, positions: dict[str, list[int]]) -> None:
        self.maps, self.offset, self.positions = maps, offset, positions

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        hidden_states = hidden_states.view(hidden_states.shape[0], hidden_states.shape[1], -1).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key_text = attn.head_to_batch_dim(attn.add_k_proj(encoder_hidden_states))
        value_text = attn.head_to_batch_dim(attn.add_v_proj(encoder_hidden_states))
        if not attn.only_cross_attention:
            key = torch.cat([key_text, attn.head_to_batch_dim(attn.to_k(hidden_states))], dim=1)
            value = torch.cat([value_text, attn.head_to_batch_dim(attn.to_v(hidden_states))], dim=1)
        else:
            key, value = key_text, value_text
        attention_probs = attn.get_attention_scores(query, key, attention_mask)
        self._record(attention_probs, batch_size, attn.heads, sequence_length)
        hidden_states = attn.batch_to_head_dim(torch.bmm(attention_probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        return hidden_states.transpose(-1, -2).reshape(residual.shape) + residual

    def _record(self, probs: torch.Tensor, batch: int, heads: int, pixels: int) -> None:
        side = int(round(pixels ** 0.5))
        if side * side != pixels:
            return
        probs = probs.view(batch, heads, pixels, -1)[batch // 2:] if batch > 1 else probs.view(batch, heads, pixels, -1)
        for word, positions in self.positions.items():
            columns = [self.offset + p for p in positions]
            self.maps.setdefault(word, []).append(probs[..., columns].sum(-1).mean(1)[0].reshape(side, side).float())


@torch.no_grad()
def karlo_decode_with_caption(model: Any, embedding: torch.Tensor, caption: str, generator: torch.Generator, steps: int,
                              guidance_scale: float, words: list[str] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Decode ``embedding`` with Karlo's decoder conditioned on ``caption`` (as ``UnCLIPPipeline``'s
    decoder stage is), tracing each word's cross-attention when ``words`` is given.

    Returns (image uint8, {word: map at the decoder's resolution, summed over steps, mean over layers}).
    """
    import torch.nn.functional as F

    pipeline = model.pipeline
    if model.kind != "karlo":
        raise ConfigError(f"model={model.name} has no Karlo decoder; DAAM through the unCLIP decoder needs model=karlo.")
    # The variation pipeline conditions its decoder on an empty prompt and has no argument for
    # another: public torch forward pre-hooks on its text_proj and decoder components swap in the
    # caption's encoding and token mask (nothing private of the pipeline is touched).
    prompt_embeds, hidden_states, text_mask = caption_conditioning(pipeline, caption, guidance_scale > 1.0)
    decoder_mask = F.pad(text_mask, (int(pipeline.text_proj.clip_extra_context_tokens), 0), value=True)

    def with_caption(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "prompt_embeds": prompt_embeds.to(kwargs["prompt_embeds"].dtype),
                      "text_encoder_hidden_states": hidden_states.to(kwargs["text_encoder_hidden_states"].dtype)}

    def with_caption_mask(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "attention_mask": decoder_mask}

    maps: dict[str, list[torch.Tensor]] = {}
    tracer = None
    if words:
        positions = word_positions(pipeline.tokenizer, caption, words)
        tracer = _DecoderTracer(maps, int(pipeline.text_proj.clip_extra_context_tokens), positions)
    hooks = [pipeline.text_proj.register_forward_pre_hook(with_caption, with_kwargs=True),
             pipeline.decoder.register_forward_pre_hook(with_caption_mask, with_kwargs=True)]
    try:
        with swap_processors(pipeline.decoder, (lambda name, current: tracer) if tracer else {}):
            image = model.decode(embedding, generator, steps, guidance_scale)
    finally:
        for hook in hooks:
            hook.remove()
    size = int(pipeline.decoder.config.sample_size)
    heat = {}
    for word, layer_maps in maps.items():
        resized = [F.interpolate(m[None, None], size=(size, size), mode="bicubic", align_corners=False)[0, 0].clamp(min=0)
                   for m in layer_maps]
        # DAAM's aggregation: sum over time, mean over layers (the calls per step are the layers)
        n_layers = max(1, len(layer_maps) // max(1, steps))
        heat[word] = (torch.stack(resized).sum(0) / n_layers).numpy().astype(np.float32)
    return image, heat


class UnclipDAAM(_UnclipMethod):
    """``method=unclip_daam``: DAAM maps of the record's caption words through Karlo's decoder, decoding
    the record image's CLIP embedding with the caption (arrays ``heatmap:<word>``, meta ``words``)."""

    name = "unclip_daam"

    def __init__(self, method_cfg: Any, model: Any, generation: Any) -> None:
        super().__init__(method_cfg, model, generation)
        if getattr(model, "kind", None) != "karlo":
            model.check_daam()

    def run_one(self, record: PromptRecord, seed: int) -> Sample:
        embedding = self._embed([self._image(record)])[0]
        words = list(dict.fromkeys(prompt_words(record.prompt)))
        image, heat = karlo_decode_with_caption(self.model, embedding, record.prompt,
                                                torch.Generator(device="cpu").manual_seed(seed),
                                                self.generation.steps, self.generation.guidance_scale, words)
        return Sample(image=image, arrays={f"heatmap:{w}": m for w, m in heat.items()},
                      meta={"words": [w for w in words if w in heat], "kind": "unclip_daam"})

    def save_figures(self, run_dir: str | Path, records: list[PromptRecord], samples: dict[str, Sample],
                     rows: Any = None) -> list[Path]:
        """DAAM overlays (``figures/<id>.png``), as ``method=daam`` draws them."""
        from harness.heatmaps import save_overlays

        return save_overlays(run_dir, records, samples)
