"""Rating tasks and their ratings (format: ``harness-rating-task/1``).

A task is a folder holding ``task.json`` and the PNGs it names::

    {"format": "harness-rating-task/1", "name": ..., "instructions": ...,
     "scale": [{"value": 1, "label": ...}, ..., {"value": 5, "label": ...}],
     "items": [{"item_id", "image", "heatmap", "word", "prompt", "group": {...}, "sample_id",
                "gold": {"accept": [4, 5]} (optional: an attention check)}, ...],
     "exclusion": {"max_gold_failures": 0}}   (required when any item is gold)

Gold items have a known answer: a rater whose answer to a gold item (a skip included) is not in
its ``accept`` list fails it; the task's exclusion rule, written before the study, excludes a
rater who fails more than ``max_gold_failures`` gold items. Gold items are checks, never study
data: they count in no mean opinion score and no agreement figure. Every rating line carries the
task's *design hash* (gold answers and exclusion rule); the analysis refuses ratings given
under another design, so the rule cannot be changed once the study has begun.

Ratings are appended to ``ratings.jsonl`` (in the task folder unless another path is given), one
JSON object per line ``{"rater", "item_id", "score": 1..5 or null (skipped), "time", "submission",
"design"}``;
the last line per (rater, item_id) counts. Each line is written with one ``write`` on a file
opened for appending and fsynced before the rater sees the next item, under a lock, so a killed
server loses at most the rating being written; a torn last line (a kill mid-write) is skipped
on reading, with a warning.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
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
    #: The accepted answers of a gold item (an attention check); None for a study item.
    gold: tuple[int, ...] | None = None


@dataclass
class Task:
    folder: Path
    name: str
    instructions: str
    scale: list[dict[str, Any]]
    items: list[Item]
    index: dict[str, int] = field(default_factory=dict)
    #: The exclusion rule declared in the task (``{"max_gold_failures": N}``), or {} without gold items.
    exclusion: dict[str, int] = field(default_factory=dict)

    @property
    def design_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the study design: the gold answers and the exclusion rule."""
        design = {"gold": {item.item_id: list(item.gold) for item in self.items if item.gold is not None},
                  "exclusion": self.exclusion}
        return hashlib.sha256(json.dumps(design, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def gold_items(self) -> list[Item]:
        return [item for item in self.items if item.gold is not None]

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
        gold = None
        if "gold" in raw:
            accept = raw["gold"].get("accept") if isinstance(raw["gold"], dict) else None
            if (not isinstance(accept, list) or not accept
                    or not all(isinstance(a, int) and not isinstance(a, bool) and a in SCORES for a in accept)):
                raise DataError(f"{task_file}: item {item_id!r} \"gold\" must be {{\"accept\": [scores 1-5]}}.")
            gold = tuple(sorted(set(accept)))
        index[item_id] = len(items)
        items.append(Item(item_id, raw["image"], raw["heatmap"], raw["word"], str(raw.get("prompt", "")),
                          {str(k): str(v) for k, v in group.items()}, str(raw.get("sample_id", "")), gold))
    exclusion = _exclusion_rule(document.get("exclusion"), any(item.gold is not None for item in items), task_file)
    if items and all(item.gold is not None for item in items):
        raise DataError(f"{task_file}: every item is gold; a study needs items without a known answer.")
    return Task(folder=folder, name=str(document.get("name", folder.name)), instructions=str(document.get("instructions", "")),
                scale=[{"value": int(s["value"]), "label": str(s.get("label", ""))} for s in scale], items=items, index=index,
                exclusion=exclusion)


def _exclusion_rule(rule: Any, has_gold: bool, task_file: Path) -> dict[str, int]:
    if rule is None:
        if has_gold:
            raise DataError(f"{task_file}: gold items need an exclusion rule written before the study, "
                            "e.g. \"exclusion\": {\"max_gold_failures\": 0}.")
        return {}
    if not has_gold:
        raise DataError(f"{task_file}: \"exclusion\" is declared but no item is gold (\"gold\": {{\"accept\": [...]}}).")
    failures = rule.get("max_gold_failures") if isinstance(rule, dict) else None
    if (not isinstance(rule, dict) or set(rule) != {"max_gold_failures"} or not isinstance(failures, int)
            or isinstance(failures, bool) or failures < 0):
        raise DataError(f"{task_file}: \"exclusion\" must be {{\"max_gold_failures\": N}} with N >= 0.")
    return {"max_gold_failures": failures}


def gold_failures(task: Task, latest: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, int]]:
    """rater -> {"answered": gold items answered, "failed": those answered outside ``accept`` (a skip fails)}."""
    result: dict[str, dict[str, int]] = {}
    for (rater, item_id), entry in latest.items():
        counts = result.setdefault(rater, {"answered": 0, "failed": 0})
        if item_id not in task.index:
            continue
        item = task.items[task.index[item_id]]
        if item.gold is None:
            continue
        counts["answered"] += 1
        if entry.get("score") not in item.gold:
            counts["failed"] += 1
    return result


def excluded_raters(task: Task, latest: dict[tuple[str, str], dict[str, Any]]) -> set[str]:
    """The raters the task's exclusion rule excludes (none without gold items)."""
    if not task.exclusion:
        return set()
    limit = task.exclusion["max_gold_failures"]
    return {rater for rater, counts in gold_failures(task, latest).items() if counts["failed"] > limit}


def check_rater(rater: Any) -> str:
    rater = str(rater or "").strip()
    if not RATER_PATTERN.match(rater):
        raise RatingError("A rater id is required: 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit.")
    return rater


SKIP = "skip"
_SCORE_TEXT = {str(value): value for value in SCORES}


def check_score(score: Any) -> int | None:
    """Exactly ``"1"``..``"5"`` (or the int) -> the score; exactly ``"skip"`` -> None (an explicit skip).

    Anything else is refused with RatingError: a missing or empty answer (never read as a skip),
    padding (``" 3"``), ``"03"``, ``"2.5"``, bools.
    """
    if score is None or score == "":
        raise RatingError("No answer was sent: choose a score, or press skip.")
    if isinstance(score, int) and not isinstance(score, bool) and score in SCORES:
        return score
    if isinstance(score, str):
        if score == SKIP:
            return None
        if score in _SCORE_TEXT:
            return _SCORE_TEXT[score]
    raise RatingError(f"Score {str(score)[:20]!r} is not one of 1, 2, 3, 4, 5 (or skip).")


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
        entry["design"] = self.task.design_hash
        if submission:
            entry["submission"] = str(submission)[:64]
        with self._lock:
            if submission and entry["submission"] in self.submissions:
                # Says nothing of the first submission: it may be someone else's.
                raise RatingError("Duplicate submission: this form was already sent once. Nothing was changed; "
                                  "open the item again to change your answer.")
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
