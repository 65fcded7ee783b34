"""Loss-curve plotting of harness/toy/export.py over a run and the runs it continued."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from harness.toy.export import write_loss_curve


def _run(folder, steps):
    folder.mkdir()
    (folder / "unet_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps))
    return folder


def test_loss_curve_plots_every_run_and_refuses_a_missing_log(tmp_path):
    first = _run(tmp_path / "run3", [25, 50, 75])
    second = _run(tmp_path / "run5", [100, 125])
    png = tmp_path / "curve.png"
    write_loss_curve([first, second], png)
    with Image.open(png) as image:
        assert image.size == (600, 350)
    with pytest.raises(FileNotFoundError, match="unet_log.jsonl"):
        write_loss_curve([first, tmp_path / "absent"], tmp_path / "other.png")
