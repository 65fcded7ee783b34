"""The relation table in the notebook's layout, and the figures written from rows."""

import pandas as pd
import pytest

from harness.analysis.figures import pos_bar_chart, relation_frame, relation_table


def aggregate(metric, item, value, n, low=None, high=None):
    return {"method": "daam", "level": "aggregate", "metric": metric, "item": item, "value": value, "n": n,
            "ci_low": low, "ci_high": high}


def syntax_rows():
    rows = []
    # relation: (count, mIoU, mIoD, mIoH)
    for relation, (count, iou, iod, ioh) in {"amod": (30, 0.2, 0.5, 0.2), "det": (50, 0.0, 0.1, 0.0),
                                              "conj:and": (20, 0.3, 0.5, 0.4), "rare": (1, 0.9, 0.9, 0.9)}.items():
        for key, value in (("iou", iou), ("iod", iod), ("ioh", ioh)):
            rows.append(aggregate(f"daam_syntax.m{key}", relation, value, count, value - 0.05, value + 0.05))
    return pd.DataFrame(rows)


def test_relation_table_keeps_the_top_by_count_and_sorts_by_delta():
    table = relation_frame(syntax_rows(), top=3)
    assert list(table.index) == ["det", "conj:and", "amod"]  # deltas 10, 10, 30 (x100); ties keep count order
    assert table.loc["amod", "delta"] == pytest.approx(30.0)
    assert table.loc["amod", "mIoD"] == pytest.approx(50.0)
    assert list(table.columns[:5]) == ["count", "mIoU", "mIoD", "mIoH", "delta"]
    assert "rare" not in table.index


def test_figures_are_written(tmp_path):
    written = relation_table(syntax_rows(), tmp_path, top=10)
    assert [p.name for p in written] == ["relation_table.md", "relation_table.png"]
    assert "| amod | 30 |" in (tmp_path / "relation_table.md").read_text()
    pos = pd.DataFrame([aggregate("daam_pos.miou", "NOUN", 0.6, 10, 0.5, 0.7),
                        aggregate("daam_pos.no_referent", "NOUN", 0.1, 11, 0.02, 0.4),
                        aggregate("daam_pos.no_referent", "DET", 1.0, 8, 0.7, 1.0)])
    assert pos_bar_chart(pos, tmp_path / "pos.png").stat().st_size > 0
