"""The worker's own answers (a refused or timed-out request that never reached the app), in the
app's JSON error shape, {"error": {"code", "message", "details"}} (app/errors.py), not gunicorn's
HTML page."""
from __future__ import annotations

import json
from http import HTTPStatus

CODES = {400: "bad_request", 403: "forbidden", 408: "request_timeout", 413: "payload_too_large",
         414: "uri_too_long", 417: "expectation_failed", 431: "header_fields_too_large",
         500: "internal_error", 501: "not_implemented", 503: "unavailable"}


def error(status: int, message: str, request_id: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection; `request_id` goes in X-Request-Id,
    as on the app's answers (app/observability/request_log.py)."""
    body = json.dumps({"error": {"code": CODES.get(status, "http_error"), "message": message,
                                 "details": None}}, separators=(",", ":")).encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"X-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def status_of(answer: bytes) -> int:
    """The status of a response gunicorn wrote (it classifies its parser's errors; we reword them)."""
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 500
