"""The rating web app through Flask's test client: flow, resume and server-side validation."""

from __future__ import annotations

import re

from harness.rating.app import create_app
from harness.rating.task import load_task, read_ratings


def _client(task_dir):
    return create_app(load_task(task_dir)).test_client()


def _token(html: str) -> str:
    return re.search(r'name="token" value="([0-9a-f]+)"', html).group(1)


def test_rating_flow_resume_and_escaping(task_dir):
    client = _client(task_dir)
    assert b"Start or resume" in client.get("/").data
    page = client.get("/rate?rater=ann").get_data(as_text=True)
    assert 'id="word">dog<' in page and "item 1 of 4" in page
    answer = client.post("/rate", data={"rater": "ann", "item_id": "s0:dog:1", "score": "4", "token": _token(page)})
    assert answer.status_code == 303 and "after=s0" in answer.headers["Location"]
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert 'id="word">red<' in page
    client.post("/rate", data={"rater": "ann", "item_id": "s0:red:4", "score": "skip", "token": _token(page)})
    page = client.get("/rate?rater=ann").get_data(as_text=True)
    # The prompt with markup is escaped, never live.
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; co" in page and "<script>alert" not in page
    # A new app over the same file resumes at the first unanswered item; going back shows the answer.
    client = _client(task_dir)
    assert 'id="word">cat<' in client.get("/rate?rater=ann").get_data(as_text=True)
    back = client.get("/rate?rater=ann&item=s0:dog:1").get_data(as_text=True)
    assert 'class="current" aria-pressed="true"><span class="n">4<' in back
    assert client.get("/media/images/i0.png").status_code == 200
    assert client.get("/media/task.json").status_code == 404
    assert client.get("/media/../task.json").status_code == 404


def test_bad_submissions_get_400_and_a_visible_message(task_dir):
    client = _client(task_dir)
    page = client.get("/rate?rater=ann").get_data(as_text=True)
    token = _token(page)
    cases = [
        ({"rater": "ann", "item_id": "s0:dog:1", "score": "9", "token": token}, "is not one of 1, 2, 3, 4, 5"),
        ({"rater": "ann", "item_id": "no-such-item", "score": "3", "token": token}, "Unknown item"),
        ({"rater": "", "item_id": "s0:dog:1", "score": "3", "token": token}, "rater id is required"),
    ]
    for form, message in cases:
        response = client.post("/rate", data=form)
        assert response.status_code == 400
        assert re.search(r'class="error" role="alert" id="error">[^<]*' + message, response.get_data(as_text=True))
    assert client.post("/rate", data={"rater": "ann", "item_id": "s0:dog:1", "score": "3", "token": token}).status_code == 303
    again = client.post("/rate", data={"rater": "ann", "item_id": "s0:dog:1", "score": "3", "token": token})
    assert again.status_code == 400 and "Duplicate submission" in again.get_data(as_text=True)
    assert [(e["item_id"], e["score"]) for e in read_ratings(task_dir / "ratings.jsonl")] == [("s0:dog:1", 3)]
    assert client.get("/rate").status_code == 400


def test_done_page_after_every_item(task_dir):
    client = _client(task_dir)
    for number, item in enumerate(load_task(task_dir).items):
        client.post("/rate", data={"rater": "bob", "item_id": item.item_id, "score": str(1 + number % 5),
                                   "token": f"t{number}"})
    page = client.get("/rate?rater=bob").get_data(as_text=True)
    assert 'id="done"' in page and "4 rated, 0 skipped" in page
