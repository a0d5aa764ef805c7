"""The management API: clusters and what runs in them, authenticated by the management secret."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..engine import cancel, clusters
from . import auth, schemas as s
from .routing import route

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
    return jsonify(clusters.cluster_details(cluster_id, query["limit"])), 200


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
