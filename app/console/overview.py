"""A cluster's overview: per service, its live workers, queue depth, and calls and failures over
the last minutes; it refreshes itself (a live region). With no service yet it says how one
connects."""
from __future__ import annotations

from flask import current_app, render_template, request

from ..engine import clusters, console_overview
from ..engine.rollups import epoch_ms
from ..models import utcnow
from . import bp

RECENT_MINUTES = 15
LIVE_SECONDS = 3
SERVICES_SHOWN = 200


def settings():
    return current_app.extensions["differential"].settings


def endpoint() -> str:
    """Where services reach this control-plane: PUBLIC_URL, else the address this page came by."""
    return settings().public_url.rstrip("/") or request.url_root.rstrip("/")


@bp.route("/clusters/<cluster_id>/overview", endpoint="overview")
def overview(cluster_id: str):
    cluster = clusters.describe_cluster(cluster_id)
    timeout = settings().machine_timeout_seconds
    known = console_overview.services(cluster_id, timeout, limit=SERVICES_SHOWN)
    queue = console_overview.queue_depth(cluster_id)
    recent = console_overview.recent_calls(cluster_id, epoch_ms(utcnow()), RECENT_MINUTES)
    rows = {s["name"]: {**s, "known": True} for s in known["services"]}
    # A service callers call that no worker polled yet still has a queue: it gets a row too.
    for name in list(queue["services"]) + list(recent["services"]):
        rows.setdefault(name, {"name": name, "functions": [], "liveWorkers": 0, "lastPollAt": None,
                               "known": False})
    empty = dict.fromkeys(console_overview.QUEUE_STATES, 0)
    no_calls = {"calls": 0, "failed": 0, "perMinute": 0.0}
    services = [{**row, "queue": queue["services"].get(name, empty), "recent": recent["services"].get(name, no_calls)}
                for name, row in sorted(rows.items())]
    totals = {"services": known["total"], "liveWorkers": sum(s["liveWorkers"] for s in services),
              **{state: sum(s["queue"][state] for s in services) for state in console_overview.QUEUE_STATES},
              "calls": sum(s["recent"]["calls"] for s in services),
              "failed": sum(s["recent"]["failed"] for s in services)}
    return render_template("console/overview.html", cluster=cluster, services=services, totals=totals,
                           capped=queue["capped"], minutes=RECENT_MINUTES, live_seconds=LIVE_SECONDS,
                           endpoint=endpoint(), shown=SERVICES_SHOWN, machine_timeout="%g" % timeout, cap=console_overview.QUEUE_COUNT_CAP)
