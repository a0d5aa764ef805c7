"""HTTP layer: blueprints (thin: parse, guard, call the engine, respond) and JSON errors."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from .. import db
from ..errors import ApiError
from . import (access, assets, client_libraries, cluster_metrics, events, jobs, management, prometheus, registry,
               schedules, system)

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 404: "route_not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type", 408: "request_timeout"}


def register(app: Flask) -> None:
    for module in (system, management, jobs, events, schedules, access, cluster_metrics, prometheus, assets,
                   client_libraries, registry):
        app.register_blueprint(module.bp)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify(exc.body()), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 404:
            message = "no such route; GET /openapi.json lists every route"
        elif status == 405:
            message = f"this route does not accept that method; it accepts {', '.join(exc.valid_methods or [])}"
        elif status == 413:
            message = f"the request body is larger than the {app.config['MAX_CONTENT_LENGTH']} bytes allowed"
        body = {"error": {"code": _HTTP_CODES.get(status, "http_error"), "message": message, "details": None}}
        response = jsonify(body)
        if status == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response, status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        if db.is_unavailable(exc):
            body = {"error": {"code": "database_unavailable",
                              "message": "the database is not reachable or too busy right now; retry shortly",
                              "details": None}}
            return jsonify(body), 503
        body = {"error": {"code": "internal_error", "message": "an unexpected error occurred; it has been logged",
                          "details": None}}
        return jsonify(body), 500
