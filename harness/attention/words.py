"""Map the words of a prompt to the positions of their tokens in the text encoder's input.

Written by hand because no library maps words to CLIP token positions: CLIP's BPE splits a word
into sub-tokens ("1girl" -> "1", "girl"; rare words -> several pieces) and the encoder input
starts with a start token. We find each word's character span in the prompt and tokenize the
prompt up to the word's start and up to its end: the tokens in between are the word's. The
prefix property this relies on (tokenization of a prefix ending at a word boundary is a prefix
of the full tokenization) holds for CLIP's pre-tokenizer and is checked for every word.

The same mapper serves T5's SentencePiece tokenizer (SD3's third encoder, Flux's sequence
encoder): it has no start token (the number of leading special tokens is read from the
tokenizer's own output, 1 for CLIP, 0 for T5), and the prefix before a word is taken without its
trailing spaces (SentencePiece would otherwise end it with a lone ``▁`` piece). A joint-attention
model lays several tokenizers' positions end to end on one text axis (SD3: 77 CLIP positions,
then T5's): :class:`TextAxis` declares that layout and maps a word to all of its positions.
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


def leading_special_tokens(tokenizer: Any) -> int:
    """How many special tokens the tokenizer puts before the text (CLIP: 1, the start token; T5: 0)."""
    plain = _token_ids(tokenizer, "a")
    full = list(tokenizer("a")["input_ids"])
    for lead in range(len(full) - len(plain) + 1):
        if full[lead: lead + len(plain)] == plain:
            return lead
    raise ConfigError(f"The tokenizer {type(tokenizer).__name__} does not keep the text's tokens in order; "
                      "word-to-token mapping is not possible with it.")


def word_spans(tokenizer: Any, prompt: str, max_length: int | None = None) -> list[WordSpan]:
    """Every word occurrence of ``prompt`` with its token positions in the encoder input.

    Positions count the leading special tokens (CLIP's start token is position 0; T5 has none),
    so they index the text axis of the attention maps directly. Words cut off by the length
    limit (``max_length``, default the tokenizer's ``model_max_length``; the last position holds
    the end token) get no positions (an empty tuple).
    """
    full = _token_ids(tokenizer, prompt)
    lead = leading_special_tokens(tokenizer)
    limit = int(max_length or getattr(tokenizer, "model_max_length", 77) or 77) - 1
    spans = []
    for match in WORD_PATTERN.finditer(prompt):
        before = _token_ids(tokenizer, prompt[: match.start()].rstrip())
        through = _token_ids(tokenizer, prompt[: match.end()])
        if full[: len(through)] != through or through[: len(before)] != before:
            raise ConfigError(f"The tokenizer {type(tokenizer).__name__} does not split {prompt!r} at word boundaries "
                              f"(word {match.group(0)!r}); word-to-token mapping is not possible with it.")
        positions = tuple(p for p in range(len(before) + lead, len(through) + lead) if p < limit)
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


def word_token_positions(tokenizer: Any, prompt: str, word: str, occurrence: str | int = "merge",
                         max_length: int | None = None, allow_cut: bool = False) -> list[int]:
    """Token positions of ``word`` in ``prompt``.

    ``word`` may be a phrase of several words ("hot dog") and may carry its own occurrence
    (``"dog#2"``). ``occurrence``: ``"merge"`` (all occurrences), ``"first"``, ``"last"`` or a
    1-based index. A word absent from the prompt raises :class:`ConfigError` listing the
    prompt's words; so does a word cut off by the length limit (``max_length``), unless
    ``allow_cut`` (then it has no positions: an empty list).
    """
    name, own = parse_word(word)
    if own is not None:
        occurrence = own
    spans = word_spans(tokenizer, prompt, max_length)
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
    if not positions and not allow_cut:
        raise ConfigError(f"The word {name!r} lies beyond the tokenizer's {tokenizer.model_max_length}-token limit in {prompt!r}.")
    return positions


@dataclass(frozen=True)
class TextSegment:
    """One tokenizer's stretch of a joint-attention model's text axis: positions ``offset ... offset+length``."""

    tokenizer: Any
    offset: int
    length: int


class TextAxis:
    """The text-key axis of a joint-attention model, as the segments of its tokenizers laid end to end.

    SD3 concatenates its CLIP tokens (77 positions; CLIP-L and bigG share one tokenization and
    are joined along channels) and then its T5 tokens; Flux has only T5's. Only the first
    positions of each segment that a set of prompts can use are kept (``columns``, its leading
    special tokens, the longest prompt's tokens and the end token): a word's positions are
    given as indices into ``columns``, which is the text axis of the captured maps.
    """

    def __init__(self, segments: list[TextSegment], prompts: list[str]) -> None:
        if not segments:
            raise ConfigError("A text axis needs at least one tokenizer segment.")
        self.segments = segments
        self.columns: list[int] = []
        for segment in segments:
            longest = max(len(_token_ids(segment.tokenizer, p)) for p in prompts)
            kept = min(longest + leading_special_tokens(segment.tokenizer) + 1, segment.length)
            self.columns += range(segment.offset, segment.offset + kept)
        self.index = {position: column for column, position in enumerate(self.columns)}

    def word_positions(self, prompt: str, word: str, occurrence: str | int = "merge") -> list[int]:
        """Columns of ``word``'s tokens in every segment (a word cut off in one segment keeps the others')."""
        columns: list[int] = []
        for segment in self.segments:
            positions = word_token_positions(segment.tokenizer, prompt, word, occurrence, segment.length, allow_cut=True)
            columns += [self.index[segment.offset + p] for p in positions if segment.offset + p in self.index]
        if not columns:
            raise ConfigError(f"The word {word!r} lies beyond every tokenizer's length limit in {prompt!r}.")
        return sorted(columns)

    def prompt_positions(self, prompt: str) -> list[int]:
        """Columns of the prompt's own tokens (no start, end or padding token), in every segment."""
        columns: list[int] = []
        for segment in self.segments:
            lead = leading_special_tokens(segment.tokenizer)
            count = min(len(_token_ids(segment.tokenizer, prompt)), segment.length - lead - 1)
            columns += [self.index[segment.offset + lead + i] for i in range(count) if segment.offset + lead + i in self.index]
        return columns
