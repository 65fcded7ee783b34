"""Toy v2 datasets: seen and unseen compositions, meta as spoken, exact semantic labels."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.toy2_sets import build_toy2_gen, build_toy2_scenes, render_toy2_scene
from harness.errors import ConfigError
from harness.toy.v2.splits import scene_for_index
from harness.toy.v2.world import SHAPES, render_scene


def _cfg(compose, *overrides):
    return compose(["dataset=toy2_gen", "dataset.size=12", *overrides]).dataset


def test_unseen_records_carry_a_held_out_kind_and_seen_records_none(compose):
    seen = build_toy2_gen(_cfg(compose, "dataset.split=test"))
    unseen = build_toy2_gen(_cfg(compose, "dataset.split=test", "dataset.params.composition=unseen"))
    assert all(r.meta["held_out"] == [] for r in seen.records)
    assert all(r.meta["held_out"] for r in unseen.records)
    record = unseen.records[0]
    scene = scene_for_index("unseen", record.seed)
    assert [g["shape"] for g in record.meta["groups"]] == [g.shape for g in scene.groups]
    assert all(g["colour"] is not None and g["texture"] is not None for g in record.meta["groups"])  # always spoken
    assert {r.id for r in seen.records}.isdisjoint({r.id for r in unseen.records})


def test_a_bad_composition_or_param_is_one_clear_error(compose):
    with pytest.raises(ConfigError, match="composition must be one of seen, unseen"):
        build_toy2_gen(_cfg(compose, "dataset.params.composition=novel"))
    with pytest.raises(ConfigError, match="unknown for a toy v2 dataset"):
        build_toy2_gen(_cfg(compose, "+dataset.params.objects=2"))


def test_scene_labels_are_the_shapes_of_the_instances(compose):
    scenes = build_toy2_scenes(compose(["dataset=toy2_scenes", "dataset.size=3"]).dataset)
    record = scenes.records[0]
    image, labels = render_toy2_scene(**record.meta["renderer_args"])
    scene = scene_for_index("seen", record.seed)
    _, instances = render_scene(scene)
    assert record.meta["class_names"] == ["background", *SHAPES]
    for k, (g, _) in enumerate(scene.instances):
        assert np.all(labels[instances == k + 1] == 1 + SHAPES.index(scene.groups[g].shape))
    assert np.all(labels[instances == 0] == 0) and image.shape == (64, 64, 3)
