"""Rating tasks and the append-only ratings file: validation, last-answer-counts, crash tolerance."""

from __future__ import annotations

import json

import pytest

from harness.errors import DataError
from harness.rating.task import RatingError, RatingLog, load_task, read_ratings


def test_load_task_reads_items_and_scale(task_dir):
    task = load_task(task_dir)
    assert [i.item_id for i in task.items] == ["s0:dog:1", "s0:red:4", "s1:cat:1", "s1:runs:2"]
    assert task.items[0].group == {"pos": "NOUN"}
    assert [s["value"] for s in task.scale] == [1, 2, 3, 4, 5]
    assert load_task(task_dir / "task.json").name == task.name


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="other/1"), "format"),
    (lambda d: d.update(scale=d["scale"][:4]), "scale"),
    (lambda d: d["items"].append(dict(d["items"][0])), "appears twice"),
    (lambda d: d["items"][0].update(image="../outside.png"), "outside the task folder"),
    (lambda d: d["items"][0].update(heatmap="maps/missing.png"), "does not exist"),
    (lambda d: d["items"][0].pop("word"), "lacks word"),
    (lambda d: d["items"][0].update(gold={"accept": [4, 5]}), "need an exclusion rule"),
    (lambda d: d.update(exclusion={"max_gold_failures": 0}), "no item is gold"),
    (lambda d: (d["items"][0].update(gold={"accept": [6]}), d.update(exclusion={"max_gold_failures": 0})), "gold"),
    (lambda d: (d["items"][0].update(gold={"accept": [5]}), d.update(exclusion={"max_gold_failures": -1})), "N >= 0"),
    (lambda d: ([i.update(gold={"accept": [5]}) for i in d["items"]], d.update(exclusion={"max_gold_failures": 0})),
     "every item is gold"),
])
def test_malformed_task_is_one_clear_error(task_dir, edit, message):
    document = json.loads((task_dir / "task.json").read_text())
    edit(document)
    (task_dir / "task.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match=message):
        load_task(task_dir)


def test_missing_task_names_the_file(tmp_path):
    with pytest.raises(DataError, match="task.json does not exist"):
        load_task(tmp_path / "nothing")


def test_ratings_are_appended_and_the_last_answer_counts(task_dir):
    log = RatingLog(load_task(task_dir))
    log.record("ann", "s0:dog:1", "4", submission="t1")
    log.record("ann", "s0:dog:1", "2", submission="t2")  # went back and changed it
    log.record("ann", "s0:red:4", "skip", submission="t3")
    lines = (task_dir / "ratings.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["rater"] == "ann" for line in lines)
    assert json.loads(lines[0])["score"] == 4 and json.loads(lines[2])["score"] is None
    assert json.loads(lines[0])["time"].endswith("Z")
    assert log.answered("ann") == {"s0:dog:1": 2, "s0:red:4": None}
    # A new server over the same file sees the same state (resume).
    again = RatingLog(load_task(task_dir))
    assert again.answered("ann") == {"s0:dog:1": 2, "s0:red:4": None}
    assert again.next_item("ann").item_id == "s1:cat:1"
    assert again.next_item("bob").item_id == "s0:dog:1"


@pytest.mark.parametrize("rater, item, score, message", [
    ("ann", "nope", "3", "Unknown item"),
    ("ann", "s0:dog:1", "6", "not one of 1, 2, 3, 4, 5"),
    ("ann", "s0:dog:1", "0", "not one of"),
    ("ann", "s0:dog:1", "2.5", "not one of"),
    ("ann", "s0:dog:1", "03", "not one of"),
    ("ann", "s0:dog:1", " 3", "not one of"),
    ("ann", "s0:dog:1", "3\n", "not one of"),
    ("ann", "s0:dog:1", True, "not one of"),
    ("ann", "s0:dog:1", None, "No answer was sent"),
    ("ann", "s0:dog:1", "", "No answer was sent"),
    ("", "s0:dog:1", "3", "rater id is required"),
    ("a b<script>", "s0:dog:1", "3", "rater id is required"),
])
def test_bad_ratings_are_refused_and_not_stored(task_dir, rater, item, score, message):
    log = RatingLog(load_task(task_dir))
    with pytest.raises(RatingError, match=message):
        log.record(rater, item, score, submission="x")
    assert read_ratings(task_dir / "ratings.jsonl") == []


def test_a_form_submitted_twice_is_refused(task_dir):
    log = RatingLog(load_task(task_dir))
    log.record("ann", "s0:dog:1", "3", submission="same")
    with pytest.raises(RatingError, match="Duplicate submission") as refused:
        log.record("bob", "s0:dog:1", "5", submission="same")
    assert "ann" not in str(refused.value) and "3" not in str(refused.value)  # nothing of the first answer
    # Also after a restart (the tokens are read back from the file).
    with pytest.raises(RatingError, match="Duplicate submission"):
        RatingLog(load_task(task_dir)).record("ann", "s0:dog:1", "5", submission="same")
    assert [e["score"] for e in read_ratings(task_dir / "ratings.jsonl")] == [3]


def test_a_torn_last_line_is_skipped_and_the_next_rating_starts_a_new_line(task_dir):
    log = RatingLog(load_task(task_dir))
    log.record("ann", "s0:dog:1", "3", submission="a")
    with open(task_dir / "ratings.jsonl", "a") as handle:  # a kill in the middle of a write
        handle.write('{"rater": "ann", "item_id": "s0:red:4", "sco')
    log = RatingLog(load_task(task_dir))
    assert log.answered("ann") == {"s0:dog:1": 3}
    log.record("ann", "s0:red:4", "5", submission="b")
    entries = read_ratings(task_dir / "ratings.jsonl")
    assert [(e["item_id"], e["score"]) for e in entries] == [("s0:dog:1", 3), ("s0:red:4", 5)]
