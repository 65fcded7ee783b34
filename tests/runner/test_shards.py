"""Sharding: a deterministic partition of the prompt set; N shards into one store give the same
rows as one unsharded run, with no sample generated twice."""

import json

import pandas as pd
import pytest

from harness.data.prompts import PromptRecord
from harness.errors import ConfigError
from harness.run import run_experiment, shard_records
from harness.store.samples import EVENTS_FILE

#: Columns that legitimately differ between two runs of the same config: where the run wrote
#: (run_dir). Rows of kind "cost" (seconds per image, measured when the sample was generated)
#: are compared on everything but their value.
# run_dir: where the rows were written; sample_created: when each sample was generated (provenance)
RUN_SPECIFIC = ["run_dir", "sample_created"]


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=RUN_SPECIFIC).copy()
    frame.loc[frame["kind"] == "cost", "value"] = float("nan")
    frame.loc[frame["kind"] == "cost", ["ci_low", "ci_high"]] = float("nan")
    return frame.reset_index(drop=True)


def smoke(compose, store, *extra):
    return compose(["experiment=smoke", f"store.root={store}", "dataset.size=7", "generation.steps=2",
                    "generation.batch_size=2", *extra])


def test_shards_partition_the_records_in_the_same_way_every_time():
    records = [PromptRecord(f"r{i}", f"p{i}", i) for i in range(11)]
    shards = [shard_records(records, index, 3) for index in range(3)]
    assert [[r.id for r in shard] for shard in shards] == [
        ["r0", "r3", "r6", "r9"], ["r1", "r4", "r7", "r10"], ["r2", "r5", "r8"]]
    assert shard_records(records, 0, 1) == records
    for index, count in [(3, 3), (-1, 2), (0, 0)]:
        with pytest.raises(ConfigError, match="shard.index"):
            shard_records(records, index, count)


def test_three_shards_then_scoring_equal_one_unsharded_run(compose, tmp_path):
    sharded_store = tmp_path / "sharded"
    counts = []
    for index in range(3):
        outcome = run_experiment(smoke(compose, sharded_store, f"shard.index={index}", "shard.count=3"),
                                 tmp_path / f"shard{index}")
        assert outcome.rows.empty  # a shard only generates
        counts.append(outcome.generated)
        manifest = json.loads((tmp_path / f"shard{index}" / "shard.json").read_text())
        assert manifest["shard"] == {"index": index, "count": 3} and manifest["of"] == 7
    assert counts == [3, 2, 2]
    scored = run_experiment(smoke(compose, sharded_store), tmp_path / "scored")
    assert (scored.generated, scored.reused) == (0, 7)
    keys = [json.loads(line)["key"] for line in (sharded_store / EVENTS_FILE).read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 7, "no sample generated twice"

    single = run_experiment(smoke(compose, tmp_path / "single"), tmp_path / "one")
    assert single.generated == 7
    pd.testing.assert_frame_equal(comparable(scored.rows), comparable(single.rows))
    assert (scored.rows["config_hash"] == single.rows["config_hash"]).all()
    # each per-sample row names the store entry of the sample it scores
    per_sample = scored.rows[scored.rows["level"] == "sample"]
    assert set(per_sample["sample_key"]) == set(keys)
    assert all((sharded_store / key[:2] / key / "image.png").is_file() for key in per_sample["sample_key"])


def test_shards_also_make_the_per_sample_baselines_predictions(compose, tmp_path):
    """DAAM with the toy experiment's baselines: the shards predict every per-sample baseline on
    their own samples; the scoring run only adds the dataset-level baseline's predictions (one
    fit over the whole set) and its rows equal one unsharded run's."""
    daam = ["experiment=daam_toy", "model=tiny_random", "dataset.split=test", "dataset.seed=0", "dataset.size=3",
            "generation.steps=2", "generation.batch_size=2", "figures=false"]
    store = tmp_path / "sharded"
    made = []
    for index in range(2):
        run_experiment(compose([*daam, f"store.root={store}", f"shard.index={index}", "shard.count=2"]),
                       tmp_path / f"shard{index}")
        made.append(json.loads((tmp_path / f"shard{index}" / "shard.json").read_text())["baseline_predictions_made"])
    per_sample = [name for name in compose(daam).baseline if name != "kmeans_dataset_hungarian"]
    assert made == [2 * len(per_sample), 1 * len(per_sample)]
    after_shards = len((store / EVENTS_FILE).read_text().splitlines())

    scored = run_experiment(compose([*daam, f"store.root={store}"]), tmp_path / "scored")
    assert (scored.generated, scored.reused) == (0, 3)
    written_by_scoring = len((store / EVENTS_FILE).read_text().splitlines()) - after_shards
    assert written_by_scoring == 3, "only the dataset-level baseline's predictions are left to the scoring run"
    single = run_experiment(compose([*daam, f"store.root={tmp_path / 'single'}"]), tmp_path / "one")
    pd.testing.assert_frame_equal(comparable(scored.rows), comparable(single.rows))
