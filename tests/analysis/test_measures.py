"""Set statistics, mass outside objects, spread and inside/outside change on hand-computed cases."""

import numpy as np
import pytest

from harness.analysis.measures import (
    change_map,
    masked_image,
    mass_outside,
    region_change,
    set_statistics,
    spread_beyond,
)


def grid(rows):
    return np.array([[c == "#" for c in row] for row in rows])


def test_iod_and_ioh_on_small_binary_maps():
    head = grid(["##..",
                 "##..",
                 "....",
                 "...."])  # 4 pixels
    dependent = grid([".#..",
                      ".##.",
                      ".#..",
                      "...."])  # 4 pixels, 2 shared with the head
    stats = set_statistics(head, dependent)
    assert stats.iou == pytest.approx(2 / 6)
    assert stats.iod == pytest.approx(2 / 4)
    assert stats.ioh == pytest.approx(2 / 4)


def test_iod_differs_from_ioh_when_one_map_contains_the_other():
    head = grid(["####", "####", "....", "...."])  # 8 pixels
    dependent = grid(["##..", "....", "....", "...."])  # 2 pixels, all inside the head
    stats = set_statistics(head, dependent)
    assert stats.iod == 1.0
    assert stats.ioh == pytest.approx(2 / 8)
    assert stats.iou == pytest.approx(2 / 8)


def test_empty_maps_give_zero_as_in_the_notebook():
    empty = np.zeros((3, 3), bool)
    full = np.ones((3, 3), bool)
    assert set_statistics(empty, empty) == set_statistics(empty, empty)
    stats = set_statistics(full, empty)
    assert (stats.iou, stats.iod, stats.ioh) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        set_statistics(np.zeros((2, 2), bool), np.zeros((3, 3), bool))


def test_mass_outside_objects():
    heat = np.array([[1.0, 3.0], [0.0, -2.0]])  # the negative value is clamped to 0
    objects = np.array([[False, True], [False, False]])
    assert mass_outside(heat, objects) == pytest.approx(1.0 / 4.0)
    assert np.isnan(mass_outside(np.zeros((2, 2)), objects))


def test_spread_beyond_reference():
    word = grid(["##", "##"])
    reference = grid(["#.", ".."])
    assert spread_beyond(word, reference) == pytest.approx(3 / 4)
    assert spread_beyond(np.zeros((2, 2), bool), reference) == 0.0


def test_region_change_inside_and_outside_on_synthetic_pairs():
    before = np.zeros((4, 4, 3), np.uint8)
    after = before.copy()
    region = np.zeros((4, 4), bool)
    region[:2, :2] = True
    after[0, 0] = (255, 0, 0)  # one of the 4 inside pixels changes by 1.0 (in [0, 1] units)
    after[3, 3] = (255, 255, 255)  # one of the 12 outside pixels changes by sqrt(3)
    change = region_change(before, after, region)
    assert change.inside == pytest.approx(np.sqrt(1.0 / 4))
    assert change.outside == pytest.approx(np.sqrt(3.0 / 12))
    assert change_map(before, after)[3, 3] == pytest.approx(np.sqrt(3.0))
    same = region_change(before, before, region)
    assert (same.inside, same.outside) == (0.0, 0.0)


def test_region_change_is_per_pixel_so_area_does_not_inflate_it():
    before = np.zeros((4, 4, 3), np.uint8)
    after = np.full((4, 4, 3), 51, np.uint8)  # every pixel changes equally
    small = np.zeros((4, 4), bool)
    small[0, 0] = True
    change = region_change(before, after, small)
    assert change.inside == pytest.approx(change.outside)


def test_masked_image_keeps_only_the_region():
    image = np.full((2, 2, 3), 200, np.uint8)
    keep = np.array([[True, False], [False, False]])
    out = masked_image(image, keep)
    assert out[0, 0].tolist() == [200, 200, 200]
    assert out[1, 1].tolist() == [128, 128, 128]
    assert image[1, 1].tolist() == [200, 200, 200]
