import json
import os
import time

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.store.samples import EVENTS_FILE, Sample, SampleStore, content_key


def make_sample(value: int = 7) -> Sample:
    image = np.full((8, 6, 3), value, dtype=np.uint8)
    image[0, 0] = [1, 2, 3]
    return Sample(image=image, arrays={"map": np.arange(12, dtype=np.float32).reshape(3, 4)}, meta={"seconds": 0.5})


def test_content_key_is_order_independent_and_sensitive_to_values():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})
    assert content_key({"a": 1.0}) != content_key({"a": 1.5})


def test_put_get_round_trip_is_exact(store_root):
    store = SampleStore(store_root)
    sample = make_sample()
    store.put("ab" * 32, sample, {"prompt": "x"})
    loaded = store.get("ab" * 32)
    np.testing.assert_array_equal(loaded.image, sample.image)
    np.testing.assert_array_equal(loaded.arrays["map"], sample.arrays["map"])
    assert loaded.arrays["map"].dtype == np.float32
    assert loaded.meta == {"seconds": 0.5}
    assert store.get("cd" * 32) is None


def test_damaged_entry_is_detected_and_removed(store_root):
    store = SampleStore(store_root)
    key = "ef" * 32
    folder = store.put(key, make_sample())
    data = bytearray((folder / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "arrays.npz").write_bytes(bytes(data))
    assert store.get(key) is None
    assert not folder.exists(), "a damaged entry must be removed so it is regenerated"


def test_truncated_metadata_is_treated_as_damaged(store_root):
    store = SampleStore(store_root)
    key = "12" * 32
    folder = store.put(key, make_sample())
    (folder / "meta.json").write_text('{"key": ')
    assert store.get(key) is None


def test_existing_entry_is_not_overwritten_and_events_are_logged_once(store_root):
    store = SampleStore(store_root)
    key = "34" * 32
    store.put(key, make_sample(7))
    store.put(key, make_sample(9))
    assert store.get(key).image[1, 1, 0] == 7
    events = [json.loads(line) for line in (store_root / EVENTS_FILE).read_text().splitlines()]
    assert [e["key"] for e in events] == [key]


def test_interrupted_write_leaves_no_entry_and_is_cleaned(store_root):
    store = SampleStore(store_root)
    key = "56" * 32
    staging = store_root / key[:2] / f".tmp-{key[:12]}-dead"
    staging.mkdir(parents=True)
    (staging / "image.png").write_bytes(b"partial")
    assert store.get(key) is None
    # a young staging folder may be another run's write in flight: left alone
    assert store.clean_staging() == 0 and staging.exists()
    old = time.time() - 3600
    os.utime(staging, (old, old))
    assert store.clean_staging() == 1
    assert not staging.exists()


def test_failure_during_put_leaves_nothing_behind(store_root):
    store = SampleStore(store_root)
    bad = Sample(image=np.zeros((4, 4, 3), dtype=np.float32))  # not uint8: refused mid-write
    with pytest.raises(ValueError):
        store.put("78" * 32, bad)
    assert store.get("78" * 32) is None
    assert list(store_root.glob("*/.tmp-*")) == []


def test_unwritable_store_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HarnessError, match="not writable"):
        SampleStore(blocker / "cache")
