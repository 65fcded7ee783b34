"""Render-only validity rows of toy world v2: the latent-grid reduction on exact cases, and the
rows' known orderings (a flat-colour world is easy for colour k-means; the ceiling beats it)."""

from __future__ import annotations

import numpy as np

from harness.toy.v2.validity import colour_kmeans_labels, latent_grid_labels, render_rows


def test_latent_grid_labels_majority_then_nearest():
    labels = np.zeros((8, 8), np.int32)
    labels[0:3, 0:4] = 2  # 12 of 16 pixels of the top-left cell: the cell becomes 2
    labels[4:6, 4:8] = 1  # 8 of 16 of the bottom-right cell: a tie, the lower class (0) wins
    out = latent_grid_labels(labels, factor=4)
    expected = np.zeros((8, 8), np.int32)
    expected[0:4, 0:4] = 2
    assert np.array_equal(out, expected)


def test_colour_kmeans_separates_flat_colours_exactly():
    image = np.zeros((16, 16, 3), np.uint8)
    image[:8] = (200, 30, 30)
    image[8:, 8:] = (30, 30, 200)
    labels = colour_kmeans_labels(image, 3)
    assert len(np.unique(labels)) == 3
    assert len(np.unique(labels[:8])) == 1 and len(np.unique(labels[8:, 8:])) == 1 and len(np.unique(labels[8:, :8])) == 1


def test_rows_meet_their_goals_on_dev_and_the_ceiling_beats_colour():
    rows = render_rows("dev", 12, resamples=50)
    assert set(rows["check"]) == {"colour_kmeans", "latent_grid_ceiling"}
    assert len(rows) == 4 and (rows["n"] == 12).all()
    assert (rows["ci_low"] <= rows["value"]).all() and (rows["value"] <= rows["ci_high"]).all()
    for _, by_composition in rows.groupby("dataset"):
        by_check = by_composition.set_index("check")["value"]
        assert by_check["colour_kmeans"] < by_check["latent_grid_ceiling"]
    assert rows["meets_goal"].all()
