"""harness report without a browser: the page's parts, escaping in the HTML source, CI bar geometry."""

from __future__ import annotations

import json
import re

import numpy as np
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


def _aggregate(method, metric, value, low=None, high=None, kind="quality", **hp):
    return {"experiment": "e", "model": "m", "dataset": "d", "split": "test", "method": method, "seed": 0,
            "level": "aggregate", "sample_id": None, "item": None, "metric": metric, "value": value, "ci_low": low,
            "ci_high": high, "n": 10, "kind": kind, "definition": f"{metric} def", "source": "harness", **hp}


def test_threshold_family_is_one_curve_and_counts_and_costs_get_no_bars():
    rows = pd.DataFrame([
        *[_aggregate("daam", f"miou@{t}", v) for t, v in [(0.2, 0.3), (0.4, 0.5), (0.6, 0.4)]],
        *[_aggregate("oracle", f"miou@{t}", v) for t, v in [(0.2, 0.6), (0.4, 0.7), (0.6, 0.65)]],
        _aggregate("daam", "fid", 30.0, 28.0, 32.0), _aggregate("oracle", "fid", 20.0, 19.0, 21.0),
        _aggregate("daam", "absent_nouns", 3.0), _aggregate("oracle", "absent_nouns", 5.0),
        _aggregate("daam", "seconds", 2.5, kind="cost"), _aggregate("oracle", "seconds", 4.5, kind="cost"),
    ])
    model = table_model(rows)
    assert model["metrics"] == ["absent_nouns", "fid", "miou@τ", "seconds"]
    daam = dict(zip(model["metrics"], model["rows"][0]["cells"]))
    assert daam["miou@τ"]["text"] == "max 0.5 @0.4"
    assert [p["text"] for p in daam["miou@τ"]["points"]] == ["0.3", "0.5", "0.4"]
    # One y scale for the column (0.3 .. 0.7): daam's best (0.5) sits halfway up the 22-unit plot.
    assert [d["y"] for d in daam["miou@τ"]["curve"]["dots"]] == [26.0, 15.0, 20.5]
    assert daam["fid"]["bar"] is not None
    assert daam["absent_nouns"]["bar"] is None and daam["seconds"]["bar"] is None
    note = next(n for n in model["footnotes"] if n["metric"] == "miou@τ")
    assert note["family"] and "0.2, 0.4, 0.6" in note["definition"]


def test_sweep_plots_only_where_a_method_varies_and_legends_name_no_nan(tmp_path):
    from harness.report.html import sweep_plots
    from harness.report.plots import line_label

    comparison = pd.DataFrame([_aggregate("daam", "miou", 0.4, 0.3, 0.5), _aggregate("oracle", "miou", 0.6, 0.5, 0.7),
                               _aggregate("daam", "absent_nouns", 3.0), _aggregate("oracle", "absent_nouns", 5.0)])
    assert sweep_plots("e", comparison, [], tmp_path, "p") == []  # a plain comparison: the table says it all
    sweep = pd.DataFrame([
        *[_aggregate("pag", "fid", 30 - s, 29 - s, 31 - s, **{"hp.pag_scale": s}) for s in (1.0, 2.0, 3.0)],
        *[_aggregate("pag", "count", 4.0, **{"hp.pag_scale": s}) for s in (1.0, 2.0, 3.0)],
        _aggregate("cfg", "fid", 25.0, 24.0, 26.0, **{"hp.pag_scale": float("nan")}),
    ])
    plots = sweep_plots("e", sweep, [], tmp_path, "p")
    assert [(p["metric"], p["x"]) for p in plots] == [("fid", "pag_scale")]  # no plot of the count
    assert (tmp_path / plots[0]["src"].split("/", 1)[1]).is_file()
    assert line_label(["method", "hp.layers"], ("cfg", float("nan"))) == "method=cfg"
    assert line_label(["method", "hp.layers"], ("pag", "mid")) == "method=pag, layers=mid"


def test_truth_colours_are_the_same_word_on_every_card_and_named_in_the_legend():
    from harness.report.html import word_masks_image

    colours: dict[str, int] = {}
    left, right = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    left[:, :2], right[:, 2:] = True, True
    first_image, first = word_masks_image({"dog": left, "couch": right}, colours)
    second_image, second = word_masks_image({"couch": left, "dog": right}, colours)
    assert {e["name"]: e["colour"] for e in first} == {e["name"]: e["colour"] for e in second}
    assert len({e["colour"] for e in first}) == 2
    dog = next(e["colour"] for e in first if e["name"] == "dog")
    def shown(image, x):
        return "#" + "".join(f"{c:02x}" for c in image.getpixel((x, 0)))

    assert shown(first_image, 0) == dog == shown(second_image, 3)
