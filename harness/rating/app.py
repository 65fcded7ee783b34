"""``harness rate TASK --raters N``: a web page collecting 5-point ratings (Flask, served by waitress).

Raters: ``--raters N`` (or a file of names) gives each rater a secret link
(:mod:`harness.rating.access`). Opening it sets a signed session cookie (HttpOnly,
SameSite=Strict) naming the rater; every later request acts for that rater only. A rater sees one
item at a time (the image, the word's heat map, the word and the prompt), answers on the task's
5-point scale or presses skip, goes back, or stops and resumes later through the same link.

Submissions: each item page carries a form token signed by the server and bound to (rater, item);
a POST is refused (status 400/403, a visible message that names nobody else) when its token is
missing, not the server's, for another rater or item, or already used (used tokens are read back
from the append-only ratings file, so a restart does not reopen them); when its Origin (or,
without one, its Referer) is not this server; when it names another rater; when its score is not
exactly ``1``..``5`` or ``skip``; or when it is larger than :data:`MAX_REQUEST_BYTES`. Every page
is sent with ``X-Frame-Options: DENY`` and a Content-Security-Policy that allows nothing from
elsewhere.

The admin page (``/admin/<admin secret>``, printed at start) shows each rater's progress, gold
checks and exclusion, and serves the ratings as CSV.

Serving: 127.0.0.1 unless ``--host`` says otherwise; always through waitress (a production WSGI
server) with the request size limit; for a study over the network put it behind a TLS reverse
proxy (docs/report.md) and give ``--public-url https://...`` so the cookie is marked Secure.

``harness rate TASK --export`` writes the ratings' result rows and CSV files into the task folder
instead of serving; ``harness table TASK`` does the same before tabulating.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from harness.errors import HarnessError
from harness.rating.access import Access, ensure_access, rater_names
from harness.rating.task import RatingError, RatingLog, Task, load_task

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Largest request accepted (a rating form is well under 1 KiB).
MAX_REQUEST_BYTES = 16 * 1024
#: How long a form token stays valid (seconds).
TOKEN_MAX_AGE = 12 * 3600
COOKIE_NAME = "harness_rater"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(task: Task, ratings_path: str | Path | None = None, access: Access | None = None,
               secure_cookie: bool = False):
    """The Flask application of one task (``access``: the task's raters; made without any when None)."""
    from flask import Flask, abort, redirect, render_template, request, send_from_directory, session, url_for
    from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

    access = access if access is not None else ensure_access(task.folder)
    ratings = RatingLog(task, ratings_path)
    app = Flask(__name__, template_folder=str(Path(__file__).with_name("templates")),
                static_folder=str(Path(__file__).with_name("static")))
    app.jinja_env.autoescape = True  # every template, whatever its file name
    app.config.update(SECRET_KEY=access.secret_key, SESSION_COOKIE_NAME=COOKIE_NAME, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=secure_cookie,
                      MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES, MAX_FORM_MEMORY_SIZE=MAX_REQUEST_BYTES,
                      RATINGS=ratings, ACCESS=access)
    forms = URLSafeTimedSerializer(access.secret_key, salt="harness-rating-form")
    media = {item.image for item in task.items} | {item.heatmap for item in task.items}

    def refuse(message: str, status: int, item=None, rater: str | None = None):
        if item is not None and rater is not None:
            return page_of(item, rater, error=message, status=status)
        return render_template("start.html", task=task, error=message, message=None), status

    def current_rater() -> str | None:
        rater = session.get("rater")
        return rater if isinstance(rater, str) and rater in access.raters else None

    def page_of(item, rater: str, error: str | None = None, status: int = 200):
        answered = ratings.answered(rater)
        position = task.index[item.item_id]
        previous = task.items[position - 1].item_id if position > 0 else None
        following = task.items[position + 1].item_id if position + 1 < len(task.items) else None
        token = forms.dumps({"r": rater, "i": item.item_id, "n": secrets.token_hex(16)})
        body = render_template("item.html", task=task, item=item, rater=rater, error=error,
                               position=position + 1, total=len(task.items), done=len(answered),
                               current=answered.get(item.item_id, "unanswered"),
                               previous=previous, following=following, token=token)
        return body, status

    def same_origin() -> bool:
        """The POST comes from a page of this server: its Origin (or, without one, its Referer) names our host."""
        origin = request.headers.get("Origin")
        source = origin if origin else request.headers.get("Referer")
        if not source or source == "null":
            return False
        parts = urlsplit(source)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(413)
    def too_large(_error):
        return refuse(f"Refused: the request is larger than {MAX_REQUEST_BYTES // 1024} KiB.", 413)

    @app.get("/")
    def start():
        if current_rater() is not None:
            return redirect(url_for("rate_page"), code=303)
        return render_template("start.html", task=task, error=None, message=request.args.get("message"))

    @app.get("/r/<link>")
    def rater_link(link: str):
        rater = access.rater_of(link)
        if rater is None:
            return refuse("This link is not valid for this study. Open the personal link you were given.", 404)
        session.clear()
        session["rater"] = rater
        # A page, not a redirect: a link opened from another site (e-mail, chat) would not carry the
        # SameSite=Strict cookie through a redirect; a click on this page does.
        return render_template("welcome.html", task=task, rater=rater, done=len(ratings.answered(rater)))

    @app.get("/rate")
    def rate_page():
        rater = current_rater()
        if rater is None:
            return refuse("Open the personal link you were given to start or resume.", 401)
        if "rater" in request.args and request.args["rater"] != rater:
            return refuse("You can see and change only your own answers.", 403)
        item_id = request.args.get("item")
        if item_id:
            try:
                item = task.item(item_id)
            except RatingError as error:
                return refuse(str(error), 404)
        else:
            item = ratings.next_item(rater, after=request.args.get("after"))
            if item is None:
                answered = ratings.answered(rater)
                return render_template("done.html", task=task, rater=rater, total=len(task.items),
                                       scored=sum(1 for s in answered.values() if s is not None),
                                       skipped=sum(1 for s in answered.values() if s is None))
        return page_of(item, rater)

    @app.post("/rate")
    def rate_submit():
        if not same_origin():
            return refuse("Refused: this form was not sent from a page of this study.", 403)
        rater = current_rater()
        if rater is None:
            return refuse("Open the personal link you were given to start or resume.", 401)
        form = request.form
        if "rater" in form and form["rater"] != rater:
            return refuse("You can see and change only your own answers.", 403)
        try:
            item = task.item(str(form.get("item_id") or ""))
        except RatingError as error:
            return refuse(str(error), 400)
        token = form.get("token")
        if not token:
            return refuse("Refused: the form carries no token. Open the item again.", 400, item, rater)
        try:
            claims = forms.loads(token, max_age=TOKEN_MAX_AGE)
        except SignatureExpired:
            return refuse("This form has expired. Nothing was changed; answer the item again.", 400, item, rater)
        except BadSignature:
            return refuse("Refused: the form's token was not issued by this server.", 400, item, rater)
        if not isinstance(claims, dict) or claims.get("r") != rater or claims.get("i") != item.item_id:
            return refuse("Refused: this form was issued for another answer.", 400, item, rater)
        try:
            entry = ratings.record(rater, item.item_id, form.get("score"), submission=str(claims.get("n", "")))
        except RatingError as error:
            return refuse(str(error), 400, item, rater)
        return redirect(url_for("rate_page", after=entry["item_id"]), code=303)

    @app.get("/stop")
    def stop():
        session.clear()
        return render_template("start.html", task=task, error=None,
                               message="Your answers are saved. Open your personal link again to resume.")

    @app.get("/media/<path:name>")
    def media_file(name: str):
        if current_rater() is None or name not in media:
            abort(404)
        return send_from_directory(task.folder, name)

    @app.get("/admin/<secret>")
    def admin(secret: str):
        if not access.is_admin(secret):
            abort(404)
        from harness.rating.results import rater_table

        table = rater_table(task.folder, ratings.path).set_index("rater")
        progress = []
        for rater in access.raters:
            row = table.loc[rater] if rater in table.index else None
            progress.append({"rater": rater, "answered": int(row["answered"]) if row is not None else 0,
                             "skipped": int(row["skipped"]) if row is not None else 0,
                             "gold_answered": int(row["gold_answered"]) if row is not None else 0,
                             "gold_failed": int(row["gold_failed"]) if row is not None else 0,
                             "excluded": bool(row["excluded"]) if row is not None else False})
        return render_template("admin.html", task=task, progress=progress, secret=secret,
                               gold=len(task.gold_items), rule=task.exclusion)

    @app.get("/admin/<secret>/ratings.csv")
    def admin_csv(secret: str):
        if not access.is_admin(secret):
            abort(404)
        from harness.rating.results import ratings_table

        csv = ratings_table(task.folder, ratings.path).to_csv(index=False)
        return csv, 200, {"Content-Type": "text/csv; charset=utf-8",
                          "Content-Disposition": f'attachment; filename="{task.name}_ratings.csv"'}

    @app.get("/favicon.ico")
    def favicon():
        return "", 204

    return app


def links(access: Access, base_url: str) -> dict[str, str]:
    """Rater -> personal link, and ``"(admin)"`` -> the admin page."""
    base = base_url.rstrip("/")
    shown = {rater: f"{base}/r/{secret}" for rater, secret in access.raters.items()}
    shown["(admin)"] = f"{base}/admin/{access.admin}"
    return shown


def serve(task_path: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          ratings_path: str | Path | None = None, raters: str | None = None, public_url: str | None = None) -> None:
    """Serve the task with waitress until interrupted."""
    from waitress.server import create_server

    task = load_task(task_path)
    access = ensure_access(task.folder, rater_names(raters) if raters else None)
    if not access.raters:
        raise HarnessError(f"Task {task.name!r} has no raters yet: give --raters N (rater01, rater02, ...) or "
                           "--raters FILE (one name a line). Each rater gets a secret link.")
    if public_url is not None and urlsplit(public_url).scheme not in ("http", "https"):
        raise HarnessError(f"--public-url {public_url}: give the address raters open, e.g. https://rate.example.org")
    loopback = _is_loopback(host)
    if not loopback and (public_url is None or not public_url.startswith("https://")):
        print(f"warning: listening on {host} without --public-url https://...: put the server behind a TLS reverse "
              "proxy (docs/report.md) so that links and cookies do not travel in clear text.", flush=True)
    app = create_app(task, ratings_path, access, secure_cookie=bool(public_url and public_url.startswith("https://")))
    try:
        server = create_server(app, host=host, port=port, threads=4, max_request_body_size=MAX_REQUEST_BYTES,
                               ident="harness-rate", clear_untrusted_proxy_headers=True)
    except (OSError, ValueError) as error:
        raise HarnessError(f"Cannot listen on {host}:{port} ({error}); choose another --port.") from None
    shown = f"[{host}]" if ":" in host else host
    base = public_url or f"http://{shown}:{server.effective_port}"
    print(f"Rating task {task.name!r}: {len(task.items)} item(s); ratings go to {app.config['RATINGS'].path}", flush=True)
    print(f"Personal links (send each rater only theirs; kept in {access.path}):", flush=True)
    for rater, link in links(access, base).items():
        print(f"  {rater}: {link}", flush=True)
    print(f"Serving on {shown}:{server.effective_port} (waitress; Ctrl-C stops; ratings are saved as they are given)",
          flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(args: list[str]) -> int:
    """``harness rate TASK [--raters N|FILE] [--port P] [--host H] [--public-url URL] [--ratings FILE] [--export]``."""
    parser = argparse.ArgumentParser(prog="harness rate", description="Collect 5-point ratings of a rating task.")
    parser.add_argument("task", help="the task folder (holding task.json)")
    parser.add_argument("--raters", default=None,
                        help="a number N (raters rater01..) or a file of rater names: each gets a secret link "
                             "(kept in TASK/access.json; raters already there keep theirs)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--public-url", default=None,
                        help="the address raters open (behind a TLS reverse proxy: https://...; marks the cookie Secure)")
    parser.add_argument("--ratings", default=None, help="ratings file (default: TASK/ratings.jsonl)")
    parser.add_argument("--export", action="store_true",
                        help="write the ratings' rows (rows.parquet, summary.csv, ratings.csv, raters.csv) into TASK and exit")
    options = parser.parse_args(args)
    if not 0 <= options.port <= 65535:
        raise HarnessError(f"--port {options.port} is not a port number (0-65535).")
    if options.export:
        from harness.rating.results import export_rows
        from harness.report.table import render_table

        rows_path = export_rows(options.task, options.ratings)
        import pandas as pd

        print(render_table(pd.read_parquet(rows_path), include_cost=True))
        print(f"Rows: {rows_path}; per answer: {rows_path.parent / 'ratings.csv'}; per rater: "
              f"{rows_path.parent / 'raters.csv'}")
        return 0
    serve(options.task, options.host, options.port, options.ratings, options.raters, options.public_url)
    return 0
