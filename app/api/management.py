"""The management API: clusters and what runs in them, authenticated by the management secret."""
from __future__ import annotations

import datetime as dt

from flask import Blueprint, jsonify

from ..engine import admin, cancel, cluster_deletion, clusters
from ..errors import ValidationFailed
from . import auth, schemas as s, validation
from .routing import route, state

bp = Blueprint("management", __name__)

ERRORS = {400: s.ERROR, 401: s.ERROR}


@route(bp, "POST", "/clusters", summary="Create a cluster (the body and its description are optional)",
       auth_kind="management", tag="management", body=s.CREATE_CLUSTER, body_required=False,
       responses={201: s.CLUSTER, **ERRORS})
def create_cluster(body):
    created = clusters.create_cluster(body.get("description"))
    auth.forget_failures()
    return jsonify(created), 201


@route(bp, "GET", "/clusters", summary="Every cluster with its API secret", auth_kind="management",
       tag="management", responses={200: s.CLUSTERS, **ERRORS})
def list_clusters():
    return jsonify(clusters.list_clusters()), 200


@route(bp, "GET", "/clusters/<cluster_id>", summary="A cluster: recent machines, recent jobs, service definitions "
       "(at most `limit` of each, newest first; `counts` has the totals)",
       auth_kind="management", tag="management", query=s.LIST_QUERY,
       responses={200: s.CLUSTER_DETAILS, 404: s.ERROR, **ERRORS})
def cluster_details(cluster_id, query):
    return jsonify(clusters.cluster_details(cluster_id, query["limit"],
                                            state().settings.machine_timeout_seconds)), 200


@route(bp, "GET", "/clusters/<cluster_id>/service/<service_name>", summary="A service: definition and recent jobs",
       auth_kind="management", tag="management", query=s.LIST_QUERY,
       responses={200: s.SERVICE_DETAILS, 404: s.ERROR, **ERRORS})
def service_details(cluster_id, service_name, query):
    return jsonify(clusters.service_details(cluster_id, service_name, query["limit"])), 200


@route(bp, "GET", "/clusters/<cluster_id>/settings", summary="A cluster's settings", auth_kind="management",
       tag="management", responses={200: s.CLUSTER_SETTINGS, 404: s.ERROR, **ERRORS})
def get_settings(cluster_id):
    return jsonify(clusters.get_settings(cluster_id)), 200


@route(bp, "PUT", "/clusters/<cluster_id>/settings", summary="Change a cluster's settings",
       auth_kind="management", tag="management", body=s.PUT_SETTINGS,
       responses={200: s.CLUSTER_SETTINGS, 404: s.ERROR, **ERRORS})
def put_settings(cluster_id, body):
    return jsonify(clusters.put_settings(cluster_id, body)), 200


@route(bp, "GET", "/clusters/<cluster_id>/activity", summary="The activity log, newest first, paginated",
       auth_kind="management", tag="management", query=s.ACTIVITY_QUERY,
       responses={200: s.ACTIVITY, 404: s.ERROR, **ERRORS})
def activity(cluster_id, query):
    return jsonify(clusters.activity(cluster_id, job_id=query.get("jobId"), limit=query["limit"],
                                     before=query.get("before"))), 200


@route(bp, "POST", "/clusters/<cluster_id>/jobs/<job_id>/cancel",
       summary="Cancel a call in flight as an operator (answers its status, as GET /jobs/:id)",
       auth_kind="management", tag="management", body=s.CANCEL_JOB, body_required=False,
       responses={200: s.JOB_STATUS, 404: s.ERROR, 409: s.ERROR, **ERRORS})
def cancel_job(cluster_id, job_id, body):
    return jsonify(cancel.cancel_as_operator(cluster_id, job_id, body.get("reason"))), 200


# --- cluster lifecycle and service schemas ----------------------------------------------------------

