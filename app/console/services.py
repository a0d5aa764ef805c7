"""A cluster's services: the list (functions, live machines, last poll), and one service (its
functions with their JSON Schemas, the operator's schema, its live machines, its recent calls)."""
from __future__ import annotations

import json

from flask import render_template

from ..engine import clusters, console_overview
from . import bp
from .overview import settings

RECENT_CALLS = 20
MACHINES_SHOWN = 100


@bp.route("/clusters/<cluster_id>/services", endpoint="services")
def list_services(cluster_id: str):
    cluster = clusters.describe_cluster(cluster_id)
    listed = console_overview.services(cluster_id, settings().machine_timeout_seconds)
    return render_template("console/services.html", cluster=cluster, services=listed["services"],
                           total=listed["total"])


def readable_schema(text) -> str | None:
    """A function's schema as workers send it (JSON text) as indented JSON; text that is not JSON
    is shown as it came."""
    if text in (None, ""):
        return None
    if not isinstance(text, str):
        return json.dumps(text, indent=2, ensure_ascii=False)
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


@bp.route("/clusters/<cluster_id>/services/<path:service>", endpoint="service")
def show_service(cluster_id: str, service: str):
    cluster = clusters.describe_cluster(cluster_id)
    details = clusters.service_details(cluster_id, service, RECENT_CALLS)  # NotFound for a service never seen
    timeout = settings().machine_timeout_seconds
    machines = console_overview.live_machines(cluster_id, service, timeout, limit=MACHINES_SHOWN)
    functions = [{**f, "readableSchema": readable_schema(f.get("schema")),
                  "extra": {k: v for k, v in f.items() if k not in ("name", "schema")}}
                 for f in details["definition"].get("functions", [])]
    return render_template("console/service.html", cluster=cluster, service=service, functions=functions,
                           concurrency=details["definition"].get("concurrency"), schema=details["schema"],
                           machines=machines, jobs=details["jobs"], machine_timeout="%g" % timeout,
                           recent=RECENT_CALLS, machines_shown=MACHINES_SHOWN)
