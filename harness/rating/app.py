"""``harness rate TASK --port P``: a local web page collecting 5-point ratings (Flask).

A rater enters an id, then sees one item at a time (the image, the word's heat map, the word
and the prompt) and answers on the task's 5-point scale, skips it, goes back, or stops and later
resumes with the same id (the first unanswered item comes next). Every answer is appended to the
ratings file before the next item is shown (:class:`harness.rating.task.RatingLog`). The server
checks every answer (known item, score 1-5 or skip, rater id, a form not submitted twice) and
answers a refused one with status 400 and a visible message. It binds 127.0.0.1 unless told
otherwise.

``harness rate TASK --export`` writes the ratings' result rows (``rows.parquet``) into the task
folder instead of serving; ``harness table TASK`` does the same before tabulating.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import secrets
from pathlib import Path

from harness.errors import HarnessError
from harness.rating.task import RatingError, RatingLog, Task, check_rater, load_task

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def create_app(task: Task, ratings_path: str | Path | None = None):
    """The Flask application of one task."""
    from flask import Flask, abort, redirect, render_template, request, send_from_directory, url_for

    ratings = RatingLog(task, ratings_path)
    app = Flask(__name__, template_folder=str(Path(__file__).with_name("templates")))
    app.jinja_env.autoescape = True  # every template, whatever its file name
    app.config["RATINGS"] = ratings
    media = {item.image for item in task.items} | {item.heatmap for item in task.items}

    def page_of(item, rater: str, error: str | None = None, status: int = 200):
        answered = ratings.answered(rater)
        position = task.index[item.item_id]
        previous = task.items[position - 1].item_id if position > 0 else None
        following = task.items[position + 1].item_id if position + 1 < len(task.items) else None
        body = render_template("item.html", task=task, item=item, rater=rater, error=error,
                               position=position + 1, total=len(task.items), done=len(answered),
                               current=answered.get(item.item_id, "unanswered"),
                               previous=previous, following=following, token=secrets.token_hex(16))
        return body, status

    @app.get("/")
    def start():
        return render_template("start.html", task=task, error=None, message=request.args.get("message"))

    @app.get("/rate")
    def rate_page():
        try:
            rater = check_rater(request.args.get("rater"))
        except RatingError as error:
            return render_template("start.html", task=task, error=str(error), message=None), 400
        item_id = request.args.get("item")
        if item_id:
            try:
                item = task.item(item_id)
            except RatingError as error:
                return render_template("start.html", task=task, error=str(error), message=None), 404
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
        form = request.form
        score = form.get("score")
        try:
            entry = ratings.record(form.get("rater"), form.get("item_id"), score, submission=form.get("token"))
        except RatingError as error:
            rater, item_id = form.get("rater", ""), form.get("item_id", "")
            try:
                rater = check_rater(rater)
                item = task.item(item_id)
            except RatingError:
                return render_template("start.html", task=task, error=str(error), message=None), 400
            return page_of(item, rater, error=str(error), status=400)
        return redirect(url_for("rate_page", rater=entry["rater"], after=entry["item_id"]), code=303)

    @app.get("/media/<path:name>")
    def media_file(name: str):
        if name not in media:
            abort(404)
        return send_from_directory(task.folder, name)

    @app.get("/favicon.ico")
    def favicon():
        return "", 204

    return app


def serve(task_path: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          ratings_path: str | Path | None = None) -> None:
    """Serve the task until interrupted."""
    from werkzeug.serving import make_server

    task = load_task(task_path)
    app = create_app(task, ratings_path)
    try:
        server = make_server(host, port, app, threaded=True)
    except (OSError, SystemExit) as error:
        raise HarnessError(f"Cannot listen on {host}:{port} ({error}); choose another --port.") from None
    if not _is_loopback(host):
        print(f"warning: listening on {host}: anyone who can reach this machine can rate.", flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"Rating task {task.name!r}: {len(task.items)} item(s); ratings go to {app.config['RATINGS'].path}", flush=True)
    print(f"Open http://{shown}:{server.server_port}/  (Ctrl-C stops; ratings are saved as they are given)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(args: list[str]) -> int:
    """``harness rate TASK [--port P] [--host H] [--ratings FILE] [--export]``."""
    parser = argparse.ArgumentParser(prog="harness rate", description="Collect 5-point ratings of a rating task.")
    parser.add_argument("task", help="the task folder (holding task.json)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--ratings", default=None, help="ratings file (default: TASK/ratings.jsonl)")
    parser.add_argument("--export", action="store_true",
                        help="write the ratings' result rows (rows.parquet, summary.csv) into TASK and exit")
    options = parser.parse_args(args)
    if not 0 <= options.port <= 65535:
        raise HarnessError(f"--port {options.port} is not a port number (0-65535).")
    if options.export:
        from harness.rating.results import export_rows
        from harness.report.table import render_table

        rows_path = export_rows(options.task, options.ratings)
        import pandas as pd

        print(render_table(pd.read_parquet(rows_path), include_cost=True))
        print(f"Rows: {rows_path}")
        return 0
    serve(options.task, options.host, options.port, options.ratings)
    return 0
