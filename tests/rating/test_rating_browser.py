"""The rating app in headless Chromium against a real `harness rate` server process (127.0.0.1,
a free port): a rating by clicking, kept across a killed and restarted server, a bad submission
refused with a visible message. Screenshots go to results/screenshots/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.rating.task import read_ratings
from harness.report.browser import (
    chromium,
    console_errors,
    free_port,
    require_browser,
    screenshot_dir,
    wait_for,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


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
def server(task_dir):
    running = Server(task_dir, free_port())
    yield running
    running.kill()


def test_rating_by_clicking_survives_a_killed_server(driver, server, task_dir):
    server.start()
    driver.get(server.url + "/")
    driver.find_element("id", "rater").send_keys("ann")
    driver.find_element("id", "begin").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "dog")
    driver.save_screenshot(str(screenshot_dir() / "rating_page.png"))
    driver.find_element("id", "score-4").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "red")  # the next item
    assert [(e["rater"], e["item_id"], e["score"]) for e in read_ratings(task_dir / "ratings.jsonl")] == [
        ("ann", "s0:dog:1", 4)]
    server.kill()
    server.port = free_port()
    server.start()
    driver.get(f"{server.url}/rate?rater=ann")
    assert driver.find_element("id", "word").text == "red"  # resumes at the first unanswered item
    driver.find_element("id", "skip").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "cat")
    # The escaped prompt of the third item shows as text.
    assert driver.find_element("id", "prompt").text == "a cat <script>alert(1)</script> &amp; co"
    driver.find_element("id", "back").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "red")
    driver.find_element("id", "back").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "dog")
    kept = driver.find_element("css selector", "button[aria-pressed=true]")
    assert kept.get_attribute("id") == "score-4"  # the rating from before the kill
    assert console_errors(driver) == []
    driver.set_window_size(768, 1024)  # a tablet
    driver.save_screenshot(str(screenshot_dir() / "rating_page_tablet.png"))
    overflow = driver.execute_script("return document.documentElement.scrollWidth > window.innerWidth")
    assert not overflow


def test_bad_submission_shows_a_visible_error(driver, server, task_dir):
    server.start()
    driver.get(f"{server.url}/rate?rater=bob")
    # A tampered form: score 7.
    driver.execute_script("document.getElementById('score-5').value = '7';")
    driver.find_element("id", "score-5").click()
    error = wait_for(driver, lambda d: d.find_element("id", "error"))
    assert error.is_displayed() and "is not one of 1, 2, 3, 4, 5" in error.text
    driver.save_screenshot(str(screenshot_dir() / "rating_error.png"))
    # The same form sent twice (as a double click or a resent form does): refused, nothing changed.
    driver.get(f"{server.url}/rate?rater=bob&item=s0:dog:1")
    token = driver.find_element("name", "token").get_attribute("value")
    driver.find_element("id", "score-3").click()
    wait_for(driver, lambda d: d.find_element("id", "word").text == "red")
    driver.get(f"{server.url}/rate?rater=bob&item=s0:dog:1")
    driver.execute_script("document.getElementsByName('token')[0].value = arguments[0];", token)
    driver.find_element("id", "score-5").click()
    error = wait_for(driver, lambda d: d.find_element("id", "error"))
    assert error.is_displayed() and "Duplicate submission" in error.text and "answer 3" in error.text
    assert [(e["item_id"], e["score"]) for e in read_ratings(task_dir / "ratings.jsonl")] == [("s0:dog:1", 3)]
    # An unknown rater id is refused on the start page.
    driver.get(f"{server.url}/rate?rater=")
    assert "rater id is required" in driver.find_element("id", "error").text
