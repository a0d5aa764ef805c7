"""Cloud deployments of a service (management secret): create, upload (POST /clusters/:id/assets),
release, read, logs, roll back, delete. The original's routes and shapes; engine/deployments.py
holds the rules. The routes that talk to AWS answer 501 `cloud_not_configured` when a cloud
setting is missing; reading the rows does not need AWS."""
from __future__ import annotations

import re

from flask import Blueprint, jsonify

from ..cloud import cloudformation, logs as cloud_logs
from ..engine import deployments
from ..errors import BadRequest
from . import schemas as s
from .routing import route, state

bp = Blueprint("deployments", __name__)

_ALL = "/clusters/<cluster_id>/service/<service>/deployments"
_ONE = _ALL + "/<deployment_id>"
ERRORS = {400: s.ERROR, 401: s.ERROR, 404: s.ERROR}
CLOUD_ERRORS = {**ERRORS, 409: s.ERROR, 501: s.ERROR, 502: s.ERROR}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

SERVICE_MODULE = {"type": "string", "minLength": 1, "maxLength": 300,
                  "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
                  "description": "Python: where the SDK's Lambda handler finds the service, 'package.module:attribute'"}
CREATE_DEPLOYMENT = s.obj({
    "runtime": {"type": "string", "enum": list(cloudformation.RUNTIMES), "default": cloudformation.DEFAULT_RUNTIME},
    "serviceModule": SERVICE_MODULE,
}, extra=False)
BUNDLE = {"type": ["object", "null"], "properties": {"size": {"type": "integer"}, "sha256": {"type": "string"}}}
DEPLOYMENT = s.obj({
    "id": {"type": "string"}, "clusterId": {"type": "string"}, "service": {"type": "string"},
    "status": {"type": "string", "enum": ["uploading", "deploying", "active", "inactive", "failed"]},
    "provider": {"type": "string"}, "runtime": {"type": "string"}, "serviceModule": s.NULLABLE_TEXT,
    "createdAt": s.TIMESTAMP, "expiresAt": s.TIMESTAMP, "stackName": {"type": "string"},
    "functionName": {"type": "string"}, "reason": s.NULLABLE_TEXT, "releasedAt": s.TIMESTAMP,
    "activatedAt": s.TIMESTAMP, "bundle": BUNDLE,
}, required=("id", "clusterId", "service", "status", "provider", "runtime", "stackName", "functionName"))
DEPLOYMENTS = s.obj({"deployments": {"type": "array", "items": DEPLOYMENT}}, required=("deployments",))
DELETED = s.obj({"deleted": {"type": "array", "items": {"type": "string"}}, "stackName": {"type": "string"}},
                required=("deleted", "stackName"))
LOGS_QUERY = s.obj({
    "start": {"type": "integer", "minimum": 0, "maximum": 10**14, "description": "epoch ms (default: end - 1 h)"},
    "end": {"type": "integer", "minimum": 0, "maximum": 10**14, "description": "epoch ms (default: now)"},
    "filter": {"type": "string", "minLength": 1, "maxLength": 1024,
               "description": "a CloudWatch Logs filter pattern"},
    "next": {"type": "string", "minLength": 1, "maxLength": 4096, "description": "the `next` of the previous page"},
    "limit": {"type": "integer", "minimum": 1, "maximum": cloud_logs.MAX_LIMIT, "default": 100},
}, extra=False)
LOGS = s.obj({"events": {"type": "array", "items": s.obj({"timestamp": {"type": "integer"},
                                                          "message": {"type": "string"}})},
              "next": s.NULLABLE_TEXT}, required=("events", "next"))


def _cloud() -> None:
    deployments.require_cloud(state().settings)


def _store():
    """The app's asset store (app/cloud/assets.py): where bundles are uploaded and checked."""
    return state().assets


def _service(service: str) -> str:
    if _CONTROL.search(service):
        raise BadRequest("the service name must not contain control characters", {"parameter": "service"})
    return service


@route(bp, "POST", _ALL, summary="Create a deployment of a service (status uploading); upload its bundle with "
       "POST /clusters/:id/assets, then release it", auth_kind="management", tag="deployments",
       body=CREATE_DEPLOYMENT, body_required=False, responses={201: DEPLOYMENT, **CLOUD_ERRORS})
def create_deployment(cluster_id, service, body):
    _cloud()  # after the body's checks, so a malformed body is a 400 whatever the settings
    answer = deployments.create(cluster_id, _service(service), runtime=body["runtime"],
                                service_module=body.get("serviceModule"),
                                expiry_minutes=state().settings.deployment_upload_expiry_minutes)
    return jsonify(answer), 201


@route(bp, "GET", _ALL, summary="A service's deployments, newest first", auth_kind="management",
       tag="deployments", query=s.LIST_QUERY, responses={200: DEPLOYMENTS, **ERRORS})
def list_deployments(cluster_id, service, query):
    return jsonify({"deployments": deployments.list_for_service(cluster_id, _service(service), query["limit"])}), 200


@route(bp, "GET", _ONE, summary="One deployment", auth_kind="management", tag="deployments",
       responses={200: DEPLOYMENT, **ERRORS})
def get_deployment(cluster_id, service, deployment_id):
    return jsonify(deployments.get(cluster_id, _service(service), deployment_id)), 200


@route(bp, "POST", _ONE + "/release", summary="Release an uploaded deployment: its stack is created or updated "
       "(status deploying; SNS stack events make it active or failed)", auth_kind="management",
       tag="deployments", precondition=_cloud, responses={200: DEPLOYMENT, **CLOUD_ERRORS})
def release_deployment(cluster_id, service, deployment_id):
    answer = deployments.release(cluster_id, _service(service), deployment_id, settings=state().settings,
                                 store=_store())
    return jsonify(answer), 200


@route(bp, "POST", _ONE + "/rollback", summary="Roll back to an earlier (inactive) deployment: released again; "
       "the active one stays active until the stack update succeeds", auth_kind="management",
       tag="deployments", precondition=_cloud, responses={200: DEPLOYMENT, **CLOUD_ERRORS})
def rollback_deployment(cluster_id, service, deployment_id):
    answer = deployments.rollback(cluster_id, _service(service), deployment_id, settings=state().settings,
                                  store=_store())
    return jsonify(answer), 200


@route(bp, "GET", _ONE + "/logs", summary="The deployment's log lines from CloudWatch Logs (Lambda's own lines "
       "removed), a page at a time", auth_kind="management", tag="deployments", query=LOGS_QUERY,
       precondition=_cloud, responses={200: LOGS, **CLOUD_ERRORS})
def deployment_logs(cluster_id, service, deployment_id, query):
    answer = deployments.read_logs(cluster_id, _service(service), deployment_id, settings=state().settings,
                                   start=query.get("start"), end=query.get("end"), pattern=query.get("filter"),
                                   next_token=query.get("next"), limit=query["limit"])
    return jsonify(answer), 200


@route(bp, "DELETE", _ALL, summary="Remove the service's stack (hence its function) and bundles; its deployments "
       "stay listed, inactive or failed", auth_kind="management", tag="deployments", precondition=_cloud,
       responses={200: DELETED, **CLOUD_ERRORS})
def delete_deployments(cluster_id, service):
    return jsonify(deployments.delete_service(cluster_id, _service(service), settings=state().settings,
                                              store=_store())), 200
