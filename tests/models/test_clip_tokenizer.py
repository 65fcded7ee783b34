from transformers import CLIPTokenizer

from harness.models.clip_tokenizer import build_clip_tokenizer, learn_merges

WORDS = ["a", "red", "circle", "cat", "at", "car", "background", "to", "the", "left", "of"]


def test_every_word_is_one_token_even_with_overlapping_words():
    tokenizer = build_clip_tokenizer(WORDS)
    for word in WORDS:
        assert tokenizer.tokenize(word) == [word + "</w>"]
    ids = tokenizer("a red circle")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id and len(ids) == 5


def test_build_is_deterministic():
    first = build_clip_tokenizer(WORDS)("a red cat at the car")["input_ids"]
    for _ in range(3):
        assert build_clip_tokenizer(list(reversed(WORDS)))("a red cat at the car")["input_ids"] == first


def test_unknown_words_fall_back_to_characters_and_case_is_folded():
    tokenizer = build_clip_tokenizer(WORDS)
    assert tokenizer.tokenize("Dog") == ["d", "o", "g</w>"]
    assert tokenizer.unk_token_id not in tokenizer("dog 1girl!")["input_ids"][1:-1]


def test_merges_rebuild_words_classic_bpe():
    # "at" and "cat" share the pair (a, t</w>): the counts decide the first merge.
    assert learn_merges(["at", "cat"])[0] == ("a", "t</w>")


def test_save_and_reload(tmp_path):
    build_clip_tokenizer(WORDS, tmp_path)
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert reloaded.tokenize("background") == ["background</w>"]
    assert reloaded.model_max_length == 77
