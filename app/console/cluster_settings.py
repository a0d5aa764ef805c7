"""A cluster's settings page: what it is, its API secret (behind a <details>, the one page that
shows it), its settings, rotating its secret, and deleting it.

Each form is checked by the schema of its API route (schemas.PUT_SETTINGS, schemas.ROTATE_SECRET
through api/validation), so both accept and refuse the same values; a refusal answers this page
with the problems named and status 400, having changed nothing. A rotation answers the new secret
on a page of its own (200, never a redirect: a secret must not ride in a URL). Deleting asks for
the cluster's id typed out, as `differential clusters delete` does.
"""
from __future__ import annotations

from flask import redirect, render_template, request, url_for

from ..api import schemas, validation
from ..engine import cluster_deletion, clusters
from ..errors import ValidationFailed
from . import bp, forms
from .security import CSRF_FIELD

# What each setting means here; a setting GET reports that is not named keeps its key as label.
SETTINGS = {
    "predictiveRetriesEnabled": ("Predictive retries", "Stored as the original's console sets it; this "
                                 "control-plane does not act on it yet (a call's retries are its own callConfig)."),
    "cloudEnabled": ("Cloud features", "Whether the cluster may use the cloud features (deployments); stored, not "
                     "acted on yet."),
}


def _page(cluster_id: str, status: int = 200, **problems: list[dict]):
    """The settings page; `problems` by form: settings, rotate, delete."""
    cluster = clusters.describe_cluster(cluster_id)
    return render_template("console/settings.html", cluster=cluster, settings=clusters.get_settings(cluster_id),
                           labels=SETTINGS, endpoint=forms.base_url(), problems=problems,
                           grace_default=clusters.DEFAULT_GRACE_SECONDS, grace_max=clusters.MAX_GRACE_SECONDS,
                           saved=request.args.get("saved") == "1",
                           grace_typed=request.form.get("graceSeconds") if "rotate" in problems else None), status


@bp.route("/clusters/<cluster_id>/settings", endpoint="cluster_settings")
def settings_page(cluster_id: str):
    return _page(cluster_id)


@bp.route("/clusters/<cluster_id>/settings", methods=["POST"], endpoint="put_cluster_settings")
def put_cluster_settings(cluster_id: str):
    # Each checkbox follows a hidden "false" of its name: the last value sent is the one meant.
    body = {name: forms.boolean(request.form.getlist(name)[-1]) for name in request.form if name != CSRF_FIELD}
    try:
        validation.validate(schemas.PUT_SETTINGS, body)
    except ValidationFailed as exc:
        return _page(cluster_id, 400, settings=forms.problems(exc))
    clusters.put_settings(cluster_id, body)
    return redirect(url_for("console.cluster_settings", cluster_id=cluster_id, saved="1"), 303)


@bp.route("/clusters/<cluster_id>/secret/rotate", methods=["POST"], endpoint="rotate_cluster_secret")
def rotate_cluster_secret(cluster_id: str):
    typed = request.form.get("graceSeconds", "").strip()
    body = {"graceSeconds": forms.integer(typed)} if typed else {}  # empty: the API's default
    try:
        validation.validate(schemas.ROTATE_SECRET, body)
    except ValidationFailed as exc:
        return _page(cluster_id, 400, rotate=forms.problems(exc))
    rotated = clusters.rotate_secret(cluster_id, body["graceSeconds"])
    return render_template("console/secret_once.html", cluster=rotated, rotated=rotated,
                           endpoint=forms.base_url()), 200


@bp.route("/clusters/<cluster_id>/delete", methods=["POST"], endpoint="delete_cluster")
def delete_cluster(cluster_id: str):
    clusters.describe_cluster(cluster_id)  # a cluster that is gone is a 404, whatever was typed
    if request.form.get("confirm", "").strip() != cluster_id:
        return _page(cluster_id, 400, delete=[{"field": "confirm", "message": f"must be the cluster's id, "
                                                                             f"{cluster_id}, typed out"}])
    cluster_deletion.delete_cluster(cluster_id)
    return redirect(url_for("console.clusters"), 303)
