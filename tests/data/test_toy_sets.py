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
from harness.toy.splits import EVAL_SPLITS, WITHHELD_PAIRS, eval_indices, scene_for_index
from harness.toy.world import check_prompt_words


def cfg(name, size=6, seed=0, objects=None, split="dev", world=None):
    params = {"objects": objects} | ({"world": world} if world else {})
    return OmegaConf.create({"name": name, "split": split, "size": size, "seed": seed, "path": None,
                             "params": params})


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
    record = build_toy_scenes(cfg("toy_scenes", size=3, world="toy_gen")).records[1]
    image, labels = render_toy_scene(**record.meta["renderer_args"])
    assert np.array_equal(load_record_image(record)[0], image)
    shapes_present = {SCENE_CLASSES[c] for c in np.unique(labels)} - {"background"}
    assert shapes_present and all(shape in record.prompt for shape in shapes_present)
    background = image[labels == 0]
    assert (background == background[0]).all(), "flat background"


def test_bad_object_count_is_refused():
    with pytest.raises(ConfigError, match="objects"):
        build_toy_gen(cfg("toy_gen", objects=5))


def _indices(prompt_set):
    return [r.meta["scene"]["index"] if "scene" in r.meta else r.meta["renderer_args"]["index"]
            for r in prompt_set.records]


@pytest.mark.parametrize("builder,name", [(build_toy_gen, "toy_gen"), (build_toy_unreal, "toy_unreal"),
                                          (build_toy_scenes, "toy_scenes")])
def test_dev_and_test_are_disjoint_index_ranges_above_every_index_used_before(builder, name):
    dev = set(_indices(builder(cfg(name, size=300, split="dev"))))
    test = set(_indices(builder(cfg(name, size=300, split="test"))))
    assert len(dev) == len(test) == 300 and not dev & test
    (dev_start, dev_len), (test_start, test_len) = EVAL_SPLITS["dev"], EVAL_SPLITS["test"]
    assert all(dev_start <= i < dev_start + dev_len for i in dev)
    assert all(test_start <= i < test_start + test_len for i in test)
    # every index used before the splits (probe 0-47, runs up to 192, renders 0-1999, windows at 5000)
    # and the annotator's seed * 100000 windows for seeds 0-9 lie below both ranges
    assert min(dev_start, test_start) >= 10 * 100_000 and dev_start + dev_len <= test_start


def test_seed_is_a_real_seed_and_smaller_sets_are_prefixes():
    a = _indices(build_toy_gen(cfg("toy_gen", size=40, seed=0)))
    b = _indices(build_toy_gen(cfg("toy_gen", size=40, seed=1)))
    # a sampling seed, not a window offset: two seeds share about 40*40/100000 scenes, not 39
    assert len(set(a) & set(b)) <= 1
    assert _indices(build_toy_gen(cfg("toy_gen", size=10, seed=0))) == a[:10]
    # seed 1 is not seed 0's window shifted by one
    assert set(a[1:]) != set(b[:-1])
    assert eval_indices("dev", 40, 0) == a


def test_scene_records_follow_the_index_they_name():
    record = build_toy_gen(cfg("toy_gen", size=2, split="test")).records[1]
    index = record.meta["scene"]["index"]
    assert record.id.endswith(f"{index:07d}") and record.seed == index
    from harness.toy.world import caption
    assert record.prompt == caption(scene_for_index("toy_gen", index)).text


@pytest.mark.parametrize("change,match", [({"split": "toy_gen"}, "dataset.split"), ({"seed": -1}, "seed"),
                                          ({"size": 0}, "size"), ({"world": "train"}, "world")])
def test_bad_split_seed_size_or_world_is_refused(change, match):
    options = {"size": 2} | change
    with pytest.raises(ConfigError, match=match):
        build_toy_scenes(cfg("toy_scenes", **options))
