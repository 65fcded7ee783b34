"""Word maps and ConceptAttention from the joint attention of multi-modal diffusion transformers.

SD3/SD3.5 (``SD3Transformer2DModel``) and Flux (``FluxTransformer2DModel``) have no
cross-attention: image and text tokens attend over one joint key set (SD3 and Flux's
double-stream blocks project the two streams with their own weights; Flux's single-stream blocks
run one sequence, text first). :class:`JointAttentionTracer` reads, for every traced joint
attention, the image-query x text-key block of ``softmax(Q K^T / sqrt(d))`` over the **full**
joint key set, as the model computes it, for the kept batch rows (the :class:`BatchLayout` of
the UNet path). The probabilities are formed chunk by chunk over image queries (a chunk's
scores against all keys give its log-sum-exp; only its text columns are kept, averaged over
heads) and added to a running sum, so no (image x joint) matrix is ever held whole: a
4,096-token Flux image keeps per layer a (4,096 x kept text tokens) sum, not 4,096 x 4,608 x 24,
and a chunk's scores are bounded by a small multiple of the layer's own query tensor.

The wrapped processors still compute every layer's output with the model's own processor, so a
traced run produces the same image. Layer and step windows, per-step maps, batch layouts and
upsampling are those of :class:`AttentionTracer` (whose bookkeeping this class inherits); all
joint layers share the patch grid, so each layer's map is averaged over its heads when captured
and layers are averaged after upsampling to the latent grid.

ConceptAttention (Helbling et al., ICML 2025): with ``concepts`` given (one embedding per concept
in the text encoder's space, e.g. from :func:`concept_embeddings`), concept tokens enter each
joint block beside the text and pass through it with the **text stream's** weights (its
modulation from the same conditioning vector, norm, q/k/v projections and q/k norms, output
projection, MLP). Concept queries attend to the image keys and to the concept keys; nothing
attends to the concepts, so the image and text streams, and the generated image, are unchanged
(bit for bit). At the declared layers the map of concept ``c`` at image token ``x`` is
``softmax_c(<o_c, o_x>)`` with ``o`` the attention outputs after the output projections (as the
reference code's einsum), and the raw cross-attention variant is ``softmax_c(q_x . k_c)``
(averaged over heads). Maps are averaged over the declared layers and steps. Concepts pass only
through the joint (double-stream) blocks, as in the reference; Flux's single-stream blocks give
word maps only.

Hand-written because no library exposes these probabilities: diffusers' processors call a fused
kernel that never forms them, and the reference code forks Flux's model files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from harness.attention.capture import AttentionTracer, BatchLayout, aggregate_layer_maps
from harness.attention.swap import resolve_unet, select_layers
from harness.attention.words import TextAxis, TextSegment
from harness.errors import ConfigError

#: score elements (rows x heads x queries x keys) formed at once: at most this many (64 MiB in float32) ...
CHUNK_ELEMENTS = 1 << 24
#: ... and at most this many times the layer's own query tensor (so the capture's extra working memory
#: stays a small multiple of what the layer itself holds), but never fewer than CHUNK_MIN_ELEMENTS
CHUNK_QUERY_FACTOR = 2
CHUNK_MIN_ELEMENTS = 1 << 16

#: The text axis of each joint-attention pipeline: (tokenizer attribute, offset, length or None for
#: the pipeline's max_sequence_length). SD3: 77 CLIP positions (CLIP-L and bigG share one
#: tokenization, joined along channels), then the T5 positions; Flux: T5 only (CLIP gives the pooled vector).
TEXT_LAYOUTS: dict[str, list[tuple[str, int, int | None]]] = {
    "StableDiffusion3Pipeline": [("tokenizer", 0, 77), ("tokenizer_3", 77, None)],
    "StableDiffusion3PAGPipeline": [("tokenizer", 0, 77), ("tokenizer_3", 77, None)],
    "StableDiffusion3Img2ImgPipeline": [("tokenizer", 0, 77), ("tokenizer_3", 77, None)],
    "FluxPipeline": [("tokenizer_2", 0, None)],
}


def is_joint_model(model: Any) -> bool:
    """Whether ``model``'s denoiser is a joint-attention transformer (SD3/SD3.5/Flux)."""
    return bool(joint_attention_layers(model))


