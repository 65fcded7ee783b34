"""Rating tasks and their ratings (format: ``harness-rating-task/1``).

A task is a folder holding ``task.json`` and the PNGs it names::

    {"format": "harness-rating-task/1", "name": ..., "instructions": ...,
     "scale": [{"value": 1, "label": ...}, ..., {"value": 5, "label": ...}],
     "items": [{"item_id", "image", "heatmap", "word", "prompt", "group": {...}, "sample_id"}, ...]}

Ratings are appended to ``ratings.jsonl`` (in the task folder unless another path is given), one
JSON object per line ``{"rater", "item_id", "score": 1..5 or null (skipped), "time", "submission"}``;
the last line per (rater, item_id) counts. Each line is written with one ``write`` on a file
opened for appending and fsynced before the rater sees the next item, under a lock, so a killed
server loses at most the rating being written; a torn last line (a kill mid-write) is skipped
on reading, with a warning.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import DataError, HarnessError

log = logging.getLogger(__name__)

TASK_FORMAT = "harness-rating-task/1"
TASK_FILE = "task.json"
RATINGS_FILE = "ratings.jsonl"
SCORES = (1, 2, 3, 4, 5)
RATER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class RatingError(HarnessError):
    """A rating the server refuses (unknown item, score outside 1-5, duplicate submission, bad rater id)."""


@dataclass
class Item:
    item_id: str
    image: str
    heatmap: str
    word: str
    prompt: str
    group: dict[str, Any]
    sample_id: str


@dataclass
class Task:
    folder: Path
    name: str
    instructions: str
    scale: list[dict[str, Any]]
    items: list[Item]
    index: dict[str, int] = field(default_factory=dict)

    def item(self, item_id: str) -> Item:
        if item_id not in self.index:
            raise RatingError(f"Unknown item {item_id!r}: it is not in task {self.name!r}.")
        return self.items[self.index[item_id]]


def load_task(path: str | Path) -> Task:
    """Read and check a task folder (or its ``task.json``); one clear DataError when malformed."""
    path = Path(path).expanduser()
    folder = path.parent if path.name == TASK_FILE else path
    task_file = folder / TASK_FILE
    if not task_file.is_file():
        raise DataError(f"No rating task at {folder}: {task_file} does not exist (a task is a folder with task.json).")
    try:
        document = json.loads(task_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{task_file} is not valid JSON ({error}).") from None
    if not isinstance(document, dict) or document.get("format") != TASK_FORMAT:
        raise DataError(f"{task_file}: \"format\" must be {TASK_FORMAT!r}.")
    scale = document.get("scale")
    if not isinstance(scale, list) or [s.get("value") if isinstance(s, dict) else None for s in scale] != list(SCORES):
        raise DataError(f"{task_file}: \"scale\" must list the values 1..5 in order, each with a \"label\".")
    raw_items = document.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise DataError(f"{task_file}: \"items\" must be a non-empty list.")
    items, index = [], {}
    root = folder.resolve()
    for number, raw in enumerate(raw_items):
        if not isinstance(raw, dict):
            raise DataError(f"{task_file}: item {number} is not an object.")
        missing = [k for k in ("item_id", "image", "heatmap", "word") if not isinstance(raw.get(k), str) or not raw.get(k)]
        if missing:
            raise DataError(f"{task_file}: item {number} lacks {', '.join(missing)}.")
        item_id = raw["item_id"]
        if item_id in index:
            raise DataError(f"{task_file}: item_id {item_id!r} appears twice.")
        for key in ("image", "heatmap"):
            target = (folder / raw[key]).resolve()
            if root not in target.parents:
                raise DataError(f"{task_file}: item {item_id!r} {key} {raw[key]!r} lies outside the task folder.")
            if not target.is_file():
                raise DataError(f"{task_file}: item {item_id!r} {key} {target} does not exist.")
        group = raw.get("group") or {}
        if not isinstance(group, dict):
            raise DataError(f"{task_file}: item {item_id!r} \"group\" must be an object.")
        index[item_id] = len(items)
        items.append(Item(item_id, raw["image"], raw["heatmap"], raw["word"], str(raw.get("prompt", "")),
                          {str(k): str(v) for k, v in group.items()}, str(raw.get("sample_id", ""))))
    return Task(folder=folder, name=str(document.get("name", folder.name)), instructions=str(document.get("instructions", "")),
                scale=[{"value": int(s["value"]), "label": str(s.get("label", ""))} for s in scale], items=items, index=index)


def check_rater(rater: Any) -> str:
    rater = str(rater or "").strip()
    if not RATER_PATTERN.match(rater):
        raise RatingError("A rater id is required: 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit.")
    return rater


def check_score(score: Any) -> int | None:
    """1..5, or None (skip); RatingError otherwise (bools and floats like 2.5 included)."""
    if score is None or score == "" or score == "skip":
        return None
    if isinstance(score, bool):
        raise RatingError(f"Score {score!r} is not one of 1, 2, 3, 4, 5.")
    try:
        number = int(str(score).strip())
    except ValueError:
        raise RatingError(f"Score {str(score)[:20]!r} is not one of 1, 2, 3, 4, 5.") from None
    if number not in SCORES or str(number) != str(score).strip():
        raise RatingError(f"Score {str(score)[:20]!r} is not one of 1, 2, 3, 4, 5.")
    return number


def read_ratings(path: str | Path) -> list[dict[str, Any]]:
    """Every well-formed line of a ratings file, in order (a torn or foreign line is skipped with a warning)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or not isinstance(entry.get("rater"), str) or not isinstance(entry.get("item_id"), str):
                    raise ValueError("not a rating")
                if entry.get("score") is not None and entry["score"] not in SCORES:
                    raise ValueError("score outside 1..5")
            except (json.JSONDecodeError, ValueError) as error:
                log.warning("%s line %d skipped (%s).", path, number, error)
                continue
            lines.append(entry)
    return lines


