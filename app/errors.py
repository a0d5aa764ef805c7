"""Error types and the JSON body they become: {"error": {"code", "message", "details"}}.

Raised anywhere (engine included, which knows nothing of HTTP beyond a status number); the api
package turns them, and every werkzeug/HTTP error, into JSON responses.
"""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, details: Any = None, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class ValidationFailed(BadRequest):
    code = "validation_failed"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    """The credential is good, and does not allow this (an access point calling another service)."""
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class TooLarge(ApiError):
    status, code = 413, "payload_too_large"


class NotImplementedFeature(ApiError):
    status, code = 501, "not_configured"


class UpstreamFailed(ApiError):
    """A request we made to a cloud service (AWS) on the client's behalf failed."""
    status, code = 502, "aws_request_failed"


class Unavailable(ApiError):
    status, code = 503, "unavailable"
