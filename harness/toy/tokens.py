"""Token ids used while training the toy models, and their mapping to the shipped CLIP tokenizer.

Training uses a compact id space: 0 = start of text, 1 = end of text (also the padding, as in
Stable Diffusion 1.x), 2... = the words of a world's vocabulary in order. The shipped pipeline
uses a CLIP-format tokenizer (`harness.models.clip_tokenizer.build_clip_tokenizer`) whose ids
differ; `export.py` copies each embedding row to the tokenizer's id for the same token, so the
exported text encoder sees exactly the sequences it was trained on. `TokenSpace` holds one
world's id space; the module-level names are world v1's (`harness.toy.world`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from harness.toy import world as world_v1

BOS_ID = 0
EOS_ID = 1
PAD_ID = EOS_ID
FIRST_WORD_ID = 2
#: Sequence length of the text encoders (start + up to 30 caption words + end + padding).
CONTEXT_LENGTH = 32


@dataclass(frozen=True)
class TokenSpace:
    """A world's training id space and its caption augmentation.

    vocabulary: every word in id order; check_words: splits a prompt and refuses unknown words;
    object_adjectives: words always dropped with the adjective-dropout probability;
    colour_words / nouns: a colour word is an object adjective when a noun follows it.
    """

    vocabulary: tuple[str, ...]
    check_words: Callable[[str], list[str]]
    object_adjectives: Collection[str]
    colour_words: Collection[str]
    nouns: Collection[str]
    article: Callable[[str], str]

    @property
    def word_to_id(self) -> dict[str, int]:
        return {w: FIRST_WORD_ID + i for i, w in enumerate(self.vocabulary)}

    @property
    def vocab_size(self) -> int:
        return FIRST_WORD_ID + len(self.vocabulary)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64, length CONTEXT_LENGTH) of a caption: start, words, end, padding."""
        words = self.check_words(text)
        if len(words) + 2 > CONTEXT_LENGTH:
            raise ValueError(f"caption has {len(words)} words; at most {CONTEXT_LENGTH - 2} fit: {text!r}")
        ids = np.full(CONTEXT_LENGTH, PAD_ID, dtype=np.int64)
        ids[0] = BOS_ID
        table = self.word_to_id
        ids[1 : 1 + len(words)] = [table[w] for w in words]
        ids[1 + len(words)] = EOS_ID
        return ids

    def drop_adjectives(self, text: str, probability: float, rng: np.random.Generator) -> str:
        """Remove each object adjective with `probability` (articles re-agreed).

        Training augmentation: captions that omit adjectives make the noun the one token present
        for every object, so the UNet learns to read objects from nouns (see text_encoder.py).
        Background colours are kept.
        """
        words = text.split()
        kept: list[str] = []
        for i, word in enumerate(words):
            follows = words[i + 1] if i + 1 < len(words) else ""
            is_object_adjective = word in self.object_adjectives or (word in self.colour_words and follows in self.nouns)
            if is_object_adjective and rng.random() < probability:
                continue
            kept.append(word)
        for i in range(len(kept) - 1):
            if kept[i] in ("a", "an"):
                kept[i] = self.article(kept[i + 1])
        return " ".join(kept)


V1 = TokenSpace(
    vocabulary=world_v1.VOCABULARY,
    check_words=world_v1.check_prompt_words,
    object_adjectives=frozenset(world_v1.SIZES),
    colour_words=frozenset(world_v1.OBJECT_COLOURS),
    nouns=frozenset(world_v1.SHAPES),
    article=world_v1.article,
)
VOCAB_SIZE = V1.vocab_size
WORD_TO_ID = V1.word_to_id
encode = V1.encode
drop_adjectives = V1.drop_adjectives
