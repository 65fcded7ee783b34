"""The rating app reads exactly what the DAAM analyses export (harness.analysis.rating.export_rating_task)."""

from __future__ import annotations

import numpy as np

from harness.data.prompts import PromptRecord
from harness.rating.access import ensure_access
from harness.rating.app import create_app
from harness.rating.results import rating_rows
from harness.rating.task import RatingLog, load_task
from harness.store.samples import Sample


def test_exported_task_loads_serves_and_tabulates(tmp_path):
    from harness.analysis.rating import export_rating_task

    rng = np.random.default_rng(0)
    records = [PromptRecord("p0", "a dog on a red couch", 0), PromptRecord("p1", "a cat sleeps on a blue bed", 1)]
    samples = {r.id: Sample(image=rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                            arrays={f"heatmap:{w}": rng.random((4, 4)).astype(np.float32)
                                    for w in r.prompt.split() if w not in ("a", "on")})
               for r in records}
    export_rating_task(tmp_path / "task", records, samples, pairs=6, tags=3, seed=0, name="contract")
    task = load_task(tmp_path / "task")
    assert task.name == "contract" and task.items and all(item.group.get("pos") for item in task.items)
    access = ensure_access(task.folder, ["ann"])
    client = create_app(task, access=access).test_client()
    client.get(f"/r/{access.raters['ann']}")
    page = client.get("/rate").get_data(as_text=True)
    assert f'id="word">{task.items[0].word}<' in page
    assert client.get(f"/media/{task.items[0].heatmap}").status_code == 200
    log = RatingLog(task)
    for number, item in enumerate(task.items):
        log.record("ann", item.item_id, str(1 + number % 5), submission=f"t{number}")
    rows = rating_rows(tmp_path / "task")
    mos = rows[rows["metric"] == "mean_opinion_score"].set_index("item")
    assert mos.loc["(all)", "n"] == len(task.items)
    assert set(mos.index) - {"(all)"} == {item.group["pos"] for item in task.items}
