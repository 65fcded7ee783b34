import numpy as np
import pytest
from omegaconf import OmegaConf

from harness.data.image_sets import load_record_image
from harness.data.toy_sets import (
    SCENE_CLASSES,
    build_toy_gen,
    build_toy_scenes,
    build_toy_unreal,
    render_toy_scene,
)
from harness.errors import ConfigError
from harness.toy.splits import WITHHELD_PAIRS
from harness.toy.world import check_prompt_words


def cfg(name, size=6, seed=0, objects=None, split=None):
    return OmegaConf.create({"name": name, "split": split or name, "size": size, "seed": seed, "path": None,
                             "params": {"objects": objects}})


def test_prompt_records_describe_their_scenes():
    prompt_set = build_toy_gen(cfg("toy_gen", objects=2))
    assert len(prompt_set) == 6
    for record in prompt_set.records:
        check_prompt_words(record.prompt)  # every word is in the toy vocabulary
        assert len(record.meta["objects"]) == 2
        for colour, shape in record.meta["objects"]:
            assert shape in record.prompt and (colour is None or colour in record.prompt)
        assert set(record.meta["nouns"]) == {shape for _, shape in record.meta["objects"]}
    assert build_toy_gen(cfg("toy_gen", objects=2)).checksum == prompt_set.checksum
    assert build_toy_gen(cfg("toy_gen", objects=2, seed=6)).checksum != prompt_set.checksum


def test_unreal_scenes_hold_a_withheld_pair_and_gen_scenes_never_do():
    unreal = build_toy_unreal(cfg("toy_unreal", size=12))
    assert all(any(tuple(o) in WITHHELD_PAIRS for o in r.meta["objects"]) for r in unreal.records)
    gen = build_toy_gen(cfg("toy_gen", size=12))
    assert not any(tuple(o) in WITHHELD_PAIRS for r in gen.records for o in r.meta["objects"])


def test_scene_records_render_images_with_exact_semantic_labels():
    record = build_toy_scenes(cfg("toy_scenes", size=3, split="toy_gen")).records[1]
    image, labels = render_toy_scene(**record.meta["renderer_args"])
    assert np.array_equal(load_record_image(record)[0], image)
    shapes_present = {SCENE_CLASSES[c] for c in np.unique(labels)} - {"background"}
    assert shapes_present and all(shape in record.prompt for shape in shapes_present)
    background = image[labels == 0]
    assert (background == background[0]).all(), "flat background"


def test_bad_object_count_is_refused():
    with pytest.raises(ConfigError, match="objects"):
        build_toy_gen(cfg("toy_gen", objects=5))
