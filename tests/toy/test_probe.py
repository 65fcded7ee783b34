"""The attention probe scores a perfect map near 1 and a wrong object's map near 0."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.toy.probe import probe_scenes, word_map_ious
from harness.toy.splits import scene_for_index
from harness.toy.tokens import CONTEXT_LENGTH
from harness.toy.world import caption, render_scene


def _maps_from_masks(scene, labels, swap: bool = False) -> np.ndarray:
    """Token maps on the 16x16 latent grid that equal each word's object mask (or another object's)."""
    cap = caption(scene)
    maps = np.zeros((CONTEXT_LENGTH, 16, 16), np.float32)
    n = len(scene.objects)
    for position, word in enumerate(cap.words, start=1):
        if word.object_index is None:
            continue
        target = (word.object_index + 1) % n + 1 if swap else word.object_index + 1
        mask = torch.from_numpy((labels == target).astype(np.float32))[None, None]
        maps[position] = F.avg_pool2d(mask, 2)[0, 0].numpy()
    return maps


def test_perfect_maps_score_high_and_swapped_maps_low():
    for i in range(30):
        scene = scene_for_index("toy_gen", i, n_objects=2)
        image, labels = render_scene(scene)
        masks = {k: labels == k for k in range(len(scene.objects) + 1)}
        good = word_map_ious(_maps_from_masks(scene, labels), caption(scene), masks)
        bad = word_map_ious(_maps_from_masks(scene, labels, swap=True), caption(scene), masks)
        assert min(good["noun"]) > 0.6
        assert max(bad["noun"]) < 0.2


def test_probe_reads_dev_scenes_only():
    from harness.toy.splits import EVAL_SPLITS

    start, length = EVAL_SPLITS["dev"]
    test_start, test_length = EVAL_SPLITS["test"]
    indices = [i for i, _ in probe_scenes(48, seed=0)]
    assert len(set(indices)) == 48
    assert all(start <= i < start + length for i in indices)
    assert not any(test_start <= i < test_start + test_length for i in indices)
    # the old probe read scenes 0-47: the dev sample shares none of them
    assert not set(indices) & set(range(48))
