"""The run line in-process: rows, determinism, reuse, baselines, and bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.baselines.base import Baseline
from harness.data.prompts import PromptRecord, PromptSet
from harness.errors import DataError, HarnessError, MissingWeightsError
from harness.registry import BASELINES, UnknownNameError
from harness.run import run_experiment
from harness.store.samples import EVENTS_FILE, Sample

QUALITY = ["experiment", "model", "dataset", "split", "method", "seed", "level", "sample_id", "item",
           "metric", "value", "ci_low", "ci_high", "n"]


def smoke_cfg(compose, store_root, *extra):
    return compose(["experiment=smoke", f"store.root={store_root}", "dataset.size=3", "generation.steps=2", *extra])


def quality_rows(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[frame["kind"] == "quality"][QUALITY]
    return frame.sort_values(["method", "level", "metric", "sample_id"]).reset_index(drop=True)


def test_run_writes_tidy_rows_and_summary(compose, store_root, tmp_path):
    outcome = run_experiment(smoke_cfg(compose, store_root), tmp_path / "run")
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    rows = pd.read_parquet(tmp_path / "run" / "rows.parquet")
    for column in ["experiment", "model", "dataset", "method", "metric", "value", "n", "git_sha", "config_hash",
                   "versions", "hp.steps", "hp.guidance_scale"]:
        assert column in summary.columns
    intensity = summary.set_index("metric").loc["mean_intensity"]
    per_sample = rows[(rows["level"] == "sample") & (rows["metric"] == "mean_intensity")]
    assert len(per_sample) == 3 and intensity["n"] == 3
    assert intensity["value"] == pytest.approx(per_sample["value"].mean())
    assert intensity["ci_low"] <= intensity["value"] <= intensity["ci_high"]
    assert set(summary["experiment"]) == {"smoke"} and set(summary["source"]) == {"harness"}
    assert json.loads(summary["versions"].iloc[0])["diffusers"]
    assert outcome.generated == 3 and outcome.reused == 0


def test_same_config_gives_identical_rows_and_rerun_reuses_samples(compose, tmp_path):
    first = run_experiment(smoke_cfg(compose, tmp_path / "cache_a"), tmp_path / "a")
    second = run_experiment(smoke_cfg(compose, tmp_path / "cache_b"), tmp_path / "b")
    pd.testing.assert_frame_equal(quality_rows(first.rows), quality_rows(second.rows))
    third = run_experiment(smoke_cfg(compose, tmp_path / "cache_a"), tmp_path / "c")
    assert (third.generated, third.reused) == (0, 3)
    pd.testing.assert_frame_equal(quality_rows(first.rows), quality_rows(third.rows))
    events = (tmp_path / "cache_a" / EVENTS_FILE).read_text().splitlines()
    assert len(events) == 3, "a cached rerun must not generate again"


def test_different_seed_changes_images(compose, store_root, tmp_path):
    zero = run_experiment(smoke_cfg(compose, store_root, "seed=0"), tmp_path / "s0")
    one = run_experiment(smoke_cfg(compose, store_root, "seed=1"), tmp_path / "s1")
    def values(o):
        return o.rows.query("level == 'sample' and metric == 'mean_intensity'")["value"].to_numpy()
    assert not np.allclose(values(zero), values(one))


class _MeanGrey(Baseline):
    """A test baseline: replaces the image by its mean grey level."""

    name = "test_mean_grey"

    def __init__(self, model=None, level: int = 0):
        super().__init__(model, level=level)

    def predict(self, record, sample):
        return Sample(image=np.full_like(sample.image, self.options["level"]), meta={})


def test_baselines_are_scored_with_the_same_metrics(compose, store_root, tmp_path, request):
    BASELINES.register("test_mean_grey", _MeanGrey)
    request.addfinalizer(lambda: BASELINES.unregister("test_mean_grey"))  # not a baseline of the harness
    outcome = run_experiment(smoke_cfg(compose, store_root, "+baseline={test_mean_grey: {level: 51}}"), tmp_path / "r")
    summary = outcome.rows.query("level == 'aggregate' and metric == 'mean_intensity'").set_index("method")
    assert summary.loc["test_mean_grey", "value"] == pytest.approx(51 / 255)
    assert summary.loc["test_mean_grey", "hp.level"] == 51
    assert summary.loc["generate", "value"] != pytest.approx(51 / 255)
    with pytest.raises(HarnessError, match="accepts"):
        run_experiment(smoke_cfg(compose, store_root, "+baseline={test_mean_grey: {colour: 3}}"), tmp_path / "bad")


def test_unknown_method_name_is_a_clear_error(compose, store_root, tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'generate'"):
        run_experiment(smoke_cfg(compose, store_root, "method.name=generat"), tmp_path / "r")


def test_missing_weights_directory_names_model_and_paths(compose, store_root, tmp_path):
    missing = tmp_path / "no-such-weights"
    with pytest.raises(MissingWeightsError) as caught:
        run_experiment(smoke_cfg(compose, store_root, "model=sd15", f"model.path={missing}"), tmp_path / "r")
    message = str(caught.value)
    assert "sd15" in message and str(missing) in message and "model.path" in message


def test_uncached_real_model_reports_cache_location(compose, store_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError, match="local_files_only"):
        run_experiment(smoke_cfg(compose, store_root, "model=sd2_base"), tmp_path / "r")


def test_empty_prompt_set_is_refused(compose, store_root, tmp_path):
    manifest = PromptSet("empty", []).save(tmp_path / "empty.json")
    with pytest.raises(DataError, match="empty"):
        run_experiment(smoke_cfg(compose, store_root, "dataset=prompt_manifest", f"dataset.path={manifest}"),
                       tmp_path / "r")


def test_missing_and_malformed_manifests_are_refused(compose, store_root, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        run_experiment(smoke_cfg(compose, store_root, "dataset=prompt_manifest",
                                 f"dataset.path={tmp_path / 'nope.json'}"), tmp_path / "r")
    bad = tmp_path / "bad.json"
    bad.write_text('{"records": [{"prompt": "a cat"}]}')
    with pytest.raises(DataError, match="malformed"):
        run_experiment(smoke_cfg(compose, store_root, "dataset=prompt_manifest", f"dataset.path={bad}"), tmp_path / "r")
    edited = PromptSet("one", [PromptRecord("r0", "a cat", 1)]).save(tmp_path / "edited.json")
    edited.write_text(edited.read_text().replace("a cat", "a dog"))
    with pytest.raises(DataError, match="checksum"):
        run_experiment(smoke_cfg(compose, store_root, "dataset=prompt_manifest", f"dataset.path={edited}"),
                       tmp_path / "r")


def test_manifest_dataset_runs_its_records(compose, store_root, tmp_path):
    records = [PromptRecord("r0", "a red circle", 5), PromptRecord("r1", "a blue square", 6)]
    manifest = PromptSet("mine", records).save(tmp_path / "mine.json")
    outcome = run_experiment(smoke_cfg(compose, store_root, "dataset=prompt_manifest", f"dataset.path={manifest}"),
                             tmp_path / "r")
    ids = set(outcome.rows.query("level == 'sample'")["sample_id"])
    assert ids == {"r0", "r1"}
    assert PromptSet.load(tmp_path / "r" / "prompts.json").records == records


def test_unwritable_output_directory_is_a_clear_error(compose, store_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HarnessError, match="cannot be created"):
        run_experiment(smoke_cfg(compose, store_root), blocker / "run")
