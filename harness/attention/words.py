"""Map the words of a prompt to the positions of their tokens in the text encoder's input.

Written by hand because no library maps words to CLIP token positions: CLIP's BPE splits a word
into sub-tokens ("1girl" -> "1", "girl"; rare words -> several pieces) and the encoder input
starts with a start token. We find each word's character span in the prompt and tokenize the
prompt up to the word's start and up to its end: the tokens in between are the word's. The
prefix property this relies on (tokenization of a prefix ending at a word boundary is a prefix
of the full tokenization) holds for CLIP's pre-tokenizer and is checked for every word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError

#: A word: letters/digits, with inner apostrophes or hyphens ("t-shirt", "dog's", "1girl").
WORD_PATTERN = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


@dataclass(frozen=True)
class WordSpan:
    """One occurrence of a word: its text, character span and token positions (start token included)."""

    word: str
    start: int
    end: int
    tokens: tuple[int, ...]


def prompt_words(prompt: str) -> list[str]:
    """The words of ``prompt``, lower-cased, in order (repeats kept)."""
    return [m.group(0).lower() for m in WORD_PATTERN.finditer(prompt)]


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])


def word_spans(tokenizer: Any, prompt: str) -> list[WordSpan]:
    """Every word occurrence of ``prompt`` with its token positions in the encoder input.

    Positions count the start token (position 0), so they index the text axis of the
    cross-attention maps directly. Words cut off by the tokenizer's length limit get no
    positions (an empty tuple).
    """
    full = _token_ids(tokenizer, prompt)
    limit = int(getattr(tokenizer, "model_max_length", 77) or 77) - 1  # last position holds the end token
    spans = []
    for match in WORD_PATTERN.finditer(prompt):
        before = _token_ids(tokenizer, prompt[: match.start()])
        through = _token_ids(tokenizer, prompt[: match.end()])
        if full[: len(through)] != through or through[: len(before)] != before:
            raise ConfigError(f"The tokenizer {type(tokenizer).__name__} does not split {prompt!r} at word boundaries "
                              f"(word {match.group(0)!r}); word-to-token mapping is not possible with it.")
        positions = tuple(p for p in range(len(before) + 1, len(through) + 1) if p < limit)
        spans.append(WordSpan(match.group(0).lower(), match.start(), match.end(), positions))
    return spans


def parse_word(spec: str) -> tuple[str, int | None]:
    """``"dog"`` -> (dog, None); ``"dog#2"`` -> (dog, 2): the 2nd occurrence (1-based)."""
    word, sep, occurrence = spec.partition("#")
    if sep:
        if not occurrence.isdigit() or int(occurrence) < 1:
            raise ConfigError(f"Word {spec!r}: the occurrence after '#' must be a positive integer (dog#2).")
        return word.strip().lower(), int(occurrence)
    return spec.strip().lower(), None


def word_token_positions(tokenizer: Any, prompt: str, word: str, occurrence: str | int = "merge") -> list[int]:
    """Token positions of ``word`` in ``prompt``.

    ``word`` may be a phrase of several words ("hot dog") and may carry its own occurrence
    (``"dog#2"``). ``occurrence``: ``"merge"`` (all occurrences), ``"first"``, ``"last"`` or a
    1-based index. A word absent from the prompt raises :class:`ConfigError` listing the
    prompt's words.
    """
    name, own = parse_word(word)
    if own is not None:
        occurrence = own
    spans = word_spans(tokenizer, prompt)
    targets = prompt_words(name)
    if not targets:
        raise ConfigError(f"{word!r} contains no word (letters or digits).")
    found: list[list[WordSpan]] = []
    for index in range(len(spans) - len(targets) + 1):
        window = spans[index: index + len(targets)]
        if [s.word for s in window] == targets:
            found.append(window)
    if not found:
        words = sorted(set(s.word for s in spans))
        raise ConfigError(f"The word {name!r} is not in the prompt {prompt!r}. Its words are: {', '.join(words)}.")
    if occurrence == "merge":
        chosen = found
    elif occurrence == "first":
        chosen = found[:1]
    elif occurrence == "last":
        chosen = found[-1:]
    else:
        try:
            number = int(occurrence)
        except (TypeError, ValueError):
            raise ConfigError(f"occurrence must be merge, first, last or a 1-based number, got {occurrence!r}") from None
        if not 1 <= number <= len(found):
            raise ConfigError(f"The word {name!r} occurs {len(found)} time(s) in {prompt!r}; occurrence {number} does not exist.")
        chosen = [found[number - 1]]
    positions = sorted({p for window in chosen for span in window for p in span.tokens})
    if not positions:
        raise ConfigError(f"The word {name!r} lies beyond the tokenizer's {tokenizer.model_max_length}-token limit in {prompt!r}.")
    return positions
