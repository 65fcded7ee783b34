"""Integrity probes: data that names code, edited or swapped store entries, damaged result files,
and a report written over something it did not write. Each ends in one clear error, or in a
regeneration with nothing lost."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from harness import cli
from harness.compose import compose
from harness.data.prompts import PromptRecord, PromptSet
from harness.errors import DataError
from harness.run import run_experiment
from harness.store.samples import META_FILE, Sample, SampleStore

CALLED: list[dict] = []


def record_call(**arguments):
    """What a hostile manifest names: must never run."""
    CALLED.append(arguments)
    return np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.int64)


def _one_line_error(capsys, argv: list[str], *expected: str) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for text in expected:
        assert text in lines[0], lines[0]


def test_a_manifest_naming_a_function_is_refused_and_the_function_never_runs(tmp_path):
    from harness.data.image_sets import load_record_image

    hostile = PromptRecord("r0", "a red circle", 0, {"renderer": f"{__name__}:record_call", "renderer_args": {"x": 1}})
    manifest = PromptSet("hostile", [hostile]).save(tmp_path / "hostile.json")
    cfg = compose(["experiment=smoke", "dataset=prompt_manifest", f"dataset.path={manifest}",
                   f"store.root={tmp_path / 'cache'}"])
    with pytest.raises(DataError, match=r"names renderer '.*:record_call', which is not a registered renderer "
                                        r"\(known: toy_scene\); a data file cannot name code"):
        run_experiment(cfg, tmp_path / "run")
    with pytest.raises(DataError, match="not a registered renderer"):
        load_record_image(hostile)
    assert CALLED == []
    # the registered name renders the toy scene it names
    image, _ = load_record_image(PromptRecord("s", "x", 0, {"renderer": "toy_scene", "renderer_args": {
        "split": "toy_gen", "index": 3, "n_objects": None}}))
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)


def _sample(value: float, words=("cat",)) -> Sample:
    arrays = {f"heatmap:{w}": np.full((4, 4), value, np.float32) for w in words}
    return Sample(image=np.full((8, 8, 3), int(value * 10), np.uint8), arrays=arrays, meta={"words": list(words)})


def test_an_edited_meta_json_is_caught_and_the_sample_regenerated(store_root):
    store = SampleStore(store_root)
    store.put("a" * 64, _sample(1.0), {"prompt": "a cat"})
    store.put("b" * 64, _sample(2.0), {"prompt": "a dog"})
    meta_path = store.path("a" * 64) / META_FILE
    document = json.loads(meta_path.read_text())
    document["meta"]["words"] = ["dog"]  # the words of the entry edited, its checksum left as it was
    meta_path.write_text(json.dumps(document, sort_keys=True, indent=1))
    assert not store.check("a" * 64), "an edited meta.json must fail the entry's check"
    assert not store.path("a" * 64).exists(), "the damaged entry is removed, so the run regenerates it"
    assert store.check("b" * 64), "the other entry is untouched"
    store.put("a" * 64, _sample(1.0), {"prompt": "a cat"})
    assert store.check("a" * 64) and store.get("a" * 64).meta["words"] == ["cat"]


def test_an_arrays_file_swapped_in_from_another_entry_is_caught(store_root):
    store = SampleStore(store_root)
    store.put("a" * 64, _sample(1.0), {"prompt": "a cat"})
    store.put("b" * 64, _sample(2.0), {"prompt": "a dog"})
    (mine,) = store.path("a" * 64).glob("arrays-*.npz")
    (theirs,) = store.path("b" * 64).glob("arrays-*.npz")
    mine.unlink()
    shutil.copy(theirs, store.path("a" * 64) / theirs.name)  # valid by its own name, but not this entry's
    assert store.get("a" * 64) is None
    assert store.check("b" * 64) and store.get("b" * 64).arrays["heatmap:cat"][0, 0] == 2.0
    store.put("a" * 64, _sample(1.0), {"prompt": "a cat"})
    assert store.get("a" * 64).arrays["heatmap:cat"][0, 0] == 1.0


@pytest.fixture
def finished_run(tmp_path):
    overrides = ["experiment=smoke", "dataset.size=2", "generation.steps=1", f"store.root={tmp_path / 'cache'}",
                 "print_summary=false", "figures=false"]
    run_dir = tmp_path / "run"
    run_experiment(compose(overrides), run_dir)
    return overrides, run_dir


def test_a_flipped_byte_in_rows_parquet_is_caught_by_table_and_report(finished_run, tmp_path, capsys):
    overrides, run_dir = finished_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["files"]) == {"rows.parquet", "summary.csv"}
    assert cli.main(["table", str(run_dir)]) == 0
    capsys.readouterr()
    rows = run_dir / "rows.parquet"
    data = bytearray(rows.read_bytes())
    data[len(data) // 2] ^= 0x01
    rows.write_bytes(bytes(data))
    _one_line_error(capsys, ["table", str(run_dir)], "rows.parquet fails its checksum in", "manifest.json")
    _one_line_error(capsys, ["report", str(run_dir), "--out", str(tmp_path / "r.html")], "fails its checksum")
    # rerunning the same config writes the rows again from the cached samples: nothing lost
    again = run_experiment(compose(overrides), run_dir)
    assert again.generated == 0 and again.reused == 2
    assert cli.main(["table", str(run_dir)]) == 0


def test_report_out_never_replaces_a_foreign_file_or_a_folder(finished_run, tmp_path, capsys):
    _, run_dir = finished_run
    foreign = tmp_path / "notes.html"
    foreign.write_text("<p>my own notes</p>\n")
    _one_line_error(capsys, ["report", str(run_dir), "--out", str(foreign)], "was not written by harness report")
    assert foreign.read_text() == "<p>my own notes</p>\n"
    folder = tmp_path / "pages.html"
    folder.mkdir()
    _one_line_error(capsys, ["report", str(run_dir), "--out", str(folder)], "is a folder")
    _one_line_error(capsys, ["report", str(run_dir), "--out", str(tmp_path)], "is a folder")
    # a page harness report wrote is rebuilt in place
    ours = tmp_path / "report.html"
    assert cli.main(["report", str(run_dir), "--out", str(ours)]) == 0
    assert cli.main(["report", str(run_dir), "--out", str(ours)]) == 0
    assert 'content="harness report"' in ours.read_text()
