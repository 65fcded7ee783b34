"""The rating web app through Flask's test client: rater links and sessions, the forgery probes
(token, origin, rater id, size, score), and the server's headers."""

from __future__ import annotations

import re

import pytest

from harness.rating.access import ensure_access, load_access, rater_names
from harness.rating.app import COOKIE_NAME, MAX_REQUEST_BYTES, create_app
from harness.rating.task import load_task, read_ratings

ORIGIN = {"Origin": "http://localhost"}


def _app(task_dir, raters=("ann", "bob")):
    access = ensure_access(task_dir, list(raters))
    return create_app(load_task(task_dir), access=access), access


def _login(app, access, rater):
    client = app.test_client()
    page = client.get(f"/r/{access.raters[rater]}")
    assert page.status_code == 200 and f"Welcome, {rater}" in page.get_data(as_text=True)
    return client


def _token(html: str) -> str:
    return re.search(r'name="token" value="([^"]+)"', html).group(1)


def _answer(client, item_id, score, token, headers=ORIGIN, **extra):
    return client.post("/rate", data={"item_id": item_id, "score": score, "token": token, **extra}, headers=headers)


def test_link_sets_a_strict_httponly_signed_cookie_and_the_flow_resumes(task_dir):
    app, access = _app(task_dir)
    client = app.test_client()
    response = client.get(f"/r/{access.raters['ann']}")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = client.get("/rate").get_data(as_text=True)
    assert 'id="word">dog<' in page and "item 1 of 4" in page and 'name="rater"' not in page
    answer = _answer(client, "s0:dog:1", "4", _token(page))
    assert answer.status_code == 303
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert 'id="word">red<' in page
    assert _answer(client, "s0:red:4", "skip", _token(page)).status_code == 303
    page = client.get("/rate").get_data(as_text=True)
    # The prompt with markup is escaped, never live.
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; co" in page and "<script>alert" not in page
    # A new server over the same files: the same link resumes at the first unanswered item.
    app, access = _app(task_dir)
    client = _login(app, access, "ann")
    assert 'id="word">cat<' in client.get("/rate").get_data(as_text=True)
    back = client.get("/rate?item=s0:dog:1").get_data(as_text=True)
    assert 'class="current" aria-pressed="true"><span class="n">4<' in back
    assert client.get("/media/images/i0.png").status_code == 200
    assert client.get("/media/task.json").status_code == 404
    assert client.get("/media/access.json").status_code == 404
    assert app.test_client().get("/media/images/i0.png").status_code == 404  # no session, no media
    # A forged cookie (signed with another key) is no session.
    stranger = app.test_client()
    stranger.set_cookie(COOKIE_NAME, "eyJyYXRlciI6ImFubiJ9.forged.signature")
    assert stranger.get("/rate").status_code == 401


def test_unknown_link_and_no_session_are_refused(task_dir):
    app, access = _app(task_dir)
    client = app.test_client()
    assert client.get("/r/not-a-link").status_code == 404
    assert client.get("/rate").status_code == 401
    assert _answer(client, "s0:dog:1", "3", "x").status_code == 401
    assert read_ratings(task_dir / "ratings.jsonl") == []


def test_two_raters_see_and_change_only_their_own_answers(task_dir):
    app, access = _app(task_dir)
    ann, bob = _login(app, access, "ann"), _login(app, access, "bob")
    ann_page = ann.get("/rate").get_data(as_text=True)
    assert _answer(ann, "s0:dog:1", "5", _token(ann_page)).status_code == 303
    bob_view = bob.get("/rate?item=s0:dog:1").get_data(as_text=True)
    assert "aria-pressed" not in bob_view and "your answer now: none" in bob_view
    # bob asks for ann's answers, or posts as ann, or with ann's token: refused, and nothing of ann's is shown.
    assert bob.get("/rate?rater=ann&item=s0:dog:1").status_code == 403
    bob_token = _token(bob_view)
    refused = _answer(bob, "s0:dog:1", "1", bob_token, rater="ann")
    assert refused.status_code == 403 and "only your own" in refused.get_data(as_text=True)
    ann_token = _token(ann.get("/rate?item=s0:dog:1").get_data(as_text=True))
    refused = _answer(bob, "s0:dog:1", "1", ann_token)
    assert refused.status_code == 400 and "issued for another answer" in refused.get_data(as_text=True)
    # bob's own answer, then ann's token used once by ann; reused by ann: refused without naming anyone.
    assert _answer(bob, "s0:dog:1", "2", bob_token).status_code == 303
    assert _answer(ann, "s0:dog:1", "4", ann_token).status_code == 303
    again = _answer(ann, "s0:dog:1", "3", ann_token)
    text = again.get_data(as_text=True)
    assert again.status_code == 400 and "already sent" in text and "bob" not in text
    assert [(e["rater"], e["score"]) for e in read_ratings(task_dir / "ratings.jsonl")] == [
        ("ann", 5), ("bob", 2), ("ann", 4)]
    assert 'aria-pressed="true"><span class="n">4<' in ann.get("/rate?item=s0:dog:1").get_data(as_text=True)
    assert 'aria-pressed="true"><span class="n">2<' in bob.get("/rate?item=s0:dog:1").get_data(as_text=True)


