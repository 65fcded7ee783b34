"""The rating app in headless Chromium against a real `harness rate` server process (waitress on
127.0.0.1, a free port): rating by clicking through a personal link, kept across a killed and
restarted server; two raters in two browsers isolated; the forgery probes (a cross-site form from
another local port, missing/unknown/reused token, another rater's id, a 100 MB body, " 3") each
refused with nothing stored; gold items excluding a planted bad rater on the admin page.
Screenshots go to results/screenshots/."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from harness import REPO_ROOT
from harness.rating.access import ensure_access
from harness.rating.task import read_ratings
from harness.report.browser import (
    chromium,
    console_errors,
    free_port,
    require_browser,
    screenshot_dir,
    wait_for,
)


class Server:
    """`harness rate TASK --port P` in a subprocess; stopped by the test."""

    def __init__(self, task_dir: Path, port: int) -> None:
        self.task_dir, self.port = task_dir, port
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = subprocess.Popen([sys.executable, "-m", "harness.cli", "rate", str(self.task_dir),
                                         "--port", str(self.port)], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.process.stdout.read()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server did not answer within 60 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs (the crash case)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        if self.process is not None and self.process.stdout:
            self.process.stdout.close()
        self.process = None


@pytest.fixture
def driver():
    require_browser()
    with chromium() as browser:
        yield browser


@pytest.fixture
def second_driver():
    """Another browser with its own profile: another rater's session."""
    require_browser()
    with chromium() as browser:
        yield browser


@pytest.fixture
def access(task_dir):
    return ensure_access(task_dir, ["ann", "bob"])


@pytest.fixture
def server(task_dir, access):
    running = Server(task_dir, free_port())
    yield running
    running.kill()


def open_link(driver, server, access, rater):
    """Open the rater's personal link and press Begin (or Resume)."""
    driver.get(f"{server.url}/r/{access.raters[rater]}")
    wait_for(driver, lambda d: d.find_element("id", "welcome"))
    driver.find_element("id", "begin").click()
    return wait_for(driver, lambda d: d.find_element("id", "word"))


def error_text(driver) -> str:
    return wait_for(driver, lambda d: d.find_element("id", "error")).text


def stored(task_dir) -> list[tuple]:
    return [(e["rater"], e["item_id"], e["score"]) for e in read_ratings(task_dir / "ratings.jsonl")]


def test_rating_by_clicking_survives_a_killed_server(driver, server, task_dir, access):
    server.start()
    driver.get(server.url + "/rate")
    assert "personal link" in error_text(driver)  # no session: nothing to rate
    console_errors(driver)  # that 401 is expected; the log starts afresh
    open_link(driver, server, access, "ann")
    assert driver.find_element("id", "word").text == "dog"
    driver.save_screenshot(str(screenshot_dir() / "rating_page.png"))
    driver.find_element("id", "score-4").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "red")  # the next item
    assert stored(task_dir) == [("ann", "s0:dog:1", 4)]
    server.kill()
    server.port = free_port()
    server.start()
    driver.get(f"{server.url}/rate")  # the signed cookie outlives the server
    assert driver.find_element("id", "word").text == "red"  # resumes at the first unanswered item
    driver.find_element("id", "skip").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "cat")
    # The escaped prompt of the third item shows as text.
    assert driver.find_element("id", "prompt").text == "a cat <script>alert(1)</script> &amp; co"
    driver.find_element("id", "back").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "red")
    assert driver.find_element("css selector", "button[aria-pressed=true]").get_attribute("id") == "skip"
    driver.find_element("id", "back").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "dog")
    kept = driver.find_element("css selector", "button[aria-pressed=true]")
    assert kept.get_attribute("id") == "score-4"  # the rating from before the kill
    assert console_errors(driver) == []
    driver.set_window_size(768, 1024)  # a tablet
    driver.save_screenshot(str(screenshot_dir() / "rating_page_tablet.png"))
    overflow = driver.execute_script("return document.documentElement.scrollWidth > window.innerWidth")
    assert not overflow


def test_two_raters_in_two_sessions_see_and_change_only_their_own(driver, second_driver, server, task_dir, access):
    server.start()
    open_link(driver, server, access, "ann")
    driver.find_element("id", "score-5").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "red")
    driver.get(f"{server.url}/rate?item=s0:dog:1")
    ann_token = driver.find_element("name", "token").get_attribute("value")
    bob = second_driver
    open_link(bob, server, access, "bob")
    assert bob.find_element("id", "word").text == "dog"  # bob starts at the first item: ann's answer is not his
    assert bob.find_elements("css selector", "button[aria-pressed=true]") == []
    assert "rater bob" in bob.find_element("id", "progress").text
    bob.get(f"{server.url}/rate?rater=ann&item=s0:dog:1")
    assert "only your own answers" in error_text(bob) and "5" not in bob.find_element("tag name", "main").text
    # bob posts as ann (an extra rater field), then with ann's token: refused, ann's answer untouched.
    bob.get(f"{server.url}/rate?item=s0:dog:1")
    bob.execute_script("var i = document.createElement('input'); i.type = 'hidden'; i.name = 'rater';"
                       "i.value = 'ann'; document.getElementById('answer').appendChild(i);")
    bob.find_element("id", "score-1").click()
    assert "only your own answers" in error_text(bob)
    bob.get(f"{server.url}/rate?item=s0:dog:1")
    bob.execute_script("document.getElementsByName('token')[0].value = arguments[0];", ann_token)
    bob.find_element("id", "score-1").click()
    assert "issued for another answer" in error_text(bob)
    bob.get(f"{server.url}/rate?item=s0:dog:1")
    bob.find_element("id", "score-2").click()
    wait_for(bob, lambda d: d.find_element("id", "word").text == "red")
    driver.get(f"{server.url}/rate?item=s0:dog:1")
    assert driver.find_element("css selector", "button[aria-pressed=true]").get_attribute("id") == "score-5"
    assert stored(task_dir) == [("ann", "s0:dog:1", 5), ("bob", "s0:dog:1", 2)]
    assert console_errors(driver) == []


