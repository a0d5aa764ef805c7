"""Access points (management secret) and synchronous calls (an access point or the cluster secret).

`execute` and its poll take auth kind "caller": routing checks the credential first, before any
path check or body (auth.require_caller, into `g.caller`), the view the service once it is known
(Caller.require). They
wait in the same poll budget as GET /jobs/:id (api/jobs.py), and are parked as it is (no thread
held while a call runs); past its share a call answers 202 at once, to be polled.
"""
from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, g, jsonify

from ..engine import access_points, execute as calls
from . import parking, schemas as s
from .jobs import poll_place
from .routing import route, state

bp = Blueprint("access", __name__)

ERRORS = {400: s.ERROR, 401: s.ERROR, 404: s.ERROR}
_ONE = "/clusters/<cluster_id>/access-point/<name>"


@route(bp, "PUT", _ONE, summary="Create an access point, or replace its services; either way it gets a new token "
       "(the old one stops working at once), answered only here", auth_kind="management", tag="access points",
       body=s.PUT_ACCESS_POINT, responses={200: s.ACCESS_POINT_TOKEN, **ERRORS})
def put_access_point(cluster_id, name, body):
    services = access_points.parse_services(body["allowedServices"])
    return jsonify(access_points.put(cluster_id, access_points.check_name(name), services)), 200


@route(bp, "GET", "/clusters/<cluster_id>/access-points", summary="A cluster's access points (never a token)",
       auth_kind="management", tag="access points", responses={200: s.ACCESS_POINTS, **ERRORS})
def list_access_points(cluster_id):
    return jsonify({"accessPoints": access_points.list_for(cluster_id)}), 200


@route(bp, "DELETE", _ONE, summary="Delete an access point (its token stops working at once)",
       auth_kind="management", tag="access points", responses={204: None, **ERRORS})
def delete_access_point(cluster_id, name):
    access_points.delete(cluster_id, name)
    return "", 204


# --- synchronous calls ----------------------------------------------------------------------------

def _answer(cluster_id: str, job_id: str, wait_seconds: float):
    """The call's answer once it finishes or the wait is over; a call that has to wait is parked
    in the worker like any long poll (api/parking.py), holding no thread."""
    place, stopping = poll_place(g.machine_id, round(wait_seconds * 1000)), state().stopping

    def poll():
        with place as wait:
            row = yield from calls.wait_steps(cluster_id, job_id, wait, stopping=stopping)
        status, body = calls.answer(row)
        if status == 202:
            return body, status, {"Location": f"/clusters/{cluster_id}/execute/{quote(job_id, safe='')}"}
        return body, status

    return parking.answer(poll())


_CALL_RESPONSES = {200: s.EXECUTED, 202: s.EXECUTE_PENDING, 403: s.ERROR, **ERRORS}


@route(bp, "POST", "/clusters/<cluster_id>/execute", summary="Call a function and wait for its result (JSON in "
       "and out); 202 with a Location to poll if it takes longer than waitSeconds", auth_kind="caller",
       tag="access points", body=s.EXECUTE, responses={**_CALL_RESPONSES, 409: s.ERROR, 413: s.ERROR})
def execute(cluster_id, body):
    g.caller.require(body["service"])
    job_id = calls.start(cluster_id, g.caller.grant, body["service"], body["function"], body["args"],
                         body["callConfig"], max_args_bytes=state().settings.max_args_bytes)
    return _answer(cluster_id, job_id, body["waitSeconds"])


@route(bp, "GET", "/clusters/<cluster_id>/execute/<job_id>", summary="A synchronous call's answer (long poll "
       "until it finishes or waitSeconds); an access point reads only calls of services it may call",
       auth_kind="caller", tag="access points", query=s.EXECUTE_POLL_QUERY,
       responses=_CALL_RESPONSES)
def execute_result(cluster_id, job_id, query):
    g.caller.require(calls.status(cluster_id, job_id)["service"])
    return _answer(cluster_id, job_id, query["waitSeconds"])
