"""The two requests every call makes, POST /jobs and POST /jobs/:id/result, served before Flask.

Through Flask, a fifth of the control-plane's CPU per call went to its request context, hooks,
URL matching and response objects around these two views (bench/README.md, issue 17). Here they
are dispatched on their exact paths, before Flask's routing, and run the same code as through
Flask: the route's declaration (routing.py: credential and id headers, path parameter, body
limit and budget, JSON and schema), the view's own function (jobs.create_call,
jobs.report_result), the request id, the request log line and the HTTP metrics. Only a success
is answered here; an error's answer is made by the app's own error handlers, so it is the same
answer either way. Every other request, and any path that is not plainly one of these two, goes
to Flask unchanged.
"""
from __future__ import annotations

import functools
import json
import time

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_content_length, get_input_stream

from ..observability import prometheus, request_log
from ..observability.logging_setup import request_id
from . import jobs, routing

_CREATE, _RESULT = "/jobs", "/jobs/<job_id>/result"
_RESULT_HEAD, _RESULT_TAIL = "/jobs/", "/result"


def install(app: Flask) -> None:
    """Put the hot path in front of the app's WSGI callable (after every blueprint is registered)."""
    app.wsgi_app = HotPath(app, app.wsgi_app)


def _status_line(status: int) -> str:
    return f"{status} {HTTP_STATUS_CODES[status].upper()}"  # as werkzeug writes it


class HotPath:
    def __init__(self, app: Flask, fallback) -> None:
        self._app, self.fallback = app, fallback
        self._state = app.extensions["differential"]
        specs = {(spec.method, spec.path): spec for spec in routing.ROUTES}
        self._create, self._result = specs["POST", _CREATE], specs["POST", _RESULT]

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("SCRIPT_NAME"):
            return self.fallback(environ, start_response)
        if path == _CREATE:
            return self._serve(self._create, None, environ, start_response)
        if path.startswith(_RESULT_HEAD) and path.endswith(_RESULT_TAIL):
            job_id = path[len(_RESULT_HEAD):-len(_RESULT_TAIL)]
            if job_id and "/" not in job_id:
                try:  # as werkzeug decodes a path: WSGI's latin-1 text of the bytes, read as UTF-8
                    job_id = job_id.encode("latin-1").decode("utf-8", "replace")
                except UnicodeEncodeError:
                    return self.fallback(environ, start_response)
                return self._serve(self._result, job_id, environ, start_response)
        return self.fallback(environ, start_response)

    def _serve(self, spec: routing.RouteSpec, job_id: str | None, environ: dict, start_response):
        started = time.perf_counter()
        rid = request_log.incoming_or_new(environ.get("HTTP_X_REQUEST_ID"))
        token = request_id.set(rid)  # what is logged meanwhile names the request
        seen = _Seen()
        try:
            status, headers, body = self._answer(spec, job_id, environ, seen)
        except Exception as exc:  # answered by the app's error handlers, as through Flask
            status, headers, body = self._app_answer(environ, functools.partial(self._app.handle_user_exception, exc))
        finally:
            request_id.reset(token)
        prometheus.http_request("POST", spec.path, status, time.perf_counter() - started)
        request_log.answered(self._state.settings.request_log, rid, started, "POST", spec.path, seen.cluster_id,
                             environ.get("HTTP_X_MACHINE_ID"), status, len(body))
        headers.append((request_log.HEADER, rid))
        start_response(_status_line(status), headers)
        return [body]

    def _answer(self, spec: routing.RouteSpec, job_id: str | None, environ: dict, seen: "_Seen"):
        """(status, headers, body) of a request to `spec`, as its route declaration and view make it."""
        settings = self._state.settings
        sender = routing.cluster_sender(spec, environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_MACHINE_ID"),
                                        environ.get("HTTP_X_DEPLOYMENT_ID"), environ.get("REMOTE_ADDR"), settings)
        seen.cluster_id = sender.cluster_id
        if job_id is not None:
            routing.check_path_params({"job_id": job_id})
        length, limit = get_content_length(environ), routing.body_limit(spec, settings)
        grant = routing.take_budget(routing.body_budget(self._app), length, limit)
        # Flask's own request stream: the same limits, and the same error when a body ends early.
        stream = get_input_stream(environ, max_content_length=self._app.config["MAX_CONTENT_LENGTH"])
        if grant is None:
            routing.discard_body(stream)
            return self._app_answer(environ, routing.budget_spent)
        try:
            body = routing.parse_body(spec, routing.read_body(stream, length, limit))
            if job_id is None:
                created = jobs.create_call(settings, sender.cluster_id, sender.machine_id, sender.deployment_id, body)
                answer = json.dumps({"id": created}, separators=(",", ":")).encode() + b"\n"  # as jsonify writes it
                return 201, [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))], answer
            jobs.report_result(settings, sender.cluster_id, sender.machine_id, sender.deployment_id, job_id, body)
            return 204, [("Content-Type", "text/html; charset=utf-8")], b""  # as Flask answers `"", 204`
        finally:
            grant.release()

    def _app_answer(self, environ: dict, make):
        """(status, headers, body) of the answer `make()` gives inside a request context of the app:
        its error handlers' (called within the `except` that caught the error, so they log it)."""
        app = self._app
        with app.request_context(environ):
            response = app.make_response(make())
            return response.status_code, response.get_wsgi_headers(environ).to_wsgi_list(), response.get_data()


class _Seen:
    """What the request log line needs to know of a request that may fail half way."""

    cluster_id: str | None = None
