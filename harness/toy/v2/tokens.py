"""World v2's training token space (see `harness.toy.tokens.TokenSpace`)."""

from __future__ import annotations

from harness.toy.tokens import TokenSpace
from harness.toy.v2 import world

V2 = TokenSpace(
    vocabulary=world.VOCABULARY,
    check_words=world.check_prompt_words,
    object_adjectives=frozenset(world.SIZES + world.TEXTURES),
    colour_words=frozenset(world.OBJECT_COLOURS),
    nouns=frozenset(world.NOUN_OF),
    article=world.article,
)
