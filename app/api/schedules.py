"""Cron schedules of a cluster (engine/schedules.py), under the management secret."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..engine import schedules
from ..errors import BadRequest
from . import schemas as s, validation
from .routing import route

bp = Blueprint("schedules", __name__)

ERRORS = {400: s.ERROR, 401: s.ERROR, 404: s.ERROR}
_PATH = "/clusters/<cluster_id>/schedules"
_ONE = _PATH + "/<name>"
_MAX_BODY = 128 * 1024  # a schedule's arguments are bounded smaller still (engine/schedules.py)


def _name(name: str) -> str:
    """A name from the path, held to the pattern a created schedule's name has."""
    problems = validation.errors(s.SCHEDULE_NAME, name, "name")
    if problems:
        raise BadRequest(f"name: {problems[0]['message']}", {"field": "name"}, code="invalid_name")
    return name


@route(bp, "POST", _PATH, summary="Create a schedule (409 if its name is taken)", auth_kind="management",
       tag="schedules", body=s.CREATE_SCHEDULE, max_body=_MAX_BODY,
       responses={201: s.SCHEDULE, 409: s.ERROR, 413: s.ERROR, **ERRORS})
def create_schedule(cluster_id, body):
    created, _ = schedules.create(cluster_id, body["name"], body)
    return jsonify(created), 201


@route(bp, "GET", _PATH, summary="A cluster's schedules by name (`after`: the previous page's `next`)",
       auth_kind="management", tag="schedules", query=s.SCHEDULES_QUERY, responses={200: s.SCHEDULES, **ERRORS})
def list_schedules(cluster_id, query):
    return jsonify(schedules.list_schedules(cluster_id, query["limit"], query.get("after"))), 200


@route(bp, "GET", _ONE, summary="A schedule, with its next and last tick", auth_kind="management",
       tag="schedules", responses={200: s.SCHEDULE, **ERRORS})
def get_schedule(cluster_id, name):
    return jsonify(schedules.get(cluster_id, _name(name))), 200


@route(bp, "PUT", _ONE, summary="Create or replace a schedule (its next tick is worked out again)",
       auth_kind="management", tag="schedules", body=s.PUT_SCHEDULE, max_body=_MAX_BODY,
       responses={200: s.SCHEDULE, 201: s.SCHEDULE, 413: s.ERROR, **ERRORS})
def put_schedule(cluster_id, name, body):
    if body.get("name", name) != name:
        raise BadRequest(f"the body names schedule {body['name']!r}, the path {name!r}", {"field": "name"})
    saved, created = schedules.create(cluster_id, _name(name), body, replace=True)
    return jsonify(saved), 201 if created else 200


@route(bp, "PATCH", _ONE, summary="Change some fields of a schedule, e.g. {\"paused\": true} to pause it",
       auth_kind="management", tag="schedules", body=s.PATCH_SCHEDULE, max_body=_MAX_BODY,
       responses={200: s.SCHEDULE, 413: s.ERROR, **ERRORS})
def patch_schedule(cluster_id, name, body):
    return jsonify(schedules.update(cluster_id, _name(name), body)), 200


@route(bp, "DELETE", _ONE, summary="Delete a schedule (calls it made are kept)", auth_kind="management",
       tag="schedules", responses={204: None, **ERRORS})
def delete_schedule(cluster_id, name):
    schedules.delete(cluster_id, _name(name))
    return "", 204
