"""The job protocol: what workers and callers (the SDKs) speak, authenticated by a cluster secret.

Every long poll holds a place in this process's poll budget (engine/fairness.py) while it waits:
past its cluster's or machine's share it waits a short pause at most, or answers at once with what
it has, as at ttl 0, which both SDKs accept (audit H3). The polls are generators of steps, which
the worker parks without a thread while they wait (api/parking.py).
"""
from __future__ import annotations

import random
import socket

from flask import Blueprint, g, jsonify, request

from ..engine import call_config, cancel, jobs, machines, payloads, queue
from ..engine.fairness import PollBudget, PollLimits
from ..engine.limits import Limits
from ..engine.states import ResultType
from ..errors import TooLarge
from ..observability.events import events
from . import deployment_scope, parking, schemas as s
from .admission import BigBodyAdmission
from .routing import BIG_BODY_BYTES, admission_releaser, machine_id_required, require_machine_id, route, state

bp = Blueprint("jobs", __name__)

_MAX_EXECUTION_MS = 2**31 - 1
ERRORS = {400: s.ERROR, 401: s.ERROR}


def _disconnected(sock) -> bool:
    """True when the client closed its connection (EOF is readable); False if unknown or open."""
    if sock is None:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _wait_seconds(ttl_ms: int) -> float:
    return min(ttl_ms, s.MAX_WAIT_MS) / 1000


_SPREAD = 0.05


def _spread(ttl_ms: int) -> int:
    """A worker's long poll ends up to a twentieth of its wait early, at random (never later: the
    ttl is the most it may wait). Workers that started together (a deploy, a restart) would
    otherwise poll again in the same instant every ttl, for ever: a burst of claims that calls
    wait behind (bench/README.md, "Many tenants"). Each early return shifts a worker by a random
    amount, so a fleet drifts apart within a few polls."""
    wait_ms = min(ttl_ms, s.MAX_WAIT_MS)
    return wait_ms - int(wait_ms * _SPREAD * random.random())


_POLLS = PollBudget()


def poll_place(machine_id: str | None, ttl_ms: int):
    """A place in the poll budget for this request; `with` it to learn how long the poll may wait."""
    st = state().settings
    parks = parking.capacity()
    if parks:  # the worker holds waiting polls without threads: its connections bound them
        limits = PollLimits.parked(parks, per_cluster=st.long_polls_per_cluster,
                                   per_machine=st.long_polls_per_machine, pause_seconds=st.long_poll_pause_seconds)
    else:  # polls leave alone the threads of short requests and those big bodies can hold in admission
        limits = PollLimits.for_threads(st.gunicorn_threads, per_cluster=st.long_polls_per_cluster,
                                        per_machine=st.long_polls_per_machine,
                                        reserve=st.long_poll_thread_reserve + _BIG_STATUS_POLLS.capacity,
                                        pause_seconds=st.long_poll_pause_seconds)
    return _POLLS.admit(g.cluster_id, machine_id, _wait_seconds(ttl_ms), limits)


@route(bp, "POST", "/jobs-request", summary="Claim jobs for this machine (long poll) and register the service",
       auth_kind="cluster", tag="worker", body=s.JOBS_REQUEST, responses={200: s.CLAIMED_JOBS, **ERRORS},
       polls=True)
def jobs_request(body):
    machine_id = require_machine_id()
    deployment_scope.require_service(body["service"])  # a deployment token polls its own service only
    machines.register_service(g.cluster_id, body["service"], body.get("functions"), body.get("concurrency"))
    timeout = state().settings.machine_timeout_seconds
    cluster_id, service, ip, deployment_id = g.cluster_id, body["service"], request.remote_addr, g.deployment_id
    machines.worker_polled(cluster_id, service, machine_id, machine_timeout_seconds=timeout)
    client = request.environ.get("gunicorn.socket")

    def heartbeat():  # keeps a machine parked in this poll alive when MACHINE_TIMEOUT_SECONDS < the poll
        machines.ping(cluster_id, machine_id, ip=ip, deployment_id=deployment_id, machine_timeout_seconds=timeout)
        machines.worker_polled(cluster_id, service, machine_id, machine_timeout_seconds=timeout)

    place, stopping = poll_place(machine_id, _spread(body["ttl"])), state().stopping
    limits = Limits.declared(body.get("concurrency"), body.get("functions"))

    def poll():
        with place as wait:
            # A dead (e.g. SIGKILLed) worker's orphaned poll neither claims jobs nor keeps the machine alive.
            return (yield from queue.claim_steps(cluster_id, service, machine_id, body["limit"], wait,
                                                 stopping=stopping, alive=lambda: not _disconnected(client),
                                                 heartbeat=heartbeat, heartbeat_every=timeout / 4, limits=limits))
    return parking.answer(poll())  # always 200 with an array: a 204 kills the published SDK's worker


@route(bp, "POST", "/jobs/<job_id>/result", summary="Report a job's result (fenced to the current attempt)",
       auth_kind="cluster", tag="worker", body=s.JOB_RESULT, responses={204: None, **ERRORS})
def job_result(job_id, body):
    report_result(state().settings, g.cluster_id, g.machine_id, g.deployment_id, job_id, body)
    # A fenced (late, duplicate, foreign) result also answers 204: the published SDK kills its
    # process on any other answer. The activity log records why it was dropped.
    return "", 204


