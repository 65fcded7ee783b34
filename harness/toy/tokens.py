"""Token ids used while training the toy model, and their mapping to the shipped CLIP tokenizer.

Training uses a compact id space: 0 = start of text, 1 = end of text (also the padding, as in
Stable Diffusion 1.x), 2... = the words of `VOCABULARY` in order. The shipped pipeline uses a
CLIP-format tokenizer (`harness.models.clip_tokenizer.build_clip_tokenizer`) whose ids differ;
`export.py` copies each embedding row to the tokenizer's id for the same token, so the
exported text encoder sees exactly the sequences it was trained on.
"""

from __future__ import annotations

import numpy as np

from harness.toy.world import OBJECT_COLOURS, SHAPES, SIZES, VOCABULARY, article, check_prompt_words

BOS_ID = 0
EOS_ID = 1
PAD_ID = EOS_ID
FIRST_WORD_ID = 2
#: Sequence length of the text encoder (start + up to 26 caption words + end + padding).
CONTEXT_LENGTH = 32
VOCAB_SIZE = FIRST_WORD_ID + len(VOCABULARY)
WORD_TO_ID = {w: FIRST_WORD_ID + i for i, w in enumerate(VOCABULARY)}


def encode(text: str) -> np.ndarray:
    """Token ids (int64, length CONTEXT_LENGTH) of a toy caption: start, words, end, padding."""
    words = check_prompt_words(text)
    if len(words) + 2 > CONTEXT_LENGTH:
        raise ValueError(f"caption has {len(words)} words; at most {CONTEXT_LENGTH - 2} fit: {text!r}")
    ids = np.full(CONTEXT_LENGTH, PAD_ID, dtype=np.int64)
    ids[0] = BOS_ID
    ids[1 : 1 + len(words)] = [WORD_TO_ID[w] for w in words]
    ids[1 + len(words)] = EOS_ID
    return ids


def drop_adjectives(text: str, probability: float, rng: np.random.Generator) -> str:
    """Remove each object's size and colour adjective with `probability` (articles re-agreed).

    Training augmentation: captions that omit adjectives make the noun the one token present
    for every object, so the UNet learns to read objects from nouns (see text_encoder.py).
    Background colours are kept.
    """
    words = text.split()
    kept: list[str] = []
    for i, word in enumerate(words):
        follows = words[i + 1] if i + 1 < len(words) else ""
        is_object_adjective = word in SIZES or (word in OBJECT_COLOURS and follows in SHAPES)
        if is_object_adjective and rng.random() < probability:
            continue
        kept.append(word)
    for i in range(len(kept) - 1):
        if kept[i] in ("a", "an"):
            kept[i] = article(kept[i + 1])
    return " ".join(kept)