def joint_attention_layers(model: Any) -> list[str]:
    """Module names of the joint attentions that see text keys, in model order: every
    ``transformer_blocks.N.attn`` (SD3 joint / Flux double-stream) and
    ``single_transformer_blocks.N.attn`` (Flux single-stream). SD3.5's image-only ``attn2`` is left out."""
    denoiser = resolve_unet(model)
    names = []
    for name, module in denoiser.named_modules():
        if not hasattr(module, "set_processor"):
            continue
        parts = name.split(".")
        if len(parts) == 3 and parts[0] in ("transformer_blocks", "single_transformer_blocks") and parts[2] == "attn":
            names.append(name)
    return names


def text_axis(pipeline: Any, prompts: Sequence[str], max_sequence_length: int | None = None) -> TextAxis:
    """The declared text axis of ``pipeline`` (see :data:`TEXT_LAYOUTS`), keeping what ``prompts`` use."""
    layout = TEXT_LAYOUTS.get(type(pipeline).__name__)
    if layout is None:
        raise ConfigError(f"No text layout is declared for {type(pipeline).__name__}; joint-attention word maps "
                          f"know {', '.join(sorted(TEXT_LAYOUTS))}.")
    segments = []
    for attribute, offset, length in layout:
        tokenizer = getattr(pipeline, attribute, None)
        if tokenizer is None:
            if attribute == "tokenizer_3":  # SD3 without T5: zeros there, no words
                continue
            raise ConfigError(f"{type(pipeline).__name__} has no {attribute}; its words cannot be mapped.")
        segments.append(TextSegment(tokenizer, offset, int(length or max_sequence_length or sequence_length(pipeline))))
    return TextAxis(segments, list(prompts))


def sequence_length(pipeline: Any) -> int:
    """The T5 length the pipeline pads to by default (its ``max_sequence_length`` argument's default)."""
    import inspect

    parameter = inspect.signature(type(pipeline).__call__).parameters.get("max_sequence_length")
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise ConfigError(f"{type(pipeline).__name__} does not declare max_sequence_length.")
    return int(parameter.default)


class JointAttentionCapture:
    """Attention processor: the wrapped processor's output, plus this layer's contribution to the
    tracer's word maps (and concept stream) for the kept rows."""

    def __init__(self, name: str, inner: Any, tracer: JointAttentionTracer) -> None:
        self.name = name
        self.inner = inner
        self.tracer = tracer

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None, **kwargs: Any) -> Any:
        if image_rotary_emb is not None:
            kwargs["image_rotary_emb"] = image_rotary_emb
        output = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)
        if self.tracer.capturing:
            with torch.no_grad():
                self.tracer.joint_call(self.name, attn, hidden_states, encoder_hidden_states, image_rotary_emb, output)
        return output


def _heads(tensor: torch.Tensor, attn: Any) -> torch.Tensor:
    """(batch, tokens, heads*dim) -> (batch, tokens, heads, dim)."""
    return tensor.unflatten(-1, (attn.heads, -1))


def _rope(tensor: torch.Tensor, rotary: Any, start: int, stop: int) -> torch.Tensor:
    """Flux's rotary embedding of positions ``start:stop`` on (batch, tokens, heads, dim)."""
    from diffusers.models.embeddings import apply_rotary_emb

    cos, sin = rotary
    return apply_rotary_emb(tensor, (cos[start:stop], sin[start:stop]), sequence_dim=1)


