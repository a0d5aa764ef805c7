"""`GET /metrics`: the Prometheus exposition, and the hook that counts every HTTP request.

Guarded by a token of its own (METRICS_TOKEN) or the management secret, as a bearer token (the
original served it unauthenticated on a port of its own: audit U8); neither set, it answers 503.
`POST /metrics` on the same path is the SDKs' client events (api/jobs.py), untouched.
"""
from __future__ import annotations

import hmac
import time

from flask import Blueprint, Response, g, request

from ..errors import Unauthorized, Unavailable
from ..observability import prometheus
from . import schemas as s
from .auth import token_from_header
from .parking import parked_of
from .routing import route, state

bp = Blueprint("prometheus", __name__)

# A response schema may name its media type (openapi.MEDIA_TYPE); JSON otherwise.
_TEXT = {"type": "string", "description": "Prometheus text exposition format 0.0.4", "x-media-type": "text/plain"}


def require_scraper(header: str | None, metrics_token: str | None, management_secret: str | None) -> None:
    """A scrape's credential: METRICS_TOKEN or the management secret (auth kind "metrics")."""
    accepted = [secret for secret in (metrics_token, management_secret) if secret]
    if not accepted:
        raise Unavailable("GET /metrics is off: set METRICS_TOKEN (at least 16 characters, e.g. "
                          "$(openssl rand -hex 32)) or MANAGEMENT_SECRET and restart", code="metrics_token_not_set")
    token = token_from_header(header)
    if token is None:
        raise Unauthorized("missing credential: send 'Authorization: Bearer <METRICS_TOKEN or the management "
                           "secret>'", code="missing_credential")
    # Every candidate is compared (no early exit): the time taken says nothing about which matched.
    matched = [hmac.compare_digest(token.encode(), secret.encode()) for secret in accepted]
    if not any(matched):
        raise Unauthorized("the metrics token is not correct", code="invalid_credential")


@route(bp, "GET", "/metrics", summary="Prometheus metrics (jobs, latencies, queues, machines, HTTP, long polls)",
       auth_kind="metrics", tag="system", responses={200: _TEXT, 401: s.ERROR, 503: s.ERROR})
def metrics():
    settings = state().settings
    require_scraper(request.headers.get("Authorization"), settings.metrics_token, settings.management_secret)
    body = prometheus.exposition(settings.machine_timeout_seconds)
    return Response(body, status=200, content_type=prometheus.CONTENT_TYPE)


@bp.before_app_request
def _started() -> None:
    g.prometheus_started = time.perf_counter()


@bp.after_app_request
def _answered(response):
    started = g.pop("prometheus_started", None)
    if started is not None:
        method, rule = request.method, request.url_rule.rule if request.url_rule is not None else None
        parked = parked_of(response)
        if parked is not None:  # a long poll waiting in the worker: counted when it is answered
            parked.when_answered(lambda status, _size: prometheus.http_request(method, rule, status,
                                                                               time.perf_counter() - started))
        else:
            prometheus.http_request(method, rule, response.status_code, time.perf_counter() - started)
    return response
