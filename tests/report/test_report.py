"""harness report without a browser: the page's parts, escaping in the HTML source, CI bar geometry."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from harness.cli import main
from harness.report.html import _bar, build_report, table_model

from .conftest import HOSTILE_PROMPT, SAMPLES_PER_RUN


@pytest.fixture(scope="module")
def report(report_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    build_report([str(report_runs["root"] / "runs")], out, store_root=report_runs["store"], cwd=report_runs["root"])
    return out


def _gallery_data(html: str) -> list[dict]:
    blocks = re.findall(r'<script type="application/json" class="gallery-data">(.*?)</script>', html, re.S)
    return [json.loads(block) for block in blocks]


def test_bar_geometry():
    assert _bar(5.0, 4.0, 6.0, (0.0, 10.0)) == {"point": 50.0, "low": 40.0, "high": 60.0, "width": 20.0}
    assert _bar(5.0, None, None, (0.0, 10.0)) == {"point": 50.0}
    assert _bar(5.0, 4.0, 6.0, (5.0, 5.0)) is None and _bar(None, 1, 2, (0.0, 1.0)) is None


def test_table_model_marks_published_rows_and_keeps_definitions():
    rows = pd.DataFrame([
        {"experiment": "e", "model": "m", "dataset": "d", "split": "test", "method": "daam", "seed": 0,
         "metric": "miou", "value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10, "kind": "quality",
         "definition": "ours", "source": "harness", "level": "aggregate"},
        {"experiment": None, "model": "m", "dataset": "d", "split": "test", "method": "daam", "seed": None,
         "metric": "miou", "value": 0.7, "ci_low": None, "ci_high": None, "n": None, "kind": "quality",
         "definition": "paper's", "source": "paper:x:t1", "level": "aggregate"},
    ])
    model = table_model(rows)
    assert [r["published"] for r in model["rows"]] == [False, True]
    assert model["footnotes"][0]["definition"] == "ours"
    ours, paper = (r["cells"][0] for r in model["rows"])
    # One scale over the column (0.4 .. 0.7): ours at (0.5 - 0.4) / 0.3.
    assert ours["bar"]["point"] == pytest.approx(33.33, abs=0.01) and ours["bar"]["width"] == pytest.approx(66.67, abs=0.01)
    assert paper["bar"] == {"point": 100.0} and paper["text"] == "0.7"


def test_table_model_keeps_rows_without_numbers_and_metrics_without_intervals():
    base = {"experiment": "e", "model": "m", "dataset": "d", "split": "test", "seed": 0, "n": 4, "kind": "quality",
            "definition": "", "source": "harness", "level": "aggregate", "ci_low": None, "ci_high": None}
    rows = pd.DataFrame([
        {**base, "method": "a_skipped", "metric": "miou", "value": float("nan")},  # an optional baseline that could not run
        {**base, "method": "b", "metric": "miou", "value": 0.5},
        {**base, "method": "b", "metric": "seconds", "value": 2.0, "kind": "cost"},
    ])
    model = table_model(rows)
    assert [r["index"][-1] for r in model["rows"]] == ["a_skipped", "b"]
    skipped, ours = model["rows"]
    assert [c["text"] for c in skipped["cells"]] == ["", ""] and skipped["cells"][0]["bar"] is None
    assert [(c["metric"], c["value"]) for c in ours["cells"]] == [("miou", 0.5), ("seconds", 2.0)]
    assert ours["cells"][0]["low"] is None


def test_report_holds_table_plots_gallery_and_provenance(report, report_runs):
    html = report.read_text()
    summary = pd.read_csv(report_runs["daam_smoke"] / "summary.csv").set_index("metric")
    assert f"{summary.loc['mean_intensity', 'value']:.4g}" in html
    # The sweep: FID at both scales with intervals, and a plot of FID against pag_scale written beside the page.
    assert "35 [30, 40]" in html and "25 [20, 30]" in html
    plots = re.findall(r'<img src="(report_files/[^"]+_vs_pag_scale\.png)"', html)
    assert plots and all((report.parent / p).is_file() for p in plots)
    galleries = _gallery_data(html)
    sweep = next(g for g in galleries if "toyB" in g["datasets"])
    assert len(sweep["cards"]) == SAMPLES_PER_RUN and sweep["words"] == ["cat", "dog"]
    card = next(c for c in sweep["cards"] if c["sample"] == "s0000")
    assert card["prompt"] == HOSTILE_PROMPT and len(card["variants"]) == 2  # both scales side by side
    assert [v["label"] for v in card["variants"]] == ["pag (pag_scale=1.0)", "pag (pag_scale=3.0)"]
    assert all((report.parent / v["image"]).is_file() and v["overlays"][0]["word"] == "dog" for v in card["variants"])
    daam = next(g for g in galleries if "smoke_prompts" in g["datasets"])
    assert daam["cards"] and daam["cards"][0]["variants"][0]["overlays"]
    assert (report_runs["daam_smoke"] / "sample_keys.json").is_file()
    # Provenance: the command that reproduces the daam_smoke run.
    assert "harness run experiment=daam_smoke" in html and "store.root=" in html
    assert "made from uncommitted changes" in html  # the segmentation run's sha ends in -dirty


def test_segmentation_beside_ground_truth_without_per_sample_rows(report):
    galleries = _gallery_data(report.read_text())
    segmentation = next(g for g in galleries if "toy_scenes" in g["datasets"])
    assert [c["sample"] for c in segmentation["cards"]] == ["img0", "img1", "img2"]
    card = segmentation["cards"][1]
    variant = card["variants"][0]
    assert variant["method"] == "emerdiff" and variant["metrics"] == {}
    from PIL import Image

    segmented = Image.open(report.parent / variant["segmentation"]).convert("RGB")
    truth = Image.open(report.parent / card["truth"]).convert("RGB")
    # Left half label 0, right half label 2 in both (the prediction's 1 + i = 2 for img1): same colours.
    assert segmented.getpixel((2, 8)) == truth.getpixel((2, 8)) and segmented.getpixel((13, 8)) == truth.getpixel((13, 8))
    assert segmented.getpixel((2, 8)) != segmented.getpixel((13, 8))


def test_user_strings_are_escaped_in_the_source(report):
    html = report.read_text()
    assert "window.__pwned" in html  # the prompt is there ...
    assert "<script>window.__pwned" not in html and "<img src=x" not in html  # ... never as markup
    assert "<b>test</b>" not in html and "&lt;b&gt;test&lt;/b&gt;" in html  # a definition, escaped


def test_cli_writes_the_page_and_says_where(report_runs, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(report_runs["daam_smoke"]), "--out", str(out)]) == 0
    assert f"Report: {out.resolve()}" in capsys.readouterr().out and out.is_file()
    assert main(["report", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "No rows.parquet found" in capsys.readouterr().err
    assert main(["report", str(report_runs["daam_smoke"]), "--out", str(tmp_path / "r.txt")]) == 2
    assert main(["report", str(report_runs["daam_smoke"]), "--out", str(out)]) == 0  # a rebuild replaces its images
    (tmp_path / "mine_files").mkdir()
    (tmp_path / "mine_files" / "keep.txt").write_text("not the report's")
    assert main(["report", str(report_runs["daam_smoke"]), "--out", str(tmp_path / "mine.html")]) == 2
    assert "was not written by harness report" in capsys.readouterr().err
    assert (tmp_path / "mine_files" / "keep.txt").is_file()


def test_a_missing_browser_skips_with_the_packages_named_but_fails_under_ci(monkeypatch):
    import harness.report.browser as browser

    monkeypatch.setattr(browser, "browser_paths", lambda: (None, None))
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="missing chromium, chromium-driver"):
        browser.require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and the browser checks cannot run"):
        browser.require_browser()
