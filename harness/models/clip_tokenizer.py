"""A CLIP-format tokenizer for a small vocabulary, built offline.

Small models (``tiny_random``, the toy world) need a tokenizer that behaves like Stable
Diffusion's (CLIP's byte-level BPE with ``</w>`` word ends, start/end tokens, padding to a
fixed length) without downloading CLIP's 49k-token vocabulary. We learn BPE merges on the given
words so every listed word is one token, and keep every byte (also as a word end) so any other
text still tokenizes, into characters, instead of failing.

The merges are learned here by the classic BPE procedure rather than with the ``tokenizers``
trainer because that trainer breaks count ties differently from one call to the next, which
would give the same words different token ids in every build.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END = "</w>"


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges that turn each word into one ``word</w>`` symbol, deterministically.

    Each step merges the most frequent adjacent pair (ties: the lexicographically smallest),
    as in Sennrich et al.'s BPE; applying the merges in order re-creates every word whole.
    """
    segmented = [tuple(word[:-1]) + (word[-1] + END,) for word in words]
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter = Counter()
        for symbols in segmented:
            counts.update(zip(symbols, symbols[1:]))
        if not counts:
            return merges
        best_count = max(counts.values())
        pair = min(p for p, c in counts.items() if c == best_count)
        merges.append(pair)
        segmented = [_merge(symbols, pair) for symbols in segmented]


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            out.append(symbols[index] + symbols[index + 1])
            index += 2
        else:
            out.append(symbols[index])
            index += 1
    return tuple(out)


def build_clip_tokenizer(
    words: Iterable[str],
    out_dir: str | Path | None = None,
    *,
    model_max_length: int = 77,
) -> CLIPTokenizer:
    """Return a :class:`~transformers.CLIPTokenizer` whose vocabulary holds each of ``words``.

    Words are lower-cased as CLIP does and must be plain ASCII letters. The tokenizer is saved
    to ``out_dir`` when given (``CLIPTokenizer.from_pretrained(out_dir)`` loads it back). The
    same words always give the same ids.
    """
    unique_words = sorted({w.strip().lower() for w in words if w.strip()})
    bad = [w for w in unique_words if not (w.isascii() and w.isalpha())]
    if bad:
        raise ValueError(f"vocabulary words must be ASCII letters only; got {bad}")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    for token in alphabet + [c + END for c in alphabet]:
        vocab.setdefault(token, len(vocab))
    merges = learn_merges(unique_words)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
