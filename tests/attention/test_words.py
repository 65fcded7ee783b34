"""Words -> token positions (sub-tokens, repeats, phrases, missing words) and word maps from token maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.attention import prompt_words, word_token_positions
from harness.errors import ConfigError
from harness.methods.daam import word_heat_maps

PROMPT = "a red cat and a red dog"


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return tiny.tokenizer


def test_single_token_words_count_the_start_token(tokenizer):
    assert tokenizer.tokenize(PROMPT) == ["a</w>", "red</w>", "cat</w>", "and</w>", "a</w>", "red</w>", "dog</w>"]
    assert word_token_positions(tokenizer, PROMPT, "cat") == [3]
    assert word_token_positions(tokenizer, PROMPT, "Dog") == [7]  # case-insensitive, as CLIP


def test_sub_tokens_belong_to_their_word(tokenizer):
    prompt = "a zebra near 1girl, t-shirt"
    pieces = tokenizer.tokenize(prompt)
    assert pieces[1:6] == ["z", "e", "b", "r", "a</w>"]  # not in the tiny vocabulary: one token per character
    assert word_token_positions(tokenizer, prompt, "zebra") == [2, 3, 4, 5, 6]
    assert word_token_positions(tokenizer, prompt, "near") == [7]
    assert [pieces[p - 1] for p in word_token_positions(tokenizer, prompt, "1girl")] == ["1</w>", "g", "i", "r", "l</w>"]
    # the comma after 1girl is not part of the word; the hyphen inside t-shirt is
    assert [pieces[p - 1] for p in word_token_positions(tokenizer, prompt, "t-shirt")] == ["t</w>", "-</w>", "s", "h", "i", "r", "t</w>"]


def test_repeated_words(tokenizer):
    assert word_token_positions(tokenizer, PROMPT, "red") == [2, 6]
    assert word_token_positions(tokenizer, PROMPT, "red", "first") == [2]
    assert word_token_positions(tokenizer, PROMPT, "red", "last") == [6]
    assert word_token_positions(tokenizer, PROMPT, "red", 2) == [6]
    assert word_token_positions(tokenizer, PROMPT, "red#1") == [2]
    assert word_token_positions(tokenizer, PROMPT, "red dog") == [6, 7]  # a phrase
    with pytest.raises(ConfigError, match="occurs 2 time"):
        word_token_positions(tokenizer, PROMPT, "red", 3)


def test_missing_word_lists_the_prompt_words(tokenizer):
    with pytest.raises(ConfigError) as error:
        word_token_positions(tokenizer, PROMPT, "horse")
    assert "'horse' is not in the prompt" in str(error.value)
    assert "a, and, cat, dog, red" in str(error.value)
    with pytest.raises(ConfigError, match="not in the prompt"):
        word_token_positions(tokenizer, PROMPT, "ca")  # a piece of a word is not a word


def test_word_beyond_the_token_limit(tokenizer):
    prompt = "a " * 80 + "cat"
    with pytest.raises(ConfigError, match="beyond the tokenizer's 77-token limit"):
        word_token_positions(tokenizer, prompt, "cat")


def test_prompt_words():
    assert prompt_words("A cat, a dog's t-shirt!") == ["a", "cat", "a", "dog's", "t-shirt"]


def test_word_maps_average_the_word_tokens(tokenizer):
    token_maps = torch.zeros(77, 1, 2)
    token_maps[2] = torch.tensor([[1.0, 3.0]])  # red (1st)
    token_maps[6] = torch.tensor([[3.0, 5.0]])  # red (2nd)
    token_maps[3] = torch.tensor([[2.0, 0.0]])  # cat
    maps = word_heat_maps(token_maps, tokenizer, PROMPT, ["red", "red#2", "cat"])
    np.testing.assert_allclose(maps["red"], [[2.0, 4.0]])
    np.testing.assert_allclose(maps["red#2"], [[3.0, 5.0]])
    np.testing.assert_allclose(maps["cat"], [[2.0, 0.0]])
    minmax = word_heat_maps(token_maps, tokenizer, PROMPT, ["red"], normalize="minmax")
    np.testing.assert_allclose(minmax["red"], [[0.0, 1.0]], atol=1e-6)
    # token_sum: divide by the sum over the prompt's 7 tokens (positions 1..7), start/end/padding left out
    token_maps[0] = 100.0
    token_maps[8:] = 100.0
    normalized = word_heat_maps(token_maps, tokenizer, PROMPT, ["cat"], normalize="token_sum")
    np.testing.assert_allclose(normalized["cat"], [[2.0 / 6.0, 0.0]], rtol=1e-5)


def test_per_step_word_maps_keep_the_step_axis(tokenizer):
    steps = torch.arange(3 * 77 * 2 * 2, dtype=torch.float32).view(3, 77, 2, 2)
    maps = word_heat_maps(steps, tokenizer, PROMPT, ["cat"])
    assert maps["cat"].shape == (3, 2, 2)
    np.testing.assert_allclose(maps["cat"], steps[:, 3].numpy())
