"""The clusters: the list, and creating one."""
from __future__ import annotations

from flask import current_app, redirect, render_template, request, url_for

from ..api import auth, schemas, validation
from ..engine import clusters
from ..errors import ValidationFailed
from . import CLUSTER_PAGES, bp


@bp.route("/", endpoint="clusters")
def list_clusters(error: str | None = None, status: int = 200):
    return render_template("console/clusters.html", clusters=clusters.list_clusters(), error=error), status


@bp.route("/clusters", methods=["POST"], endpoint="create_cluster")
def create_cluster():
    description = request.form.get("description", "").strip() or None
    try:  # as POST /clusters checks its body (one home for the rule)
        validation.validate(schemas.CREATE_CLUSTER, {"description": description})
        if description is not None and not validation.storable_text(description):
            raise ValidationFailed("invalid request body: description must not hold a NUL character")
    except ValidationFailed as exc:
        return list_clusters(exc.message, 400)
    created = clusters.create_cluster(description)
    auth.forget_failures()  # its secret may have been refused a moment ago (api/auth.py)
    return redirect(url_for("console.cluster_home", cluster_id=created["id"]), 303)


@bp.route("/clusters/<cluster_id>", endpoint="cluster_home")
def cluster_home(cluster_id: str):
    """A cluster's first page: its overview, or the first of its pages that exists."""
    clusters.describe_cluster(cluster_id)
    for _, endpoint in CLUSTER_PAGES:
        if endpoint in current_app.view_functions:
            return redirect(url_for(endpoint, cluster_id=cluster_id), 303)
    return redirect(url_for("console.clusters"), 303)
