"""Synchronous calls (POST /clusters/:id/execute): make a call from JSON, wait for it, answer JSON.

The call is made through the same create as POST /jobs (group commit, executionId, cache), its
arguments packed as both SDKs pack them (arguments.py), and waited for through the same long poll
as GET /jobs/:id (the signals hub: woken by the result, no busy loop). The answer, for curl:

- finished: 200 with `outcome` (resolution, rejection, failure, cancelled: the metrics' words),
  `status` and `state` as GET /jobs/:id answers them, and `result` (the function's value as JSON)
  or `error` (the function's error, or why the control-plane ended the call);
- not finished within the wait: 202 with `jobId`, `status` and `state`; the caller polls
  GET /clusters/:id/execute/:jobId (or GET /jobs/:id) for the same answer.
"""
from __future__ import annotations

from ..errors import TooLarge, ValidationFailed
from ..observability.events import events
from . import access_points, call_config, jobs, steps
from .arguments import ArgumentsError, pack_arguments, unpack_value
from .states import TERMINAL, EventType, JobStatus, ResultType

# What the published SDK's caller throws for a call that ended without a result (bin/Differential.js).
DID_NOT_COMPLETE = "EXECUTION_DID_NOT_COMPLETE"


def start(cluster_id: str, grant: access_points.Grant | None, service: str, function: str, args: list,
          config: dict, *, max_args_bytes: int) -> str:
    """Create the call (or find the one its executionId or cache key names); its job id."""
    try:
        target_args = pack_arguments(args)
    except ArgumentsError as exc:
        message = str(exc).replace("arguments", "args", 1)
        raise ValidationFailed(f"invalid request body: {message}",
                               {"fields": [{"field": message.split(":")[0], "message": message}]}) from None
    if len(target_args) > max_args_bytes:
        raise TooLarge(f"args packed are {len(target_args)} bytes, more than the {max_args_bytes} (MAX_ARGS_BYTES) "
                       "a call may carry", {"field": "args", "limitBytes": max_args_bytes})
    job_id, _created = jobs.create_job(cluster_id, service, function, target_args, call_config.from_wire(config))
    if grant is not None:
        events.record(cluster_id, EventType.ACCESS_POINT_USED, job_id=job_id, service=service,
                      accessPoint=grant.name, targetFn=function)
        access_points.record_use(grant)
    return job_id


def status(cluster_id: str, job_id: str) -> dict:
    """The job's status row (404 if it is not a job of this cluster)."""
    return jobs.job_status(cluster_id, job_id)


def wait_steps(cluster_id: str, job_id: str, seconds: float, stopping=None) -> steps.Steps[dict]:
    """Wait for the call to finish, up to `seconds`: its status row (a long poll: steps.py)."""
    return jobs.job_status_steps(cluster_id, job_id, seconds, stopping)


def answer(row: dict) -> tuple[int, dict]:
    """(HTTP status, body) of a job's status row, as the module docstring says."""
    state = row["state"]
    head = {"jobId": row["id"], "status": row["status"], "state": state}
    if state not in TERMINAL:
        return 202, head
    result_type = row["resultType"]
    body = {**head, "resultType": result_type}
    if state == JobStatus.SUCCESS and result_type == ResultType.RESOLUTION:
        return 200, {**body, "outcome": ResultType.RESOLUTION, "result": _decoded(row["result"])}
    if state == JobStatus.SUCCESS:
        return 200, {**body, "outcome": ResultType.REJECTION, "error": _error(row["result"], None)}
    # The control-plane ended it: a deadline or a cancel wrote a rejection naming why; spent attempts none.
    return 200, {**body, "outcome": state, "reason": row["reason"], "error": _error(row["result"], row["reason"])}


def _decoded(text: str | None):
    try:
        return unpack_value(text)
    except ArgumentsError as exc:  # a worker stored bytes that are not MessagePack: say so, never a 500
        return {"$undecodable": str(exc), "base64": text}


def _error(text: str | None, reason: str | None) -> dict:
    """A rejection as an error object: {name, message, ...} (code, stack and the error's own fields
    as the SDK serialised them)."""
    if not text:
        return {"name": "DifferentialError", "code": DID_NOT_COMPLETE,
                "message": reason or "the control-plane gave up on the call: its attempts were spent (each stalled "
                                     "or timed out)"}
    value = _decoded(text)
    if isinstance(value, list) and len(value) >= 2 and isinstance(value[0], str) and isinstance(value[1], str):
        value = {"name": value[0], "message": value[1]}  # msgpackr's form of a bare JS Error
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return {"name": value.get("name") if isinstance(value.get("name"), str) else "Error", **value}
    return {"name": "Error", "message": "the function threw a value that is not an error", "value": value}

