"""Toy token ids and the CLIP-format toy tokenizer agree word for word."""

from __future__ import annotations

import numpy as np
import pytest

from harness.toy.splits import scene_for_index
from harness.toy.tokens import BOS_ID, CONTEXT_LENGTH, EOS_ID, WORD_TO_ID, encode
from harness.toy.world import VOCABULARY, caption


@pytest.fixture(scope="module")
def tokenizer():
    from harness.toy.export import toy_tokenizer

    return toy_tokenizer()


def test_encode_layout():
    ids = encode("a red circle")
    assert ids.shape == (CONTEXT_LENGTH,)
    assert list(ids[:5]) == [BOS_ID, WORD_TO_ID["a"], WORD_TO_ID["red"], WORD_TO_ID["circle"], EOS_ID]
    assert (ids[5:] == EOS_ID).all()


def test_tokenizer_has_one_token_per_word_and_round_trips(tokenizer):
    from harness.toy.export import _id_pairs

    pairs = dict(_id_pairs(tokenizer))
    assert len(set(pairs.values())) == len(VOCABULARY) + 2
    for i in range(100):
        text = caption(scene_for_index("train", i)).text
        ids = tokenizer(text, padding="max_length", max_length=CONTEXT_LENGTH).input_ids
        # the tokenizer's ids are the training ids, renamed token by token
        assert ids == [pairs[t] for t in encode(text)]
        assert tokenizer.decode(ids, skip_special_tokens=True).strip() == text


def test_text_encoder_id_remap_is_exact(tokenizer):
    import torch

    from harness.toy.export import to_tokenizer_ids, to_training_ids
    from harness.toy.text_encoder import build_text_encoder

    torch.manual_seed(0)
    trained = build_text_encoder().eval()
    shipped = to_tokenizer_ids(trained, tokenizer)
    back = to_training_ids(shipped, tokenizer)
    text = "a small red circle to the left of a large blue star on a yellow background"
    with torch.no_grad():
        reference = trained(input_ids=torch.from_numpy(encode(text))[None]).last_hidden_state
        via_tokenizer = shipped(input_ids=tokenizer([text], padding="max_length", max_length=CONTEXT_LENGTH,
                                                    return_tensors="pt").input_ids).last_hidden_state
        restored = back(input_ids=torch.from_numpy(encode(text))[None]).last_hidden_state
    assert torch.allclose(reference, via_tokenizer, atol=1e-6)
    assert torch.allclose(reference, restored, atol=1e-6)
    assert np.isfinite(reference.numpy()).all()


def test_v2_tokenizer_and_text_encoder_round_trip_exactly():
    """World v2's vocabulary (numerals, textures, plurals): one token per word, exact id remap."""
    import torch

    from harness.toy.export import _id_pairs, to_tokenizer_ids, to_training_ids, toy_tokenizer
    from harness.toy.v2.model import build_text_encoder_v2
    from harness.toy.v2.splits import scene_for_index as scene_v2
    from harness.toy.v2.tokens import V2
    from harness.toy.v2.world import VOCABULARY as VOCABULARY_V2
    from harness.toy.v2.world import caption as caption_v2

    tokenizer_v2 = toy_tokenizer(V2)
    pairs = dict(_id_pairs(tokenizer_v2, V2))
    assert len(set(pairs.values())) == len(VOCABULARY_V2) + 2
    texts = [caption_v2(scene_v2("train", i)).text for i in range(40)]
    for text in texts:
        ids = tokenizer_v2(text, padding="max_length", max_length=CONTEXT_LENGTH).input_ids
        assert ids == [pairs[t] for t in V2.encode(text)]
    torch.manual_seed(0)
    trained = build_text_encoder_v2().eval()
    shipped = to_tokenizer_ids(trained, tokenizer_v2, V2)
    back = to_training_ids(shipped, tokenizer_v2, V2)
    with torch.no_grad():
        reference = trained(input_ids=torch.from_numpy(np.stack([V2.encode(t) for t in texts[:4]]))).last_hidden_state
        via = shipped(input_ids=tokenizer_v2(texts[:4], padding="max_length", max_length=CONTEXT_LENGTH,
                                             return_tensors="pt").input_ids).last_hidden_state
        restored = back(input_ids=torch.from_numpy(np.stack([V2.encode(t) for t in texts[:4]]))).last_hidden_state
    assert torch.allclose(reference, via, atol=1e-6) and torch.allclose(reference, restored, atol=1e-6)