class JointAttentionTracer(AttentionTracer):
    """Context manager collecting joint-attention word maps (and, with ``concepts``, ConceptAttention maps).

    Args:
        model: a diffusers SD3/SD3.5/Flux pipeline, or its transformer with an explicit ``layout``.
        columns: positions of the joint text axis to keep (``TextAxis.columns``; None: all).
        layers / exclude_layers: fnmatch patterns over :func:`joint_attention_layers` (None: all).
        heads: indices of the heads averaged (None: all).
        step_window / per_step / layout / upsample / clamp: as :class:`AttentionTracer`.
        concepts: (concepts, text width) embeddings, the same for every image, or (images, concepts,
            width); None: no concept stream.
        concept_layers: fnmatch patterns of the joint layers whose concept maps are averaged (None: every
            joint layer with a text output projection).
    """

    def __init__(self, model: Any, columns: Sequence[int] | None = None, layers: Sequence[str] | None = None,
                 exclude_layers: Sequence[str] = (), heads: Sequence[int] | None = None,
                 step_window: Sequence[int] | None = None, per_step: bool = False,
                 layout: BatchLayout | str = "auto", upsample: str = "bicubic", clamp: bool = True,
                 concepts: torch.Tensor | None = None, concept_layers: Sequence[str] | None = None) -> None:
        super().__init__(model, layers=layers, exclude_layers=exclude_layers, factors=None, exclude_factors=(),
                         heads=None, step_window=step_window, per_step=per_step, layout=layout, upsample=upsample,
                         clamp=clamp, max_tokens=None)
        self.joint_heads = None if heads is None else [int(h) for h in heads]
        self.columns = None if columns is None else torch.as_tensor(list(columns), dtype=torch.long)
        self.concepts = concepts
        self.concept_layers: list[str] = []
        if concepts is not None:
            joint = [n for n in joint_attention_layers(model) if n.startswith("transformer_blocks.")]
            with_output = [n for n in joint if getattr(self.unet.get_submodule(n), "to_add_out", None) is not None]
            chosen = with_output if concept_layers is None else select_layers(model, list(concept_layers), (), joint)
            self.concept_layers = chosen

    def reset(self) -> None:
        """Forget everything captured so far, concept maps included."""
        super().reset()
        self.concept_sums: dict[str, torch.Tensor] = {}
        self.concept_calls = 0
        self.grid: tuple[int, int] | None = None
        self.text_length = 0
        self._temb: torch.Tensor | None = None
        self._concept_state: torch.Tensor | None = None
        self._concept_step: tuple | None = None
        self._concept_attended: torch.Tensor | None = None

    # -- hooks into AttentionTracer ---------------------------------------------------------------
    def _select_layers(self, patterns: list[str] | None, exclude: Sequence[str]) -> list[str]:
        if patterns is not None and not patterns:  # no word maps (the concept stream alone)
            return []
        return select_layers(self.model, patterns, exclude, joint_attention_layers(self.model))

    def _read_input(self, args: tuple, kwargs: dict) -> tuple[int, tuple[int, int]]:
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        self.text_length = int(context.shape[1]) if context is not None else 0
        if hidden.ndim == 4:  # SD3: (batch, channels, H, W) latents, patchified inside
            patch = int(self.unet.config.patch_size)
            height, width = int(hidden.shape[-2]), int(hidden.shape[-1])
            self.grid = (height // patch, width // patch)
        else:  # Flux: packed 2x2 latents with their position ids (0, row, column)
            ids = kwargs["img_ids"]
            ids = ids[0] if ids.ndim == 3 else ids
            self.grid = (int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1)
            height, width = 2 * self.grid[0], 2 * self.grid[1]
        self._concept_state = None
        return int(hidden.shape[0]), (height, width)

    def __enter__(self) -> JointAttentionTracer:
        from harness.attention.swap import swap_processors

        stack = contextlib.ExitStack()
        try:
            stack.enter_context(swap_processors(
                self.unet, lambda name, current: JointAttentionCapture(name, current, self) if name in self._wrapped() else None))
            pre = self.unet.register_forward_pre_hook(self._before_unet, with_kwargs=True)
            stack.callback(pre.remove)
            post = self.unet.register_forward_hook(self._after_unet)
            stack.callback(post.remove)
            if self.concepts is not None:
                temb = self.unet.time_text_embed.register_forward_hook(self._conditioning)
                stack.callback(temb.remove)
                for index, block in enumerate(self.unet.transformer_blocks):
                    name = f"transformer_blocks.{index}.attn"
                    before = block.register_forward_pre_hook(
                        lambda module, args, kwargs, name=name: self._concepts_before(module), with_kwargs=True)
                    after = block.register_forward_hook(lambda module, args, output: self._concepts_after(module))
                    stack.callback(before.remove)
                    stack.callback(after.remove)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def _wrapped(self) -> set[str]:
        names = set(self.layer_names)
        if self.concepts is not None:  # the concept stream passes through every joint block
            names |= {n for n in joint_attention_layers(self.model) if n.startswith("transformer_blocks.")}
        return names

    # -- the concept stream ------------------------------------------------------------------------
    def _conditioning(self, module: Any, args: tuple, output: torch.Tensor) -> None:
        self._temb = output

    def _concept_input(self, rows: slice, images: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        concepts = self.concepts.to(device=device, dtype=dtype)
        if concepts.ndim == 2:
            concepts = concepts.unsqueeze(0).expand(images, -1, -1)
        if concepts.shape[0] != images:
            raise ConfigError(f"{concepts.shape[0]} concept sets for {images} images.")
        return self.unet.context_embedder(concepts)

    def _concepts_before(self, block: Any) -> None:
        if not self.capturing or self._rows is None:
            self._concept_step = None
            return
        temb = self._temb[self._rows]
        if self._concept_state is None:
            weight = self.unet.context_embedder.weight
            self._concept_state = self._concept_input(self._rows, temb.shape[0], weight.dtype, weight.device)
        state = self._concept_state
        if getattr(block, "context_pre_only", False):
            self._concept_step = (block.norm1_context(state, temb), None)
        else:
            normed, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1_context(state, emb=temb)
            self._concept_step = (normed, (gate_msa, shift_mlp, scale_mlp, gate_mlp))

    def _concepts_after(self, block: Any) -> None:
        step, self._concept_step = self._concept_step, None
        if step is None or self._concept_state is None:
            return
        gates = step[1]
        attended = self._concept_attended
        if gates is None or attended is None:  # SD3's last block: the text stream ends here
            self._concept_state = None
            return
        gate_msa, shift_mlp, scale_mlp, gate_mlp = gates
        state = self._concept_state + gate_msa.unsqueeze(1) * attended
        normed = block.norm2_context(state) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        self._concept_state = state + gate_mlp.unsqueeze(1) * block.ff_context(normed)

    # -- one joint attention call ------------------------------------------------------------------
    def joint_call(self, name: str, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None,
                   rotary: Any, output: Any) -> None:
        """Add layer ``name``'s image x text probabilities (and run the concept stream through it)."""
        rows = self.rows(hidden_states.shape[0])
        x = hidden_states[rows]
        single = context is None
        flux = rotary is not None
        text = self.text_length if single else int(context.shape[1])
        query = attn.norm_q(_heads(attn.to_q(x), attn)) if attn.norm_q is not None else _heads(attn.to_q(x), attn)
        key = attn.norm_k(_heads(attn.to_k(x), attn)) if attn.norm_k is not None else _heads(attn.to_k(x), attn)
        if single:  # Flux single-stream: one sequence, text first
            total = key.shape[1]
            image_query = _rope(query[:, text:], rotary, text, total)
            keys = _rope(key, rotary, 0, total)
            text_start = 0
            image_key = keys[:, text:]
        else:
            text_key = _heads(attn.add_k_proj(context[rows]), attn)
            if attn.norm_added_k is not None:
                text_key = attn.norm_added_k(text_key)
            if flux:  # text first, then image; rotary over the whole sequence
                image_query = _rope(query, rotary, text, text + query.shape[1])
                image_key = _rope(key, rotary, text, text + key.shape[1])
                text_key = _rope(text_key, rotary, 0, text)
                keys, text_start = torch.cat([text_key, image_key], dim=1), 0
            else:  # SD3: image first, then text
                image_query, image_key = query, key
                keys, text_start = torch.cat([key, text_key], dim=1), key.shape[1]
        if name in self.layer_names and self.wants(name):
            self._add_probabilities(name, image_query, keys, text_start, text)
        if self.concepts is not None and not single and name.startswith("transformer_blocks."):
            image_output = output[0][rows] if isinstance(output, tuple) else None
            self._concept_attention(name, attn, x, image_query, image_key, image_output)

    def _add_probabilities(self, name: str, image_query: torch.Tensor, keys: torch.Tensor, text_start: int,
                           text: int) -> None:
        scale = image_query.shape[-1] ** -0.5
        queries = image_query.transpose(1, 2).float()  # (rows, heads, image, dim)
        keys_t = keys.transpose(1, 2).float().mul(scale).transpose(-1, -2)  # (rows, heads, dim, all keys)
        if self.joint_heads is not None:
            if max(self.joint_heads) >= queries.shape[1]:
                raise ConfigError(f"heads={self.joint_heads} asked for, but layer {name} has {queries.shape[1]} heads")
            queries, keys_t = queries[:, self.joint_heads], keys_t[:, self.joint_heads]
        columns = torch.arange(text) if self.columns is None else self.columns[self.columns < text]
        columns = columns.to(queries.device) + text_start
        rows, heads, image, _ = queries.shape
        result = queries.new_empty(rows, image, columns.numel())
        budget = min(CHUNK_ELEMENTS, max(CHUNK_MIN_ELEMENTS, CHUNK_QUERY_FACTOR * image_query.numel()))
        chunk = max(1, budget // max(1, rows * heads * keys_t.shape[-1]))
        for start in range(0, image, chunk):
            scores = queries[:, :, start: start + chunk] @ keys_t  # (rows, heads, chunk, all keys)
            normaliser = scores.logsumexp(dim=-1, keepdim=True)
            kept = scores.index_select(-1, columns).sub_(normaliser).exp_()
            result[:, start: start + chunk] = kept.mean(dim=1)
            del scores, kept
        self.add(name, result.unsqueeze(1), self.grid)

    def _concept_attention(self, name: str, attn: Any, x: torch.Tensor, image_query: torch.Tensor,
                           image_key: torch.Tensor, image_output: torch.Tensor | None) -> None:
        step = self._concept_step
        self._concept_attended = None
        if step is None:
            return
        normed = step[0]
        concept_query = _heads(attn.add_q_proj(normed), attn)
        concept_key = _heads(attn.add_k_proj(normed), attn)
        concept_value = _heads(attn.add_v_proj(normed), attn)
        if attn.norm_added_q is not None:
            concept_query = attn.norm_added_q(concept_query)
        if attn.norm_added_k is not None:
            concept_key = attn.norm_added_k(concept_key)
        image_value = _heads(attn.to_v(x), attn)
        # Concepts attend to [image, concepts]; Flux's concept positions are text positions (ids 0: no rotation).
        keys = torch.cat([image_key, concept_key], dim=1).transpose(1, 2)
        values = torch.cat([image_value, concept_value], dim=1).transpose(1, 2)
        attended = F.scaled_dot_product_attention(concept_query.transpose(1, 2), keys, values)
        attended = attended.transpose(1, 2).flatten(2).to(normed.dtype)
        to_add_out = getattr(attn, "to_add_out", None)
        if to_add_out is None:  # SD3's last block (context_pre_only): no text output
            return
        attended = to_add_out(attended)
        self._concept_attended = attended
        if name not in self.concept_layers or image_output is None:
            return
        output_space = torch.einsum("rcd,rnd->rcn", attended.float(), image_output.float()).softmax(dim=1)
        scale = image_query.shape[-1] ** -0.5
        raw = torch.einsum("rnhd,rchd->rhcn", image_query.float(), concept_key.float()).mul(scale)
        raw = raw.softmax(dim=2).mean(dim=1)  # softmax over concepts, per head, then the heads' mean
        for kind, value in (("concept_attention", output_space), ("cross_attention", raw)):
            self.concept_sums[kind] = value if kind not in self.concept_sums else self.concept_sums[kind] + value
        self.concept_calls += 1

    # -- results -------------------------------------------------------------------------------
    def concept_maps(self, kind: str = "concept_attention") -> torch.Tensor:
        """(images, concepts, H, W): the mean over declared layers and traced calls, upsampled to the latent grid.

        ``kind``: ``concept_attention`` (output space) or ``cross_attention`` (the raw variant)."""
        if kind not in ("concept_attention", "cross_attention"):
            raise ConfigError(f"concept map kind {kind!r}: use concept_attention or cross_attention.")
        if kind not in self.concept_sums:
            raise ConfigError("No concept map was captured (no concepts given, or no concept layer ran inside the "
                              f"step window). Concept layers: {', '.join(self.concept_layers) or 'none'}.")
        total = self.concept_sums[kind] / self.concept_calls
        rows, concepts, _ = total.shape
        grid = total.reshape(rows, 1, concepts, *self.grid)
        return aggregate_layer_maps([grid], self.latent_size, self.upsample, self.clamp)

    def layers_used(self) -> list[dict[str, Any]]:
        used = super().layers_used()
        for layer in used:
            layer["heads"] = len(self.joint_heads) if self.joint_heads is not None else int(
                self.unet.get_submodule(layer["name"]).heads)
        return used


def concept_embeddings(pipeline: Any, concepts: Sequence[str], max_sequence_length: int | None = None) -> torch.Tensor:
    """One embedding per concept, in the transformer's text input space: each concept is encoded
    alone by the pipeline's own text encoders and its first sequence-encoder (T5) token is kept,
    as the reference code does. Returns (concepts, text width)."""
    if not concepts:
        raise ConfigError("concepts is empty: give at least one concept word.")
    axis = text_axis(pipeline, list(concepts), max_sequence_length)
    segment = axis.segments[-1]
    from harness.attention.words import leading_special_tokens

    position = segment.offset + leading_special_tokens(segment.tokenizer)
    rows = []
    device = resolve_unet(pipeline).device
    for concept in concepts:
        embeds = encode_prompts(pipeline, [str(concept)], device, max_sequence_length)[0]
        rows.append(embeds[0, position])
    return torch.stack(rows)


def encode_prompts(pipeline: Any, prompts: list[str], device: torch.device,
                   max_sequence_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence embeddings, pooled embeddings) of ``prompts`` through the pipeline's own ``encode_prompt``
    (conditional only)."""
    length = int(max_sequence_length or sequence_length(pipeline))
    if "Flux" in type(pipeline).__name__:
        embeds, pooled, _ = pipeline.encode_prompt(prompt=prompts, prompt_2=None, device=device,
                                                   max_sequence_length=length)
        return embeds, pooled
    embeds, _, pooled, _ = pipeline.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device=device,
                                                  do_classifier_free_guidance=False, max_sequence_length=length)
    return embeds, pooled


__all__ = ["CHUNK_ELEMENTS", "TEXT_LAYOUTS", "JointAttentionCapture", "JointAttentionTracer", "concept_embeddings",
           "encode_prompts", "is_joint_model", "joint_attention_layers", "sequence_length", "text_axis"]