class _CrossSitePage(http.server.BaseHTTPRequestHandler):
    """Another local site (127.0.0.1, another port) whose page posts a rating form to the study on load."""

    form = ""

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        body = self.form.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_cross_site_form_is_refused_even_with_the_raters_cookie_and_a_valid_token(driver, server, task_dir, access):
    server.start()
    open_link(driver, server, access, "ann")  # ann is signed in: her browser holds the cookie
    token = driver.find_element("name", "token").get_attribute("value")
    _CrossSitePage.form = (
        f'<!DOCTYPE html><form id="f" method="post" action="{server.url}/rate">'
        f'<input name="item_id" value="s0:dog:1"><input name="token" value="{token}">'
        '<input name="score" value="1"></form><script>document.getElementById("f").submit();</script>')
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CrossSitePage)  # daemon threads: an idle
    # connection Chromium keeps open cannot hold up shutdown
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        driver.get(f"http://127.0.0.1:{other.server_address[1]}/")
        assert "not sent from a page of this study" in error_text(driver)
    finally:
        other.shutdown()
        other.server_close()
    assert stored(task_dir) == []
    # The page cannot be framed by another site either.
    headers = urllib.request.urlopen(server.url + "/").headers
    assert headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_token_rater_size_and_score_probes_are_refused(driver, server, task_dir, access):
    server.start()
    open_link(driver, server, access, "ann")
    probes = [
        ("document.getElementsByName('token')[0].remove();", "score-3", "carries no token"),
        ("document.getElementsByName('token')[0].value = 'made-up';", "score-3", "not issued by this server"),
        ("document.getElementById('score-3').value = ' 3';", "score-3", "is not one of 1, 2, 3, 4, 5"),
        ("document.getElementById('score-3').removeAttribute('name');", "score-3", "No answer was sent"),
    ]
    for script, button, message in probes:
        driver.get(f"{server.url}/rate?item=s0:dog:1")
        driver.execute_script(script)
        driver.find_element("id", button).click()
        assert message in error_text(driver), message
    assert stored(task_dir) == []
    # A used token sent again: refused.
    driver.get(f"{server.url}/rate?item=s0:dog:1")
    used = driver.find_element("name", "token").get_attribute("value")
    driver.find_element("id", "score-3").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "red")
    driver.get(f"{server.url}/rate?item=s0:dog:1")
    driver.execute_script("document.getElementsByName('token')[0].value = arguments[0];", used)
    driver.find_element("id", "score-4").click()
    assert "already sent" in error_text(driver)
    driver.save_screenshot(str(screenshot_dir() / "rating_error.png"))
    # 100 MB from the study's own page (same origin, valid cookie and token): refused before it is read.
    driver.get(f"{server.url}/rate?item=s0:red:4")
    status = driver.execute_async_script("""
        var done = arguments[arguments.length - 1];
        var form = new URLSearchParams();
        form.set('item_id', 's0:red:4');
        form.set('token', document.getElementsByName('token')[0].value);
        form.set('score', '3');
        form.set('pad', 'x'.repeat(100 * 1024 * 1024));
        fetch('/rate', {method: 'POST', body: form, redirect: 'manual'})
          .then(function (r) { done(r.status); }, function (e) { done('network error: ' + e); });
    """)
    # Chromium sees the connection closed mid-upload ("Failed to fetch"); the status itself, read
    # without a browser: the declared 100 MB is answered 413 before the body is read.
    assert status == 413 or str(status).startswith("network error"), status
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(b"POST /rate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: 104857600\r\n\r\n" + b"x" * 65536)
        assert raw.recv(200).split(b"\r\n")[0].endswith(b"413 Request Entity Too Large")
    assert stored(task_dir) == [("ann", "s0:dog:1", 3)]


def test_gold_items_exclude_a_planted_bad_rater(driver, second_driver, tmp_path):
    from .conftest import GOLD, write_study

    folder = write_study(tmp_path / "study", max_gold_failures=1)
    access = ensure_access(folder, ["ann", "zed"])
    server = Server(folder, free_port()).start()
    try:
        for browser, rater, good in ((driver, "ann", True), (second_driver, "zed", False)):
            open_link(browser, server, access, rater)
            for item_id, accept in GOLD:
                browser.get(f"{server.url}/rate?item={item_id}")
                score = accept[-1] if good else (1 if 5 in accept else 5)
                browser.find_element("id", f"score-{score}").click()
                wait_for(browser, lambda d, i=item_id: "item=" not in d.current_url)
            browser.get(f"{server.url}/rate?item=s0:w0:1")
            browser.find_element("id", "score-3").click()
            wait_for(browser, lambda d: d.find_element("id", "word").text == "w1")
        driver.get(f"{server.url}/admin/{access.admin}")
        rows = {row.get_attribute("data-rater"): row.find_element("css selector", ".status").text
                for row in driver.find_elements("css selector", "#progress-table tbody tr")}
        assert rows == {"ann": "kept", "zed": "excluded"}
        driver.save_screenshot(str(screenshot_dir() / "rating_admin.png"))
        # A rater's session does not open the admin page; the admin secret is needed.
        second_driver.get(f"{server.url}/admin/{access.raters['zed']}")
        assert second_driver.find_elements("id", "progress-table") == []
    finally:
        server.kill()
    from harness.rating.results import rating_rows

    rows = rating_rows(folder)
    assert rows.set_index("metric").loc["excluded_raters", "value"] == 1
