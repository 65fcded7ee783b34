"""Headless Chromium through Selenium, for the report and rating pages' browser checks.

Uses Debian's ``chromium`` and ``chromium-driver`` packages (``/usr/bin/chromium``,
``/usr/bin/chromedriver``); the driver's path is given to Selenium explicitly, so Selenium never
looks for (or downloads) a browser of its own. Every profile is a fresh temporary folder and the
browser is told not to reach the network on its own (updates, sync, background fetches).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

BROWSER_PACKAGES = "chromium and chromium-driver (Debian: apt-get install -y chromium chromium-driver) and selenium (pip)"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps"]


def browser_paths() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) executables, or None for each one missing."""
    browser = os.environ.get("HARNESS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("HARNESS_CHROMEDRIVER") or shutil.which("chromedriver")
    if driver is None and Path("/usr/bin/chromedriver").is_file():
        driver = "/usr/bin/chromedriver"
    return browser, driver


def missing_browser() -> str | None:
    """Why the browser checks cannot run here (None when they can)."""
    browser, driver = browser_paths()
    missing = []
    if browser is None:
        missing.append("chromium")
    if driver is None:
        missing.append("chromium-driver (chromedriver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        return f"missing {', '.join(missing)}; the browser checks need {BROWSER_PACKAGES}"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900):
    """A headless Chromium WebDriver with browser logging on; quits and removes its profile on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = browser_paths()
    if browser is None or driver_path is None:
        raise RuntimeError(missing_browser())
    profile = tempfile.mkdtemp(prefix="harness-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[dict]:
    """The browser console's SEVERE entries since the last call (errors, failed loads)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def require_browser():
    """For tests: skip with the packages named when the browser is missing; under ``CI=true`` fail instead."""
    import pytest

    why = missing_browser()
    if why is None:
        return
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true and the browser checks cannot run: {why}", pytrace=False)
    pytest.skip(why)


def screenshot_dir() -> Path:
    """Where the browser checks leave their screenshots (``HARNESS_SCREENSHOTS`` or results/screenshots/)."""
    from harness import REPO_ROOT

    folder = Path(os.environ.get("HARNESS_SCREENSHOTS") or REPO_ROOT / "results" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(driver, predicate, timeout: float = 20.0):
    """Wait until ``predicate(driver)`` is truthy (a page replaced mid-check counts as not yet)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d):
        try:
            return predicate(d)
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    return WebDriverWait(driver, timeout).until(check)


#: Every visible text fragment's boxes (one per line it wraps to), then pairs of fragments whose
#: boxes overlap by more than a pixel each way, and elements that clip their own text.
_LAYOUT_SCRIPT = """
var boxes = [], clipped = [], fragment = 0;
var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
var node;
while ((node = walker.nextNode())) {
  var text = node.textContent.trim();
  var parent = node.parentElement;
  if (!text || !parent || parent.closest('script, style, title, select, option, noscript')) { continue; }
  // Not drawn (a closed <details>, display: none, visibility: hidden): not laid over anything.
  if (parent.checkVisibility && !parent.checkVisibility({visibilityProperty: true, contentVisibilityAuto: true})) { continue; }
  var range = document.createRange();
  range.selectNodeContents(node);
  var rects = range.getClientRects();
  for (var i = 0; i < rects.length; i++) {
    var r = rects[i];
    if (r.width < 1 || r.height < 1) { continue; }
    boxes.push({f: fragment, l: r.left + scrollX, t: r.top + scrollY, r: r.right + scrollX, b: r.bottom + scrollY,
                text: text.slice(0, 60)});
  }
  var style = getComputedStyle(parent);
  if ((style.overflowX === 'hidden' || style.overflowX === 'clip' || style.textOverflow === 'ellipsis')
      && parent.scrollWidth > parent.clientWidth + 1) { clipped.push(text.slice(0, 60)); }
  fragment++;
}
boxes.sort(function (a, b) { return a.t - b.t; });
var overlaps = [];
for (var a = 0; a < boxes.length && overlaps.length < 50; a++) {
  for (var b = a + 1; b < boxes.length && boxes[b].t < boxes[a].b - 1; b++) {
    var p = boxes[a], q = boxes[b];
    if (p.f === q.f) { continue; }
    var w = Math.min(p.r, q.r) - Math.max(p.l, q.l), h = Math.min(p.b, q.b) - Math.max(p.t, q.t);
    if (w > 1 && h > 1) { overlaps.push([p.text, q.text, Math.round(p.l), Math.round(p.t)]); }
  }
}
return {fragments: fragment, boxes: boxes.length, overlaps: overlaps, clipped: clipped};
"""


def text_layout(driver) -> dict:
    """The page's text as laid out now: ``fragments`` and ``boxes`` counted, ``overlaps`` (pairs of text
    fragments whose boxes overlap, with the first one's position) and ``clipped`` (text its own element cuts off)."""
    return driver.execute_script(_LAYOUT_SCRIPT)


def load_milliseconds(driver) -> float:
    """The last navigation's time to the load event, by the browser's own Navigation Timing."""
    return float(driver.execute_script(
        "var n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;"))
