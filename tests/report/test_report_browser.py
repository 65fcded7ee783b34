"""The report in headless Chromium: no console errors, the runs' figures in the table, filters,
sorting and paging in the gallery, the hostile prompt shown as text. Screenshots go to
results/screenshots/ (or $HARNESS_SCREENSHOTS)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from harness import REPO_ROOT
from harness.report.browser import (
    chromium,
    console_errors,
    load_milliseconds,
    require_browser,
    screenshot_dir,
    text_layout,
)
from harness.report.html import build_report

from .conftest import HOSTILE_PROMPT, SAMPLES_PER_RUN


@pytest.fixture(scope="module")
def driver():
    require_browser()
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def page(report_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser_report") / "report.html"
    build_report([str(report_runs["root"] / "runs")], out, store_root=report_runs["store"], cwd=report_runs["root"],
                 page_size=12)
    return out


def _select(driver, gallery, name, value):
    from selenium.webdriver.support.ui import Select

    Select(gallery.find_element("css selector", f"[data-filter={name}], [data-sort={name}]")).select_by_value(value)


def test_report_opens_without_console_errors_and_shows_the_figures(driver, page, report_runs):
    began = time.perf_counter()
    driver.get(page.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    assert time.perf_counter() - began < 30
    assert console_errors(driver) == []
    summary = pd.read_csv(report_runs["daam_smoke"] / "summary.csv").set_index("metric")
    tables = driver.find_elements("css selector", "table.results")
    text = "\n".join(t.text for t in tables)
    assert f"{summary.loc['mean_intensity', 'value']:.4g}" in text
    assert "35 [30, 40]" in text and "25 [20, 30]" in text
    header = driver.find_element("css selector", "table.results th.metric")
    assert header.get_attribute("title")  # the definition on hover
    assert driver.find_elements("css selector", "svg.ci rect.interval")  # CIs drawn as bars
    sweep_table = next(t for t in tables if "35 [30, 40]" in t.text)
    driver.execute_script("arguments[0].scrollIntoView()", sweep_table)
    sweep_table.screenshot(str(screenshot_dir() / "report_table.png"))
    driver.save_screenshot(str(screenshot_dir() / "report_top.png"))


def test_gallery_filters_sorts_and_pages(driver, page):
    driver.get(page.as_uri())
    gallery = next(g for g in driver.find_elements("css selector", "[data-gallery]") if "toyB" in g.text)
    status = gallery.find_element("css selector", ".status")
    assert status.text == f"{SAMPLES_PER_RUN} of {SAMPLES_PER_RUN} samples"
    assert len(gallery.find_elements("css selector", "article.card")) == 12  # one page only is built
    _select(driver, gallery, "word", "cat")
    cards = gallery.find_elements("css selector", "article.card")
    assert status.text == f"{SAMPLES_PER_RUN // 2} of {SAMPLES_PER_RUN} samples"
    assert all("cat" in c.text and "dog" not in c.text.split("\n")[2:] for c in cards)
    _select(driver, gallery, "dataset", "toyB")
    assert status.text == f"{len([i for i in range(SAMPLES_PER_RUN // 2, SAMPLES_PER_RUN) if i % 2])} of {SAMPLES_PER_RUN} samples"
    _select(driver, gallery, "word", "")
    _select(driver, gallery, "dataset", "")
    # Sort by miou, highest first: the card holding the largest value (i * 7 % 30 = 29 at i = 17,
    # + 1 at scale 3) comes first; lowest first: sample 0 (0 at scale 1).
    _select(driver, gallery, "metric", "miou")
    _select(driver, gallery, "order", "desc")
    first = gallery.find_element("css selector", "article.card")
    assert first.get_attribute("data-sample") == "s0017" and "miou = 1.967" in first.text
    assert "pag (pag_scale=1.0)" in first.text and "pag (pag_scale=3.0)" in first.text  # variants side by side
    _select(driver, gallery, "order", "asc")
    first = gallery.find_element("css selector", "article.card")
    assert first.get_attribute("data-sample") == "s0000" and "miou = 0.000" in first.text
    gallery.find_element("css selector", "[data-page=next]").click()
    assert "page 2 of 3" in gallery.find_element("css selector", ".page").text
    driver.execute_script("arguments[0].scrollIntoView()", gallery)
    time.sleep(0.3)  # lazy images of the page in view
    driver.save_screenshot(str(screenshot_dir() / "report_gallery.png"))
    assert console_errors(driver) == []


def test_hostile_prompt_renders_as_text(driver, page):
    driver.get(page.as_uri())
    gallery = next(g for g in driver.find_elements("css selector", "[data-gallery]") if "toyB" in g.text)
    card = gallery.find_element("css selector", "article.card[data-sample='s0000']")
    assert card.find_element("css selector", ".prompt").text == HOSTILE_PROMPT
    assert driver.execute_script("return window.__pwned === undefined")
    assert card.find_elements("css selector", ".prompt *") == []  # no element made from the prompt
    assert console_errors(driver) == []


def test_tablet_width_has_no_horizontal_overflow_in_the_gallery(driver, page):
    driver.set_window_size(768, 1024)
    try:
        driver.get(page.as_uri())
        widths = driver.execute_script(
            "var g = document.querySelector('.cards'); return [g.scrollWidth, g.clientWidth];")
        assert widths[0] <= widths[1] + 1
    finally:
        driver.set_window_size(1280, 900)


def _demo_report() -> Path:
    return Path(os.environ.get("HARNESS_DEMO_REPORT") or REPO_ROOT / "results" / "demo" / "report.html")


def _check_layout(driver, url: str, name: str) -> dict:
    """Open ``url`` at 1400 and 800 px: loaded (load event) within 3 s, no console error, no text
    overlapping other text, no text clipped; every gallery page visited. Returns the last layout."""
    layout = {}
    for width in (1400, 800):
        driver.set_window_size(width, 1000)
        began = time.perf_counter()
        driver.get(url)
        wall = time.perf_counter() - began
        assert load_milliseconds(driver) < 3000 and wall < 3.0, (width, load_milliseconds(driver), wall)
        assert console_errors(driver) == []
        pages = 0
        while True:
            layout = text_layout(driver)
            assert layout["overlaps"] == [] and layout["clipped"] == [], (width, pages, layout)
            following = [b for b in driver.find_elements("css selector", "[data-page=next]") if b.is_enabled()]
            if not following or pages >= 3:
                break
            for button in following:
                button.click()
            pages += 1
        driver.get(url)
        driver.save_screenshot(str(screenshot_dir() / f"{name}_{width}.png"))
    driver.set_window_size(1280, 900)
    return layout


def test_report_text_never_overlaps_at_1400_and_800_px(driver, page):
    layout = _check_layout(driver, page.as_uri(), "report_layout")
    assert layout["boxes"] > 100  # the check saw the page's text (table, captions, labels)


def test_demo_report_loads_fast_without_overlapping_text(driver):
    """The report of `make demo` (results/demo/report.html, or $HARNESS_DEMO_REPORT): run when it exists."""
    demo = _demo_report()
    if not demo.is_file():
        pytest.skip(f"{demo} does not exist: run `make demo` (or set HARNESS_DEMO_REPORT) to check it")
    _check_layout(driver, demo.as_uri(), "demo_report")


def test_the_layout_check_sees_overlapping_and_clipped_text(driver, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body style="font: 15px sans-serif">'
        '<div style="display: flex; width: 200px"><div style="flex: 0 0 60px; min-width: 60px">'
        '<b>kmeans_dataset_hungarian</b></div><div style="flex: 0 0 60px"><b>kmeans_oracle_hungarian</b></div></div>'
        '<div style="width: 50px; overflow: hidden; white-space: nowrap">a long predictor name</div>'
        '<details><summary>closed</summary><p style="margin-top: -40px">hidden text</p></details>'
        '</body></html>')
    driver.get(page.as_uri())
    layout = text_layout(driver)
    assert [pair[:2] for pair in layout["overlaps"]] == [["kmeans_dataset_hungarian", "kmeans_oracle_hungarian"]]
    assert layout["clipped"] == ["a long predictor name"]