def report_result(settings, cluster_id: str, machine_id: str | None, deployment_id: str | None, job_id: str,
                  body: dict) -> None:
    """What POST /jobs/:id/result does (also served by hot_path.py)."""
    machine_id = machine_id_required(machine_id)
    elapsed = body.get("functionExecutionTime")
    result, result_type = body["result"], body["resultType"]
    limit = settings.max_result_bytes
    if len(result) > limit:  # stored as the call's rejection naming the limit; the worker still gets 204
        result, result_type = payloads.result_too_large(len(result), limit), ResultType.REJECTION
    # Clamped to the column's range (int32 ms, ~24 days): an absurd client value must not turn a
    # result into a 500 (and a 400 would make the published SDK kill its process).
    queue.persist_result(cluster_id, job_id, machine_id, result, result_type,
                         None if elapsed is None else min(int(elapsed), _MAX_EXECUTION_MS), deployment_id=deployment_id)


@route(bp, "GET", "/services/<service>", summary="Whether any machine polls this service: live workers (polled "
       "within MACHINE_TIMEOUT_SECONDS) and the last poll", auth_kind="cluster", tag="caller",
       responses={200: s.SERVICE_WORKERS, **ERRORS})
def service_liveness(service):
    return jsonify(machines.service_liveness(g.cluster_id, service, state().settings.machine_timeout_seconds)), 200


@route(bp, "POST", "/metrics", summary="Store client events (function invocations, resource probes)",
       auth_kind="cluster", tag="worker", body=s.METRICS, responses={204: None, **ERRORS})
def client_metrics(body):
    for event in body["events"]:
        tags = event.get("tags") or {}
        events.record(g.cluster_id, event["type"], machine_id=g.machine_id, deployment_id=g.deployment_id,
                      service=tags.get("service"),
                      meta={**(event.get("intFields") or {}), **tags, "clientTimestamp": event.get("timestamp")})
    return "", 204


@route(bp, "POST", "/jobs", summary="Create a job (a call)", auth_kind="cluster", tag="caller",
       body=s.CREATE_JOB, responses={201: s.CREATED_JOB, 409: s.ERROR, **ERRORS})
def create_job(body):
    return jsonify({"id": create_call(state().settings, g.cluster_id, g.machine_id, g.deployment_id, body)}), 201


def create_call(settings, cluster_id: str, machine_id: str | None, deployment_id: str | None, body: dict) -> str:
    """What POST /jobs does (also served by hot_path.py): the new job's id (or the one its executionId made)."""
    limit = settings.max_args_bytes
    if len(body["targetArgs"]) > limit:
        raise TooLarge(f"targetArgs is {len(body['targetArgs'])} bytes, more than the {limit} (MAX_ARGS_BYTES) "
                       "a call may carry", {"field": "targetArgs", "limitBytes": limit})
    config = call_config.from_wire(body["callConfig"])  # the schema's defaults are filled in
    job_id, _created = jobs.create_job(cluster_id, body["service"], body["targetFn"], body["targetArgs"], config,
                                       machine_id=machine_id, deployment_id=deployment_id)
    return job_id


@route(bp, "GET", "/jobs/<job_id>", summary="A job's status and result (long poll until finished or ttl)",
       auth_kind="cluster", tag="caller", query=s.JOB_STATUS_QUERY,
       responses={200: s.JOB_STATUS, 404: s.ERROR, **ERRORS})
def job_status(job_id, query):
    place, cluster_id, stopping = poll_place(g.machine_id, query["ttl"]), g.cluster_id, state().stopping

    def poll():
        with place as wait:
            return (yield from jobs.job_status_steps(cluster_id, job_id, wait, stopping=stopping))
    return parking.answer(poll())


@route(bp, "POST", "/jobs/<job_id>/cancel", summary="Cancel a call in flight (answers its status, as GET /jobs/:id)",
       auth_kind="cluster", tag="caller", body=s.CANCEL_JOB, body_required=False,
       responses={200: s.JOB_STATUS, 404: s.ERROR, 409: s.ERROR, **ERRORS})
def cancel_job(job_id, body):
    return jsonify(cancel.cancel_job(g.cluster_id, job_id, by=cancel.BY_CALLER, text=body.get("reason"))), 200


# About 2,000 ids and up: the published SDK's storm of overlapping polls (see admission.py). A
# poll refused because 64 already wait (16 of its cluster) gets `[]`, as a superseded poll does:
# the SDK asks again for ids missing from an answer, and its newer polls carry them.
_BIG_STATUS_POLLS = BigBodyAdmission(threshold_bytes=BIG_BODY_BYTES, slots=1, max_waiting=64, max_waiting_per_cluster=16,
                                     cluster=lambda: g.cluster_id)


def _no_statuses_yet():
    return jsonify([]), 200


@route(bp, "POST", "/batch-jobs-status-request",
       summary="Statuses of many jobs (long poll: returns the finished ones as soon as any is)",
       auth_kind="cluster", tag="caller", body=s.BATCH_STATUS_REQUEST, responses={200: s.JOB_STATUSES, **ERRORS},
       admission=_BIG_STATUS_POLLS, refused=_no_statuses_yet)
def batch_status(body):
    # No 1,000-id cap: the published SDK sends every outstanding call's id in one request.
    big = (request.content_length or 0) >= _BIG_STATUS_POLLS.threshold_bytes
    place, cluster_id, machine_id, st = poll_place(g.machine_id, body["ttl"]), g.cluster_id, g.machine_id, state()
    release = admission_releaser()

    def poll():
        with place as wait:
            return (yield from jobs.batch_status_steps(
                cluster_id, body["jobIds"], wait, stopping=st.stopping, machine_id=machine_id, after_reading=release,
                result_bytes=st.settings.max_status_result_bytes,
                big_budget=st.settings.big_polls_per_cluster if big else None))
    return parking.answer(poll())
