"""Diffusers' attention computation split in two, for processors that change what lies between.

``AttnProcessor2_0`` runs projection, attention and output projection in one call; methods that
perturb the attention map (PAG ablations), replay recorded queries and keys, or add an offset
before the output projection (EmerDiff) need the middle exposed. :func:`project` performs the
steps before the attention (norms, Q/K/V projections, head split) and :func:`finish` the steps
after it (output projection, reshape, residual, rescale), exactly as diffusers does, so a
processor only writes its own middle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ProjectedAttention:
    """Q, K, V split into heads ``(batch, heads, tokens, head_dim)`` and what :func:`finish` needs."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    #: additive mask ``(batch, heads, 1 or queries, keys)`` or None
    attention_mask: torch.Tensor | None
    residual: torch.Tensor
    #: (channel, height, width) when the input was a 4-D feature map, else None
    spatial: tuple[int, int, int] | None
    #: the queries before the head split ``(batch, tokens, heads * head_dim)``
    flat_query: torch.Tensor

    @property
    def batch(self) -> int:
        return self.query.shape[0]

    @property
    def head_dim(self) -> int:
        return self.query.shape[-1]


def project(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
            attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> ProjectedAttention:
    """The steps of diffusers' ``AttnProcessor2_0`` before the attention itself."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    spatial = None
    if hidden_states.ndim == 4:
        batch, channel, height, width = hidden_states.shape
        spatial = (channel, height, width)
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    batch, sequence, _ = hidden_states.shape
    key_length = sequence if encoder_hidden_states is None else encoder_hidden_states.shape[1]
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, key_length, batch)
        attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    flat_query = attn.to_q(hidden_states)
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    if encoder_hidden_states is not None and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    key = attn.to_k(context)
    value = attn.to_v(context)
    head_dim = key.shape[-1] // attn.heads
    query = flat_query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    if getattr(attn, "norm_q", None) is not None:
        query = attn.norm_q(query)
    if getattr(attn, "norm_k", None) is not None:
        key = attn.norm_k(key)
    return ProjectedAttention(query, key, value, attention_mask, residual, spatial, flat_query)


def merge_heads(attended: torch.Tensor) -> torch.Tensor:
    """``(batch, heads, tokens, head_dim)`` -> ``(batch, tokens, heads * head_dim)``."""
    batch, heads, tokens, head_dim = attended.shape
    return attended.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def finish(attn: Any, projected: ProjectedAttention, hidden_states: torch.Tensor,
           offset_after_output: torch.Tensor | None = None) -> torch.Tensor:
    """The steps after the attention: output projection, reshape, residual and rescale.

    ``hidden_states`` are the attended values with heads merged (see :func:`merge_heads`);
    ``offset_after_output`` (broadcastable to the projected output) is added right after the
    output projection, before the residual.
    """
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    if offset_after_output is not None:
        hidden_states = hidden_states + offset_after_output.to(hidden_states.dtype)
    if projected.spatial is not None:
        channel, height, width = projected.spatial
        hidden_states = hidden_states.transpose(-1, -2).reshape(projected.batch, channel, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + projected.residual
    return hidden_states / attn.rescale_output_factor