@route(bp, "POST", "/clusters/<cluster_id>/secret/rotate",
       summary="Rotate the cluster's API secret: the new one answers once; the old one works for graceSeconds more",
       auth_kind="management", tag="management", body=s.ROTATE_SECRET, body_required=False,
       responses={200: s.ROTATED_SECRET, 404: s.ERROR, **ERRORS})
def rotate_secret(cluster_id, body):
    return jsonify(clusters.rotate_secret(cluster_id, body["graceSeconds"])), 200


@route(bp, "DELETE", "/clusters/<cluster_id>",
       summary="Delete a cluster and everything of it: it authenticates nothing from now on; its rows go in batches",
       auth_kind="management", tag="management", responses={202: s.CLUSTER_DELETED, 404: s.ERROR, **ERRORS})
def delete_cluster(cluster_id):
    return jsonify(cluster_deletion.delete_cluster(cluster_id)), 202


@route(bp, "PUT", "/clusters/<cluster_id>/service/<service_name>/schema",
       summary="Store a service's schema (creates the service if no worker polled it yet)",
       auth_kind="management", tag="management", body=s.PUT_SERVICE_SCHEMA,
       max_body=2 * clusters.MAX_SCHEMA_BYTES + 1024,
       responses={204: None, 404: s.ERROR, 413: s.ERROR, **ERRORS})
def put_service_schema(cluster_id, service_name, body):
    _check_name(service_name)
    clusters.put_service_schema(cluster_id, service_name, body["schema"])
    return "", 204


@route(bp, "GET", "/clusters/<cluster_id>/service/<service_name>/schema", summary="A service's schema",
       auth_kind="management", tag="management", responses={200: s.SERVICE_SCHEMA, 404: s.ERROR, **ERRORS})
def get_service_schema(cluster_id, service_name):
    return jsonify(clusters.get_service_schema(cluster_id, service_name)), 200


def _check_name(service_name: str) -> None:
    """A service named in the path must be one a worker could poll (schemas.NAME)."""
    validation.validate(s.NAME, service_name, what="path parameter service_name")


# --- job admin ------------------------------------------------------------------------------------

def query_time(query: dict, name: str) -> dt.datetime | None:
    """An ISO 8601 query time as naive UTC (as the columns hold it); 400 naming the field."""
    text = query.get(name)
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(f"invalid query: {name} must be an ISO 8601 time, e.g. 2026-12-01T16:00:00Z",
                               {"fields": [{"field": name, "message": "must be an ISO 8601 time"}]}) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


@route(bp, "GET", "/clusters/<cluster_id>/jobs", summary="A cluster's jobs, newest first, filtered, paged by cursor",
       auth_kind="management", tag="management", query=s.JOBS_QUERY,
       responses={200: s.JOB_LIST, 404: s.ERROR, **ERRORS})
def list_jobs(cluster_id, query):
    return jsonify(admin.list_jobs(
        cluster_id, statuses=query.get("status"), service=query.get("service"), function=query.get("function"),
        created_after=query_time(query, "createdAfter"), created_before=query_time(query, "createdBefore"),
        limit=query["limit"], cursor=query.get("cursor"))), 200


@route(bp, "GET", "/clusters/<cluster_id>/jobs/<job_id>", summary="A job in full, with its activity events",
       auth_kind="management", tag="management", responses={200: s.JOB_DETAIL, 404: s.ERROR, **ERRORS})
def job_detail(cluster_id, job_id):
    return jsonify(admin.job_detail(cluster_id, job_id)), 200


@route(bp, "POST", "/clusters/<cluster_id>/jobs/<job_id>/rerun",
       summary="Re-run a failed or cancelled job as a new attempt (409 in any other state)",
       auth_kind="management", tag="management", responses={200: s.JOB_DETAIL, 404: s.ERROR, 409: s.ERROR, **ERRORS})
def rerun_job(cluster_id, job_id):
    return jsonify(admin.rerun(cluster_id, job_id)), 200
