"""Runs for the report tests: one real `harness run experiment=daam_smoke` and a synthetic sweep
(two PAG-scale runs of 30 samples each in a real sample store) whose first prompt carries markup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import REPO_ROOT
from harness.data.prompts import PromptRecord, PromptSet
from harness.store.rows import MetricResult, build_rows, write_rows
from harness.store.samples import Sample, SampleStore, content_key

HOSTILE_PROMPT = 'a dog <script>window.__pwned = 1</script> &amp; "couch" &lt;b&gt; <img src=x onerror=alert(1)>'
SAMPLES_PER_RUN = 30


def write_synthetic_sweep(root: Path, store_root: Path, samples: int = SAMPLES_PER_RUN,
                          scales: tuple[float, ...] = (1.0, 3.0)) -> list[Path]:
    """Runs of an experiment ``synthetic_sweep`` (method pag, hp.pag_scale = each scale): FID with a CI,
    per-sample ``miou`` rows with sample keys, DAAM-style heat maps (dog or cat) in the store."""
    store = SampleStore(store_root)
    records = [PromptRecord(f"s{i:04d}", HOSTILE_PROMPT if i == 0 else f"a {'dog' if i % 2 == 0 else 'cat'} number {i}",
                            seed=i) for i in range(samples)]
    rng = np.random.default_rng(0)
    run_dirs = []
    for job, scale in enumerate(scales):
        run_dir = root / str(job)
        PromptSet("synthetic", records).save(run_dir / "prompts.json")
        per_sample = []
        for i, record in enumerate(records):
            word = "dog" if i % 2 == 0 else "cat"
            sample = Sample(image=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                            arrays={f"heatmap:{word}": rng.random((8, 8)).astype(np.float32)},
                            meta={"record_id": record.id})
            key = content_key({"synthetic": record.id, "scale": scale})
            store.put(key, sample)
            per_sample.append({"sample_id": record.id, "metric": "miou", "value": (i * 7 % samples) / samples + job,
                               "item": word, "extra": {"sample_key": key, "dataset": "toyA" if i < samples // 2 else "toyB"}})
        identity = {"experiment": "synthetic_sweep", "model": "tiny_random", "dataset": "toyA", "split": "test",
                    "method": "pag", "seed": 0}
        aggregates = [MetricResult("fid", 40.0 - 5 * scale, samples, 35.0 - 5 * scale, 45.0 - 5 * scale,
                                   definition="Frechet distance <b>test</b> definition")]
        provenance = {"git_sha": "0123abc", "config_hash": "cafe", "versions": '{"torch": "x"}', "run_dir": str(run_dir)}
        write_rows(build_rows(identity, {"hp.pag_scale": scale}, provenance, aggregates, per_sample), run_dir)
        run_dirs.append(run_dir)
    return run_dirs


def write_synthetic_segmentation(run_dir: Path, store_root: Path, samples: int = 3) -> Path:
    """An EmerDiff-like run: samples with a ``labels`` array, records whose ground truth is a label
    PNG, no per-sample rows (dataset-level metric only); the samples are named by sample_keys.json."""
    import json

    from PIL import Image

    store = SampleStore(store_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    records, keys = [], {}
    for i in range(samples):
        labels = np.zeros((16, 16), np.int64)
        labels[:, 8:] = 1 + i
        truth = run_dir / f"truth{i}.png"
        Image.fromarray(np.where(np.arange(16)[None, :] < 8, 0, 2).repeat(16, 0).astype(np.uint8)).save(truth)
        records.append(PromptRecord(f"img{i}", f"image {i}", seed=i, meta={"label_path": str(truth)}))
        key = content_key({"segmentation": i})
        store.put(key, Sample(image=np.full((16, 16, 3), 40 * i, np.uint8), arrays={"labels": labels}))
        keys[f"img{i}"] = key
    PromptSet("seg", records).save(run_dir / "prompts.json")
    (run_dir / "sample_keys.json").write_text(json.dumps({"emerdiff": keys}))
    identity = {"experiment": "synthetic_segmentation", "model": "toy", "dataset": "toy_scenes", "split": "test",
                "method": "emerdiff", "seed": 0}
    write_rows(build_rows(identity, {}, {"git_sha": "abc-dirty", "config_hash": "", "versions": "{}", "run_dir": ""},
                          [MetricResult("miou_hungarian", 0.25, samples, 0.2, 0.3)], []), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory) -> dict[str, Path]:
    """{"root", "store", "daam_smoke", "sweep"}: the runs the report tests read."""
    root = tmp_path_factory.mktemp("report_runs")
    store = root / "cache"
    daam = root / "runs" / "daam_smoke"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, "-m", "harness.cli", "run", "experiment=daam_smoke",
                                f"hydra.run.dir={daam}", f"store.root={store}"], cwd=root, env=env,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    write_synthetic_sweep(root / "runs" / "sweep", store)
    write_synthetic_segmentation(root / "runs" / "segmentation", store)
    return {"root": root, "store": store, "daam_smoke": daam, "sweep": root / "runs" / "sweep"}
