"""Payloads the control-plane writes itself, in the SDKs' format (base64 of MessagePack).

A result over MAX_RESULT_BYTES is not stored; the call ends with this rejection instead, a
serialize-error map both SDKs rebuild into the error their caller sees, so the caller learns why
(the published SDK's worker dies on any answer but 204 to its result, so it cannot be told).
"""
from __future__ import annotations

import base64

import msgpack

RESULT_TOO_LARGE = "RESULT_TOO_LARGE"  # the code the Python SDK uses for the same case


def result_too_large(size: int, limit: int) -> str:
    error = {"name": "DifferentialError", "code": RESULT_TOO_LARGE,
             "message": f"the function's result was {size} bytes, more than the control-plane's "
                        f"MAX_RESULT_BYTES ({limit} bytes); it was not stored"}
    return base64.b64encode(msgpack.packb(error)).decode("ascii")