@pytest.mark.parametrize("form, headers, status, message", [
    ({"score": "3", "token": None}, ORIGIN, 400, "carries no token"),
    ({"score": "3", "token": "made-up"}, ORIGIN, 400, "not issued by this server"),
    ({"score": " 3"}, ORIGIN, 400, "is not one of 1, 2, 3, 4, 5"),
    ({"score": "3 "}, ORIGIN, 400, "is not one of"),
    ({"score": "03"}, ORIGIN, 400, "is not one of"),
    ({"score": "2.5"}, ORIGIN, 400, "is not one of"),
    ({}, ORIGIN, 400, "No answer was sent"),
    ({"score": ""}, ORIGIN, 400, "No answer was sent"),
    ({"score": "3"}, {"Origin": "http://127.0.0.1:9999"}, 403, "not sent from a page of this study"),
    ({"score": "3"}, {"Origin": "null"}, 403, "not sent from a page"),
    ({"score": "3"}, {}, 403, "not sent from a page"),
    ({"score": "3"}, {"Referer": "http://evil.example/form"}, 403, "not sent from a page"),
])
def test_forgery_probes_are_refused_and_nothing_is_stored(task_dir, form, headers, status, message):
    app, access = _app(task_dir)
    client = _login(app, access, "ann")
    token = _token(client.get("/rate").get_data(as_text=True))
    data = {key: value for key, value in {"item_id": "s0:dog:1", "token": token, **form}.items() if value is not None}
    response = client.post("/rate", data=data, headers=headers)
    assert response.status_code == status
    assert re.search(r'class="error" role="alert" id="error">[^<]*' + re.escape(message), response.get_data(as_text=True))
    assert read_ratings(task_dir / "ratings.jsonl") == []
    # The same form from this server (Origin, or Referer without an Origin) is accepted.
    if status == 403:
        assert client.post("/rate", data={"item_id": "s0:dog:1", "token": token, "score": "3"},
                           headers={"Referer": "http://localhost/rate"}).status_code == 303


def test_a_body_over_the_limit_is_refused(task_dir):
    app, access = _app(task_dir)
    client = _login(app, access, "ann")
    token = _token(client.get("/rate").get_data(as_text=True))
    response = client.post("/rate", data={"item_id": "s0:dog:1", "token": token, "score": "3",
                                          "pad": "x" * (MAX_REQUEST_BYTES + 1)}, headers=ORIGIN)
    assert response.status_code == 413
    assert read_ratings(task_dir / "ratings.jsonl") == []


def test_every_page_has_the_security_headers(task_dir):
    app, access = _app(task_dir)
    client = _login(app, access, "ann")
    for path in ("/", "/rate", "/r/nothing", f"/admin/{access.admin}"):
        headers = client.get(path).headers
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_admin_page_needs_its_own_secret_and_shows_progress(task_dir):
    app, access = _app(task_dir)
    client = _login(app, access, "ann")
    _answer(client, "s0:dog:1", "4", _token(client.get("/rate").get_data(as_text=True)))
    assert client.get("/admin/" + access.raters["ann"]).status_code == 404  # a rater's secret is not the admin's
    page = app.test_client().get(f"/admin/{access.admin}").get_data(as_text=True)
    assert re.search(r'data-rater="ann"><td>ann</td><td>1 / 4</td>', page)
    assert re.search(r'data-rater="bob"><td>bob</td><td>0 / 4</td>', page)
    csv = app.test_client().get(f"/admin/{access.admin}/ratings.csv")
    assert csv.status_code == 200 and csv.get_data(as_text=True).splitlines()[1].startswith("ann,s0:dog:1,4,")


def test_access_file_keeps_links_and_is_private(task_dir, tmp_path):
    first = ensure_access(task_dir, rater_names("2"))
    assert sorted(first.raters) == ["rater01", "rater02"]
    names = tmp_path / "names.txt"
    names.write_text("# study 1\nann\nrater01\n")
    second = ensure_access(task_dir, rater_names(str(names)))
    assert second.raters["rater01"] == first.raters["rater01"] and "ann" in second.raters
    assert load_access(task_dir).raters == second.raters
    assert (task_dir / "access.json").stat().st_mode & 0o077 == 0
    assert second.rater_of(first.raters["rater02"]) == "rater02" and second.rater_of("x") is None
