"""Payloads the control-plane writes itself, in the SDKs' format (base64 of MessagePack).

Each is a serialize-error map, which both SDKs rebuild into the error their caller sees, stored as
the call's rejection, so the caller learns why its call ended without a result of its own:
- a result over MAX_RESULT_BYTES is not stored (the published SDK's worker dies on any answer but
  204 to its result, so it cannot be told);
- a cancelled call (the caller or an operator cancelled it);
- a call whose queue or call deadline passed.
"""
from __future__ import annotations

import base64

import msgpack

RESULT_TOO_LARGE = "RESULT_TOO_LARGE"  # the code the Python SDK uses for the same case
CANCELLED = "CANCELLED"
QUEUE_DEADLINE = "QUEUE_DEADLINE"
CALL_DEADLINE = "CALL_DEADLINE"
CANCELLED_ERROR = "DifferentialCancelledError"
DEADLINE_ERROR = "DifferentialDeadlineError"


def _pack(error: dict) -> str:
    return base64.b64encode(msgpack.packb(error)).decode("ascii")


def result_too_large(size: int, limit: int) -> str:
    return _pack({"name": "DifferentialError", "code": RESULT_TOO_LARGE,
                  "message": f"the function's result was {size} bytes, more than the control-plane's "
                             f"MAX_RESULT_BYTES ({limit} bytes); it was not stored"})


def cancelled(job_id: str, service: str, target_fn: str, reason: str) -> str:
    """The rejection of a cancelled call; `reason` says who cancelled it (and why, if given)."""
    return _pack({"name": CANCELLED_ERROR, "code": CANCELLED, "jobId": job_id,
                  "message": f"call {job_id} of {service}.{target_fn} was {reason}"})


def deadline_exceeded(job_id: str, code: str, reason: str) -> str:
    """The rejection of a call whose deadline passed (`code` QUEUE_DEADLINE or CALL_DEADLINE)."""
    return _pack({"name": DEADLINE_ERROR, "code": code, "jobId": job_id, "message": f"call {job_id}: {reason}"})
