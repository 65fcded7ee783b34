"""Ratings as result rows: mean opinion score per group with bootstrap CIs, Krippendorff's alpha."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.rating.results import ordinal_alpha, rating_rows
from harness.rating.task import RatingLog, load_task


def _rate(task_dir, answers):
    log = RatingLog(load_task(task_dir))
    for number, (rater, item, score) in enumerate(answers):
        log.record(rater, item, score, submission=f"t{number}")


def test_ordinal_alpha_matches_a_hand_computed_case():
    # Raters A = [1, 2, 3], B = [1, 3, 3]. Coincidences: o11 = 2, o23 = o32 = 1, o33 = 2; n1 = 2, n2 = 1,
    # n3 = 3, n = 6. Ordinal distances: d12 = (3 - 1.5)^2 = 2.25, d13 = (6 - 2.5)^2 = 12.25, d23 = (4 - 2)^2 = 4.
    # alpha = 1 - (n - 1) * sum o d / sum n_c n_k d = 1 - 5 * 8 / (2 * (2*1*2.25 + 2*3*12.25 + 1*3*4)) = 7/9.
    assert ordinal_alpha(np.array([[1, 2, 3], [1, 3, 3]], dtype=float)) == pytest.approx(7 / 9)
    # Perfect agreement is 1; a missing value (nan) leaves its item out of the pairs.
    assert ordinal_alpha(np.array([[1, 2, 3, np.nan], [1, 2, 3, 5]], dtype=float)) == pytest.approx(1.0)


def test_rows_hold_mos_per_group_and_alpha(task_dir):
    _rate(task_dir, [
        ("ann", "s0:dog:1", "4"), ("bob", "s0:dog:1", "2"),      # item mean 3
        ("ann", "s1:cat:1", "5"), ("bob", "s1:cat:1", "skip"),   # item mean 5 (the skip is left out)
        ("ann", "s0:red:4", "1"), ("ann", "s0:red:4", "2"),      # the last answer counts: 2
        ("bob", "s0:red:4", "2"),                                # item mean 2
        # s1:runs:2 (VERB) unanswered: no VERB row
    ])
    rows = rating_rows(task_dir)
    mos = rows[rows["metric"] == "mean_opinion_score"].set_index("item")
    assert mos.loc["(all)", "value"] == pytest.approx((3 + 5 + 2) / 3) and mos.loc["(all)", "n"] == 3
    assert mos.loc["NOUN", "value"] == pytest.approx(4.0) and mos.loc["NOUN", "n"] == 2
    assert mos.loc["ADJ", "value"] == pytest.approx(2.0) and pd.isna(mos.loc["ADJ", "ci_low"])  # one item: no CI
    assert "VERB" not in mos.index
    assert mos.loc["NOUN", "hp.pos"] == "NOUN"
    low, high = mos.loc["(all)", "ci_low"], mos.loc["(all)", "ci_high"]
    assert 2 <= low < mos.loc["(all)", "value"] < high <= 5
    by_metric = rows.set_index("metric")
    assert by_metric.loc["raters", "value"] == 2 and by_metric.loc["ratings", "value"] == 5
    # Alpha over the items both rated: dog (4, 2) and red (2, 2).
    expected = ordinal_alpha(np.array([[4, 2], [2, 2]], dtype=float))
    assert by_metric.loc["krippendorff_alpha", "value"] == pytest.approx(expected)
    assert by_metric.loc["krippendorff_alpha", "n"] == 2


def test_one_rater_has_no_alpha(task_dir):
    _rate(task_dir, [("ann", "s0:dog:1", "3")])
    assert "krippendorff_alpha" not in set(rating_rows(task_dir)["metric"])


def test_harness_table_reads_a_task_folder(task_dir, capsys):
    from harness.cli import main

    _rate(task_dir, [("ann", "s0:dog:1", "4"), ("ann", "s1:cat:1", "2"), ("bob", "s0:dog:1", "4")])
    assert main(["table", str(task_dir)]) == 0
    out = capsys.readouterr().out
    assert "mean_opinion_score" in out and "NOUN" in out and "human_rating" in out
    line = next(line for line in out.splitlines() if "| NOUN" in line)
    assert "3 [2, 4]" in line  # mean of items 4 and 2, bootstrap interval over the two items


def test_simulated_study_excludes_the_planted_bad_rater_by_the_gold_rule(tmp_path):
    from harness.errors import DataError
    from harness.rating.results import rater_table, ratings_table

    from .conftest import GOLD, STUDY_ITEMS, simulated_answers, write_study

    folder = write_study(tmp_path / "study", max_gold_failures=1)
    answers = simulated_answers()
    _rate(folder, [(rater, item, score) for rater, mine in answers.items() for item, score in mine.items()])
    raters = rater_table(folder).set_index("rater")
    assert raters["excluded"].to_dict() == {"ann": False, "bob": False, "cat": False, "zed": True}
    assert raters.loc["zed", "gold_failed"] == len(GOLD) and raters.loc["ann", "gold_failed"] == 0
    rows = rating_rows(folder)
    by = {(r["metric"], r["item"], r["hp.raters"]): r for _, r in rows.iterrows()}
    assert by[("excluded_raters", "(all)", "all")].value == 1
    # Independent reference: the study items' matrices built here, gold items left out.
    study_ids = [f"s{i}:w{i}:1" for i in range(STUDY_ITEMS)]
    everyone = np.array([[float(answers[r][i]) for i in study_ids] for r in ["ann", "bob", "cat", "zed"]])
    kept = everyone[:3]
    for subset, matrix in (("all", everyone), ("kept", kept)):
        mos = by[("mean_opinion_score", "(all)", subset)]
        assert mos.value == pytest.approx(matrix.mean(axis=0).mean()) and mos.n == STUDY_ITEMS
        nouns = by[("mean_opinion_score", "NOUN", subset)]
        assert nouns.value == pytest.approx(matrix[:, 0::2].mean(axis=0).mean())
        alpha = by[("krippendorff_alpha", "(all)", subset)]
        assert alpha.value == pytest.approx(ordinal_alpha(matrix)) and alpha.n == STUDY_ITEMS
        assert alpha.ci_low <= alpha.value <= alpha.ci_high
    assert by[("krippendorff_alpha", "(all)", "kept")].value > 0.8 > by[("krippendorff_alpha", "(all)", "all")].value
    assert ("mean_opinion_score", "GOLD", "all") not in by  # gold items are checks, not data
    table = ratings_table(folder)
    assert len(table) == 4 * (STUDY_ITEMS + len(GOLD))
    assert table[table["gold"] & (table["rater"] == "zed")]["gold_passed"].eq(False).all()
    # The rule cannot be loosened after the study began.
    document = json.loads((folder / "task.json").read_text())
    document["exclusion"] = {"max_gold_failures": 4}
    (folder / "task.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match="another study design"):
        rating_rows(folder)


def test_a_rater_within_the_rule_is_kept(tmp_path):
    from harness.rating.results import rater_table

    from .conftest import write_study

    folder = write_study(tmp_path / "study", max_gold_failures=1)
    _rate(folder, [("ann", "gold:match:0", "3"), ("ann", "gold:miss:0", "2"),  # one failure: allowed
                   ("bob", "gold:match:0", "skip"), ("bob", "gold:miss:0", "5")])  # a skip fails too: two
    assert rater_table(folder).set_index("rater")["excluded"].to_dict() == {"ann": False, "bob": True}
