"""A cluster's access points: the list, and create, rotate, delete.

A token is answered once, by the page the create or rotate POST answers (200, never a redirect: a
token must not ride in a URL or the history); the list never holds one (the engine keeps only its
hash). The form is checked as PUT /clusters/:id/access-point/:name checks its body and name
(schemas.PUT_ACCESS_POINT, then the engine's check_name and parse_services); and creating a name
that exists is refused rather than rotating it behind the user's back.
"""
from __future__ import annotations

import json
import shlex

from flask import redirect, render_template, request, url_for

from ..api import schemas, validation
from ..engine import access_points, clusters
from ..errors import NotFound, ValidationFailed
from . import bp, forms

EXAMPLE_SERVICE = "SERVICE"


def _page(cluster_id: str, status: int = 200, problems: list[dict] | None = None, form: dict | None = None):
    cluster = clusters.describe_cluster(cluster_id)
    points = access_points.list_for(cluster_id)
    deleted = request.args.get("deleted")
    if deleted and any(p["name"] == deleted for p in points):
        deleted = None  # only a name that is gone reads as deleted
    return render_template("console/access_points.html", cluster=cluster, points=points, problems=problems or [],
                           form=form or {"allowedServices": access_points.ALL_SERVICES}, deleted=deleted,
                           all_services=access_points.ALL_SERVICES, name_max=access_points.NAME_MAX), status


def _checked(form: dict) -> tuple[str, list[str]]:
    """(name, services) as the API takes them, or ValidationFailed naming every bad field."""
    found: list[dict] = []
    name = services = None
    try:
        name = access_points.check_name(form["name"])
    except ValidationFailed as exc:
        found += forms.problems(exc)
    try:
        validation.validate(schemas.PUT_ACCESS_POINT, {"allowedServices": form["allowedServices"]})
        services = access_points.parse_services(form["allowedServices"])
    except ValidationFailed as exc:
        found += forms.problems(exc)
    if found:
        raise ValidationFailed(f"invalid form: {found[0]['field']} {found[0]['message']}", {"fields": found})
    return name, services


def _find(cluster_id: str, name: str) -> dict | None:
    return next((p for p in access_points.list_for(cluster_id) if p["name"] == name), None)


def curl_line(base_url: str, cluster_id: str, token: str, services: list[str]) -> str:
    """A POST /clusters/:id/execute with this token, every part quoted for a POSIX shell."""
    service = services[0] if services and services[0] != access_points.ALL_SERVICES else EXAMPLE_SERVICE
    body = json.dumps({"service": service, "function": "FUNCTION", "args": []}, ensure_ascii=False)
    return " \\\n  ".join([f"curl -X POST {shlex.quote(f'{base_url}/clusters/{cluster_id}/execute')}",
                           f"-H {shlex.quote('Authorization: Bearer ' + token)}",
                           "-H 'Content-Type: application/json'",
                           f"-d {shlex.quote(body)}"])


def _token_page(cluster_id: str, made: dict, rotated: bool):
    cluster = clusters.describe_cluster(cluster_id)
    return render_template("console/token_once.html", cluster=cluster, made=made, rotated=rotated,
                           curl=curl_line(forms.base_url(), cluster_id, made["token"], made["allowedServices"]),
                           all_services=access_points.ALL_SERVICES), 200


@bp.route("/clusters/<cluster_id>/access-points", endpoint="access_points")
def list_access_points(cluster_id: str):
    return _page(cluster_id)


@bp.route("/clusters/<cluster_id>/access-points", methods=["POST"], endpoint="create_access_point")
def create_access_point(cluster_id: str):
    form = {"name": request.form.get("name", "").strip(), "allowedServices": request.form.get("allowedServices", "")}
    try:
        name, services = _checked(form)
    except ValidationFailed as exc:
        return _page(cluster_id, 400, forms.problems(exc), form)
    if _find(cluster_id, name) is not None:
        return _page(cluster_id, 409, [{"field": "name", "message": f"{name!r} exists: rotate it instead (its "
                                                                    "Rotate button gives it a new token)"}], form)
    return _token_page(cluster_id, access_points.put(cluster_id, name, services), rotated=False)


@bp.route("/clusters/<cluster_id>/access-points/<name>/rotate", methods=["POST"], endpoint="rotate_access_point")
def rotate_access_point(cluster_id: str, name: str):
    found = _find(cluster_id, name)
    if found is None:
        raise NotFound(f"access point {name!r} does not exist in cluster {cluster_id!r}",
                       {"clusterId": cluster_id, "name": name}, code="access_point_not_found")
    # A PUT of the same name and services: a new token, and the old one stops at once.
    return _token_page(cluster_id, access_points.put(cluster_id, name, found["allowedServices"]), rotated=True)


@bp.route("/clusters/<cluster_id>/access-points/<name>/delete", methods=["POST"], endpoint="delete_access_point")
def delete_access_point(cluster_id: str, name: str):
    access_points.delete(cluster_id, name)
    return redirect(url_for("console.access_points", cluster_id=cluster_id, deleted=name), 303)
