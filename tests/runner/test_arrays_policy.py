"""``store.arrays``: per-sample arrays kept in the store (default) or dropped once scored.

Dropping must not change a single scored value, must leave images and metadata in place, and a
later run that needs the arrays must regenerate exactly those samples (and their baselines'
predictions) and score the same rows again."""

import json

import pandas as pd
import pytest

from harness.errors import ConfigError
from harness.run import run_experiment
from harness.store.samples import EVENTS_FILE

from .test_shards import comparable

#: DAAM on tiny_random with the toy experiment's metric (mIoU reads the heat maps) and baselines
#: (k-means predictions are stored as arrays too): two samples, two steps.
DAAM = ["experiment=daam_toy", "model=tiny_random", "dataset.split=test", "dataset.seed=0", "dataset.size=2",
        "generation.steps=2", "generation.batch_size=2", "figures=false"]


def arrays_files(store):
    return sorted(store.glob("*/*/arrays-*.npz"))


def run(compose, store, run_dir, *extra):
    return run_experiment(compose([*DAAM, f"store.root={store}", *extra]), run_dir)


def test_drop_scores_the_same_rows_and_a_later_run_regenerates_the_arrays(compose, tmp_path):
    kept = run(compose, tmp_path / "kept", tmp_path / "k")
    assert arrays_files(tmp_path / "kept"), "the default keeps the arrays"

    store = tmp_path / "dropped"
    dropped = run(compose, store, tmp_path / "d", "store.arrays=drop")
    pd.testing.assert_frame_equal(comparable(dropped.rows), comparable(kept.rows))
    assert (dropped.rows["config_hash"] == kept.rows["config_hash"]).all(), "store.* is not part of what is measured"
    assert arrays_files(store) == [], "every sample's and prediction's arrays are gone"
    keys = json.loads((tmp_path / "d" / "sample_keys.json").read_text())["daam"].values()
    assert all((store / key[:2] / key / "image.png").is_file() for key in keys), "images stay"

    # The next run needs the maps: the two samples are made again, their arrays put back, and
    # the rows are the same; the event log shows restorations, never a second entry.
    again = run(compose, store, tmp_path / "a")
    assert (again.generated, again.reused) == (2, 0)
    pd.testing.assert_frame_equal(comparable(again.rows), comparable(kept.rows))
    assert len(arrays_files(store)) == len(arrays_files(tmp_path / "kept"))
    events = [json.loads(line) for line in (store / EVENTS_FILE).read_text().splitlines()]
    restored = [e["key"] for e in events if e.get("restored") == "arrays"]
    assert set(keys) <= set(restored)
    assert len({e["key"] for e in events if "restored" not in e}) == len([e for e in events if "restored" not in e])

    third = run(compose, store, tmp_path / "t")
    assert (third.generated, third.reused) == (0, 2)


def test_an_unknown_arrays_policy_stops_before_any_work(compose, tmp_path):
    with pytest.raises(ConfigError, match="store.arrays=forget"):
        run(compose, tmp_path / "store", tmp_path / "r", "store.arrays=forget")
    assert not (tmp_path / "store").exists() and not (tmp_path / "r").exists()