def latest_ratings(entries: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(rater, item_id) -> the last line for it (the one that counts)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        latest[(entry["rater"], entry["item_id"])] = entry
    return latest


class RatingLog:
    """The append-only ratings file of one task, with the server-side checks."""

    def __init__(self, task: Task, path: str | Path | None = None) -> None:
        self.task = task
        self.path = Path(path) if path is not None else task.folder / RATINGS_FILE
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair_tail()
        except OSError as error:
            raise HarnessError(f"The ratings file {self.path} cannot be written ({error.strerror}).") from None
        entries = read_ratings(self.path)
        self.latest = latest_ratings(entries)
        #: form token -> the line it wrote (a token is accepted once)
        self.submissions = {e["submission"]: e for e in entries if isinstance(e.get("submission"), str)}

    def _repair_tail(self) -> None:
        # A kill mid-write can leave a last line without its newline: end it, so the next rating
        # starts a line of its own (the torn line itself is skipped by read_ratings).
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                ends_cleanly = handle.read(1) == b"\n"
            if not ends_cleanly:
                self._append_bytes(b"\n")

    def _append_bytes(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # several servers on one file: lines never interleave
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
        finally:
            os.close(fd)

    def record(self, rater: Any, item_id: Any, score: Any, submission: str | None = None) -> dict[str, Any]:
        """Check and store one rating; returns the stored line. RatingError when refused."""
        rater = check_rater(rater)
        item = self.task.item(str(item_id or ""))
        value = check_score(score)
        entry = {"rater": rater, "item_id": item.item_id, "score": value,
                 "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
        if submission:
            entry["submission"] = str(submission)[:64]
        with self._lock:
            if submission and entry["submission"] in self.submissions:
                first = self.submissions[entry["submission"]]
                shown = "skip" if first.get("score") is None else first.get("score")
                raise RatingError(f"Duplicate submission: this form was already sent (item {first['item_id']!r}, "
                                  f"answer {shown}, by {first['rater']!r}). Nothing was changed.")
            line = json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"
            self._append_bytes(line.encode("utf-8"))
            self.latest[(rater, item.item_id)] = entry
            if submission:
                self.submissions[entry["submission"]] = entry
        return entry

    def answered(self, rater: str) -> dict[str, int | None]:
        """item_id -> this rater's counting answer (None: skipped)."""
        return {item_id: entry["score"] for (who, item_id), entry in self.latest.items() if who == rater}

    def next_item(self, rater: str, after: str | None = None) -> Item | None:
        """The first item this rater has not answered (after ``after`` first, then from the start)."""
        answered = self.answered(rater)
        start = self.task.index[after] + 1 if after in self.task.index else 0
        order = self.task.items[start:] + self.task.items[:start]
        return next((item for item in order if item.item_id not in answered), None)
