"""A cluster's cloud deployments: every service's, newest first (status, reason, bundle size,
released and active times), and one deployment's recent log lines (?deployment=<id>, read from
CloudWatch Logs when the cloud settings are there). The list refreshes itself while a deployment
is uploading or deploying; every value is shown escaped."""
from __future__ import annotations

from flask import render_template, request

from ..engine import clusters, deployments
from ..engine.states import DeploymentStatus as S
from ..errors import ApiError
from . import bp
from .overview import settings

SHOWN = 100
LOG_LINES = 50
LIVE_SECONDS = 3


def size(value) -> str:
    if value is None:
        return "—"
    for unit, step in (("MB", 1024 * 1024), ("KB", 1024)):
        if value >= step:
            return f"{value / step:.1f} {unit}"
    return f"{value} B"


@bp.route("/clusters/<cluster_id>/deployments", endpoint="deployments")
def list_deployments(cluster_id: str):
    cluster = clusters.describe_cluster(cluster_id)
    rows = deployments.list_for_cluster(cluster_id, SHOWN)
    chosen = request.args.get("deployment", "").strip()[:200] or None
    selected, lines, log_error, status = None, [], None, 200
    if chosen:
        selected = next((d for d in rows if d["id"] == chosen), None)
        if selected is None:
            log_error, status = f"This cluster has no deployment {chosen!r} among its newest {SHOWN}.", 404
        elif selected["releasedAt"] is None:
            log_error = "This deployment was never released: it has no logs."
        else:
            try:
                page = deployments.read_logs(cluster_id, selected["service"], selected["id"], settings=settings(),
                                             start=None, end=None, pattern=None, next_token=None, limit=LOG_LINES)
                lines = page["events"]
            except ApiError as exc:  # the cloud settings are absent, or CloudWatch refused
                log_error = exc.message
    live = any(d["status"] in (S.UPLOADING, S.DEPLOYING) for d in rows)
    return render_template("console/deployments.html", cluster=cluster, deployments=rows, selected=selected,
                           lines=lines, log_error=log_error, live=live, live_seconds=LIVE_SECONDS,
                           cloud=not _missing(), missing=_missing(), size=size, shown=SHOWN), status


def _missing() -> list[str]:
    try:
        deployments.require_cloud(settings())
    except ApiError as exc:
        return list(exc.details.get("missing", [])) if isinstance(exc.details, dict) else []
    return []
