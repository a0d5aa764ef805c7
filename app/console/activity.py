"""The activity log: a cluster's events newest first, a page at a time (clusters.activity's
`before` cursor, on the events (cluster_id, created_at, seq) index), optionally one job's (?jobId=). Every
value is a client's or the engine's text, shown escaped; the first page refreshes itself."""
from __future__ import annotations

from flask import render_template, request

from ..engine import clusters
from ..observability.events import events
from . import bp
from .jobs import MAX_NAME, FormError, shown, text_field

PAGE_SIZE = 100
LIVE_SECONDS = 10


def _before(args) -> int | None:
    text = args.get("before", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1 or len(text) > 19:
        raise FormError("before", "is not a link of this log (start again from the newest events)")
    return int(text)


@bp.route("/clusters/<cluster_id>/activity", endpoint="activity")
def activity(cluster_id: str):
    cluster = clusters.describe_cluster(cluster_id)
    page, error, status = {"events": [], "next": None}, None, 200
    try:
        job_id, before = text_field(request.args, "jobId", MAX_NAME), _before(request.args)
    except FormError as exc:
        job_id, before, error, status = None, None, exc.message, 400
    if error is None:
        events.flush()  # what this process buffered is in the log before it is read
        page = clusters.activity(cluster_id, job_id=job_id, limit=PAGE_SIZE, before=before)
    rows = [shown(e) for e in page["events"]]
    return render_template("console/activity.html", cluster=cluster, events=rows, next=page["next"],
                           job_id=job_id, before=before, error=error, live=error is None and before is None,
                           live_seconds=LIVE_SECONDS), status
