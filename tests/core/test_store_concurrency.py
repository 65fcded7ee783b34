"""Concurrent writers on one store, the background writer, and SIGKILL of a shard."""

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from harness import REPO_ROOT
from harness.store.samples import EVENTS_FILE, META_FILE, Sample, SampleStore, SampleWriter

KEYS = [f"{index:02d}" + "ab" * 31 for index in range(24)]


def _writer(root: str, fill: int, barrier) -> None:
    store = SampleStore(root)
    barrier.wait()
    for key in KEYS:
        image = np.full((48, 48, 3), fill, np.uint8)
        arrays = {"map": np.full((16, 16), fill, np.float32)}
        store.put(key, Sample(image=image, arrays=arrays, meta={"fill": fill}), {"writer": fill})


def test_two_processes_writing_the_same_keys_at_once_leave_every_entry_whole(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_writer, args=(str(tmp_path), fill, barrier)) for fill in (10, 200)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    store = SampleStore(tmp_path, verify=True)
    for key in KEYS:
        sample = store.get(key)
        assert sample is not None, f"entry {key[:4]} lost"
        fill = sample.meta["fill"]
        # one writer's copy, whole: image, arrays and metadata from the same writer
        assert fill in (10, 200)
        assert (sample.image == fill).all() and (sample.arrays["map"] == fill).all()
        assert json.loads((store.path(key) / META_FILE).read_text())["spec"] == {"writer": fill}
    assert not list(tmp_path.glob("*/.tmp-*")), "no staging folder left behind"
    events = [json.loads(line) for line in (tmp_path / EVENTS_FILE).read_text().splitlines()]
    assert all(set(event) >= {"key", "host", "pid", "time"} for event in events)
    assert {event["key"] for event in events} == set(KEYS)


def test_background_writer_writes_everything_and_reports_its_error(tmp_path):
    store = SampleStore(tmp_path)
    with SampleWriter(store, max_pending=2) as writer:
        for index in range(6):
            writer.submit(KEYS[index], Sample(image=np.full((8, 8, 3), index, np.uint8)), None)
    assert writer.written == 6
    assert [store.get(KEYS[i]).image[0, 0, 0] for i in range(6)] == list(range(6))
    with pytest.raises(ValueError, match="uint8"):
        with SampleWriter(store) as broken:
            broken.submit(KEYS[7], Sample(image=np.zeros((8, 8, 3), np.float32)), None)
            broken.close()
    assert store.get(KEYS[7]) is None


def _cli(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _counts(output: str) -> tuple[int, int]:
    found = re.search(r"(\d+) sample\(s\) generated, (\d+) reused", output)
    assert found, output[-2000:]
    return int(found.group(1)), int(found.group(2))


@pytest.mark.slow
def test_a_shard_killed_with_sigkill_resumes_without_losing_a_sample(tmp_path):
    store = tmp_path / "store"
    common = ["experiment=smoke", f"store.root={store}", "dataset.size=24", "generation.steps=3",
              "generation.batch_size=1", "shard.count=2", "shard.index=0"]
    events = store / EVENTS_FILE
    victim = _cli([*common, f"hydra.run.dir={tmp_path / 'killed'}"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim.poll() is None:
        if events.is_file() and len(events.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the shard finished before it could be killed: " + victim.communicate()[0][-1000:]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    logged = {json.loads(line)["key"] for line in events.read_text().splitlines()}
    finished = {p.name for p in store.glob("*/*") if (p / META_FILE).is_file()}
    assert 3 <= len(logged) <= len(finished) < 12 and logged <= finished
    assert all(SampleStore(store).get(key) is not None for key in finished), "no torn entry"

    again = _cli([*common, f"hydra.run.dir={tmp_path / 'again'}"])
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output[-2000:]
    assert _counts(output) == (12 - len(finished), len(finished))
    everything = _cli(["experiment=smoke", f"store.root={store}", "dataset.size=24", "generation.steps=3",
                       "shard.count=2", "shard.index=1", f"hydra.run.dir={tmp_path / 'other'}"])
    assert _counts(everything.communicate(timeout=600)[0]) == (12, 0)
    keys = [json.loads(line)["key"] for line in events.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 24, "no sample generated twice"
