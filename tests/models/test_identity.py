"""Sample keys that can be trusted: weights by content, library versions, provenance of reused samples."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import REPO_ROOT
from harness.run import run_experiment
from harness.store import identity
from harness.store.identity import HashIndex, file_sha256, hub_snapshot_identity, weights_identity
from harness.store.samples import EVENTS_FILE, SampleStore

TOY = REPO_ROOT / "weights" / "toy"
#: the files a toy pipeline loads (the evaluator/segmenter folders are not needed to generate)
TOY_PIPELINE = ["model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"]


def copy_toy(target: Path) -> Path:
    target.mkdir(parents=True)
    for name in TOY_PIPELINE:
        source = TOY / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        else:
            shutil.copy2(source, target / name)
    return target


def perturb_same_size(path: Path, count: int = 256) -> None:
    """Change the last ``count`` bytes of a safetensors file (tensor data, not the header), same size."""
    data = bytearray(path.read_bytes())
    size = len(data)
    tail = np.frombuffer(bytes(data[-count:]), dtype=np.float32).copy()
    tail = tail + np.float32(0.05)  # a fine-tune-sized change to some UNet weights
    data[-count:] = tail.tobytes()
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size


def toy_cfg(compose, folder: Path, store: Path, *extra: str):
    return compose(["experiment=smoke", "model=toy", "dataset=toy_gen", f"model.path={folder}", f"store.root={store}",
                    "dataset.size=2", "generation.steps=2", "model.device=cpu", *extra])


def sample_values(rows: pd.DataFrame) -> pd.Series:
    selected = rows[(rows["level"] == "sample") & (rows["metric"] == "mean_intensity")]
    return selected.sort_values("sample_id")["value"].reset_index(drop=True)


def test_same_names_and_sizes_but_different_unet_bytes_regenerate(compose, tmp_path):
    """The issue's reproduction: model B (changed UNet bytes, same sizes) must not reuse model A's samples."""
    folder_a = copy_toy(tmp_path / "A")
    folder_b = copy_toy(tmp_path / "B")
    perturb_same_size(folder_b / "unet" / "diffusion_pytorch_model.safetensors")
    store = tmp_path / "store"

    first = run_experiment(toy_cfg(compose, folder_a, store), tmp_path / "run_a")
    second = run_experiment(toy_cfg(compose, folder_b, store), tmp_path / "run_b")
    assert (first.generated, first.reused) == (2, 0)
    assert (second.generated, second.reused) == (2, 0), "model B reused model A's samples"
    alone = run_experiment(toy_cfg(compose, folder_b, tmp_path / "empty_store"), tmp_path / "run_b_alone")
    # B's rows are B's own numbers (those of an empty store), not A's.
    pd.testing.assert_series_equal(sample_values(second.rows), sample_values(alone.rows))
    assert not np.allclose(sample_values(second.rows), sample_values(first.rows))
    assert len(list(SampleStore(store).root.glob("??/*"))) == 4
    again = run_experiment(toy_cfg(compose, folder_a, store), tmp_path / "run_a_again")
    assert (again.generated, again.reused) == (0, 2)
    pd.testing.assert_series_equal(sample_values(again.rows), sample_values(first.rows))


def test_hash_index_hashes_each_file_once_and_notices_changes(tmp_path):
    folder = tmp_path / "weights"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "w.safetensors").write_bytes(b"a" * 4096)
    (folder / "model_index.json").write_text("{}")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("ignored")
    index_file = tmp_path / "index.jsonl"

    first = HashIndex(index_file)
    key = weights_identity(folder, first)
    assert first.hashed == 2  # hidden .cache/ is not part of the model
    second = HashIndex(index_file)  # a later run: everything from the index
    assert weights_identity(folder, second) == key and second.hashed == 0

    # Same size, different bytes, mtime restored: the inode changes (a replaced file), so it is rehashed.
    target = folder / "unet" / "w.safetensors"
    stat = target.stat()
    replacement = tmp_path / "new"
    replacement.write_bytes(b"b" * 4096)
    os.replace(replacement, target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = HashIndex(index_file)
    changed = weights_identity(folder, third)
    assert changed != key and third.hashed == 1
    # In-place write (same inode and size, new mtime) is noticed as well.
    with open(target, "r+b") as handle:
        handle.write(b"c")
    fourth = HashIndex(index_file)
    assert weights_identity(folder, fourth) not in (key, changed) and fourth.hashed == 1
    # The identity is the bytes': an independent recomputation agrees.
    expected = [["model_index.json", file_sha256(folder / "model_index.json")], ["unet/w.safetensors", file_sha256(target)]]
    import hashlib
    assert weights_identity(folder, HashIndex(index_file)) == "sha256:" + hashlib.sha256(json.dumps(expected).encode()).hexdigest()


def test_hash_index_skips_torn_lines(tmp_path):
    data = tmp_path / "f.bin"
    data.write_bytes(b"x" * 100)
    index_file = tmp_path / "index.jsonl"
    index_file.write_text('{"path": "/nowhere", "size": 1, "mtime_ns": 1, "ino')  # a crash mid-line
    index = HashIndex(index_file)
    assert index.sha256(data) == file_sha256(data) and index.hashed == 1
    assert HashIndex(index_file).sha256(data) == file_sha256(data)


def _hash_many(args):
    index_file, files = args
    index = HashIndex(index_file)
    return [index.sha256(path) for path in files]


def test_concurrent_index_writers_lose_nothing(tmp_path):
    files = []
    for number in range(40):
        path = tmp_path / f"f{number}.bin"
        path.write_bytes(bytes([number]) * (1000 + number))
        files.append(str(path))
    index_file = str(tmp_path / "index.jsonl")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_hash_many, [(index_file, files), (index_file, files[::-1])])
    assert results[0] == results[1][::-1] == [file_sha256(path) for path in files]
    lines = Path(index_file).read_text().splitlines()
    assert all(json.loads(line)["sha256"] for line in lines)  # no torn or interleaved line
    later = HashIndex(index_file)
    assert [later.sha256(path) for path in files] == results[0] and later.hashed == 0


def test_hub_snapshot_identity_is_the_commit(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--org--name" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    assert hub_snapshot_identity(snapshot) == f"hf-commit:{commit}"
    with pytest.raises(ValueError):
        hub_snapshot_identity(tmp_path)


def test_library_versions_enter_the_key(compose, tmp_path, monkeypatch):
    cfg = compose(["experiment=smoke", f"store.root={tmp_path / 'store'}", "dataset.size=2", "generation.steps=2"])
    first = run_experiment(cfg, tmp_path / "a")
    real_version = identity.metadata.version
    monkeypatch.setattr(identity.metadata, "version",
                        lambda name: "99.0.0" if name == "torch" else real_version(name))
    upgraded = run_experiment(cfg, tmp_path / "b")
    assert (first.generated, upgraded.generated, upgraded.reused) == (2, 2, 0)


def test_rows_carry_the_provenance_of_the_sample_they_score(compose, tmp_path, monkeypatch):
    cfg = compose(["experiment=smoke", f"store.root={tmp_path / 'store'}", "dataset.size=2", "generation.steps=2"])
    monkeypatch.setattr(identity, "_GIT_SHA", ["0ld5ha"])  # the samples are made by "older code"
    first = run_experiment(cfg, tmp_path / "a")
    monkeypatch.setattr(identity, "_GIT_SHA", [])
    second = run_experiment(cfg, tmp_path / "b")
    assert (second.generated, second.reused) == (0, 2)
    per_sample = second.rows[second.rows["level"] == "sample"]
    assert set(per_sample["sample_git_sha"]) == {"0ld5ha"}
    assert set(per_sample["git_sha"]) != {"0ld5ha"}  # the run that read them is today's code
    made = first.rows[first.rows["level"] == "sample"].set_index(["sample_id", "metric"])["sample_created"]
    read = per_sample.set_index(["sample_id", "metric"])["sample_created"]
    pd.testing.assert_series_equal(made.sort_index(), read.sort_index())
    assert json.loads(per_sample["sample_versions"].iloc[0])["torch"]
    aggregate = second.rows[second.rows["level"] == "aggregate"]
    assert aggregate["sample_git_sha"].isna().all()
    # The stamp is in the stored sample itself.
    store = SampleStore(tmp_path / "store")
    metas = [json.loads(p.read_text())["meta"] for p in store.root.glob("??/*/meta.json")]
    assert len(metas) == 2 and all(m["provenance"]["git_sha"] == "0ld5ha" for m in metas)
    assert len((tmp_path / "store" / EVENTS_FILE).read_text().splitlines()) == 2
