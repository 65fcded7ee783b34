"""Attention processor swapping and cross-attention capture for diffusers models.

- :func:`swap_processors`: install processors on some layers, always restore the originals
  (the building block for DAAM capture, EmerDiff modulation and PAG perturbation).
- :class:`AttentionTracer` / :class:`CrossAttentionCapture`: accumulate the conditional
  prompt's cross-attention probabilities (DAAM).
- :func:`word_token_positions`: words of a prompt -> token positions (CLIP BPE and T5 SentencePiece;
  :class:`~harness.attention.words.TextAxis` for a joint model's concatenated text axis).
- :mod:`harness.attention.joint`: joint-attention word maps and ConceptAttention for SD3/SD3.5/Flux
  (``JointAttentionTracer``, a subclass of :class:`AttentionTracer`).
"""

from harness.attention.capture import (
    DEFAULT_LAYER_PATTERNS,
    AttentionTracer,
    BatchLayout,
    CrossAttentionCapture,
    StepMaps,
    aggregate_layer_maps,
)
from harness.attention.swap import (
    attention_modules,
    block_of,
    cross_attention_layers,
    resolve_unet,
    select_layers,
    swap_processors,
)
from harness.attention.words import parse_word, prompt_words, word_spans, word_token_positions

__all__ = [
    "DEFAULT_LAYER_PATTERNS", "AttentionTracer", "BatchLayout", "CrossAttentionCapture", "StepMaps",
    "aggregate_layer_maps", "attention_modules", "block_of", "cross_attention_layers", "resolve_unet",
    "select_layers", "swap_processors", "parse_word", "prompt_words", "word_spans", "word_token_positions",
]
