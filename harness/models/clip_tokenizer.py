"""A CLIP-format tokenizer for a small vocabulary, built offline.

Small models (``tiny_random``, the toy world) need a tokenizer that behaves like Stable
Diffusion's (CLIP's byte-level BPE with ``</w>`` word ends, start/end tokens, padding to a
fixed length) without downloading CLIP's 49k-token vocabulary. We train CLIP's own BPE model
type on the given words with the ``tokenizers`` library, so every listed word is one token and
any other text still tokenizes (into characters) instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def build_clip_tokenizer(
    words: Iterable[str],
    out_dir: str | Path | None = None,
    *,
    model_max_length: int = 77,
) -> CLIPTokenizer:
    """Return a :class:`~transformers.CLIPTokenizer` whose vocabulary holds each of ``words``.

    Words are lower-cased as CLIP does. The tokenizer is saved to ``out_dir`` when given
    (``CLIPTokenizer.from_pretrained(out_dir)`` loads it back). Deterministic: the same words
    give the same ids.
    """
    unique_words = sorted({w.strip().lower() for w in words if w.strip()})
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # Enough merges to make every word a single token: at most len(word)-1 merges per word.
    budget = 2 + 2 * len(alphabet) + sum(len(w) for w in unique_words)
    trainer = trainers.BpeTrainer(
        vocab_size=budget,
        min_frequency=1,
        special_tokens=[BOS, EOS],
        initial_alphabet=sorted(alphabet),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(unique_words, trainer=trainer)
    trained = json.loads(backend.to_str())["model"]
    vocab: dict[str, int] = dict(trained["vocab"])
    # Every byte also as a word end, so unseen words fall back to characters (as in CLIP).
    for char in sorted(alphabet):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(f"{char}</w>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
