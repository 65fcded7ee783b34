"""An offline T5 SentencePiece tokenizer over a small vocabulary (no download, no ``spiece.model``).

T5 tokenizes with a SentencePiece Unigram model behind a Metaspace pre-tokenizer (``▁`` marks
a word start) and appends ``</s>``; it has no start token. transformers' ``T5Tokenizer``
(tokenizers-backed) builds exactly that pipeline from a ``(piece, log-probability)`` list, so a
stand-in gets a real T5 tokenizer without the 32k-piece model file: every word of ``words`` is
one ``▁word`` piece, and single characters (with and without ``▁``) cover any other text, split
into pieces as SentencePiece would. ``save_pretrained`` writes ``tokenizer.json``, which
``T5TokenizerFast.from_pretrained`` (the class SD3 and Flux folders name) loads back.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import Any

#: T5's special pieces, in T5's own order (ids 0, 1, 2)
SPECIALS = ("<pad>", "</s>", "<unk>")


def build_t5_tokenizer(words: Iterable[str], model_max_length: int = 512) -> Any:
    """A ``T5TokenizerFast`` whose vocabulary holds ``▁word`` for each of ``words`` (lower-cased).

    Scores: whole words are more likely than any split of them, so a vocabulary word is always
    one token; other text falls back to characters (``▁`` + first character, then characters).
    The same words always give the same ids.
    """
    from transformers import T5TokenizerFast

    unique = sorted({w.strip().lower() for w in words if w.strip()})
    pieces: list[tuple[str, float]] = [(token, 0.0) for token in SPECIALS]
    seen = set(SPECIALS)

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            pieces.append((piece, score))

    for word in unique:
        add("▁" + word, -2.0)
    add("▁", -6.0)
    for char in string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation:
        add("▁" + char, -8.0)
        add(char, -9.0)
    tokenizer = T5TokenizerFast(vocab=pieces, extra_ids=0)
    tokenizer.model_max_length = model_max_length
    return tokenizer
