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
    data = bytearray((folder / "image.png").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "image.png").write_bytes(bytes(data))
    assert store.get(key) is None
    assert not folder.exists(), "a damaged entry must be removed so it is regenerated"


def test_damaged_arrays_file_is_removed_and_put_back_by_regeneration(store_root):
    store = SampleStore(store_root)
    key = "fe" * 32
    folder = store.put(key, make_sample())
    (arrays_file,) = folder.glob("arrays-*.npz")
    data = bytearray(arrays_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays_file.write_bytes(bytes(data))
    damaged = store.get(key)
    assert damaged.arrays == {} and damaged.dropped_arrays == ("map",)
    assert not arrays_file.exists() and folder.exists(), "only the damaged arrays file goes; the image stays"
    assert not store.check(key) and not store.has(key)
    store.put(key, make_sample())
    np.testing.assert_array_equal(store.get(key).arrays["map"], make_sample().arrays["map"])


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


def test_dropped_arrays_keep_image_and_meta_and_come_back_on_regeneration(store_root):
    store = SampleStore(store_root)
    key = "a1" * 32
    folder = store.put(key, make_sample(7), {"prompt": "x"})
    (arrays_file,) = folder.glob("arrays-*.npz")
    size = arrays_file.stat().st_size
    assert store.has(key) and store.check(key)

    assert store.drop_arrays(key) == size
    assert store.drop_arrays(key) == 0, "dropping twice frees nothing more"
    dropped = store.get(key)
    np.testing.assert_array_equal(dropped.image, make_sample(7).image)
    assert dropped.meta == {"seconds": 0.5} and dropped.arrays == {} and dropped.dropped_arrays == ("map",)
    assert not store.has(key) and not store.check(key), "a sample without its arrays must be remade"

    # Regeneration with the same arrays (different pixels, to show which parts are kept): the image
    # stays the first one, the arrays come back, and the event log records a restoration.
    store.put(key, make_sample(9))
    back = store.get(key)
    assert back.image[1, 1, 0] == 7 and back.dropped_arrays == ()
    np.testing.assert_array_equal(back.arrays["map"], make_sample().arrays["map"])
    assert store.has(key) and store.check(key)
    events = [json.loads(line) for line in (store_root / EVENTS_FILE).read_text().splitlines()]
    assert [(e["key"], e.get("restored")) for e in events] == [(key, None), (key, "arrays")]

    # Regenerated arrays that differ from the recorded digest cannot join the old entry (it would
    # fail its own check): the entry is written anew, image, arrays and metadata together.
    store.drop_arrays(key)
    regenerated = make_sample(9)
    regenerated.arrays["map"] = regenerated.arrays["map"] + 1
    store.put(key, regenerated)
    back = store.get(key)
    assert back.image[1, 1, 0] == 9 and back.dropped_arrays == ()
    np.testing.assert_array_equal(back.arrays["map"], make_sample().arrays["map"] + 1)
    assert store.check(key)


def test_a_sample_without_arrays_is_complete_and_has_nothing_to_drop(store_root):
    store = SampleStore(store_root)
    key = "b2" * 32
    store.put(key, Sample(image=make_sample().image, meta={}))
    assert store.drop_arrays(key) == 0
    assert store.has(key) and store.check(key) and store.get(key).dropped_arrays == ()


def test_entries_written_with_a_single_arrays_npz_are_read_and_dropped(store_root):
    """Entries from before arrays became detachable hold ``arrays.npz`` listed in the checksums."""
    import hashlib
    import io

    store = SampleStore(store_root)
    key = "c3" * 32
    folder = store.path(key)
    folder.mkdir(parents=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, map=np.ones((2, 2), np.float32))
    (folder / "arrays.npz").write_bytes(buffer.getvalue())
    checksums = {"arrays.npz": hashlib.sha256(buffer.getvalue()).hexdigest()}
    (folder / "meta.json").write_text(json.dumps({"key": key, "spec": None, "meta": {}, "checksums": checksums}))
    assert store.check(key) and store.get(key).arrays["map"].sum() == 4
    assert store.drop_arrays(key) == len(buffer.getvalue())
    assert store.get(key).dropped_arrays == ("*",) and not store.check(key)
