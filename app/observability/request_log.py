"""One line per request, and the request id that ties every line of a request together.

The id comes from the client's `X-Request-Id` when that is short and plain (at most 64 of
[A-Za-z0-9._-], so it cannot forge a log line or carry much), else it is made here; every answer
the app gives carries it back in `X-Request-Id`, errors and long polls included. While the request
is served it is in `logging_setup.request_id`, so every record logged meanwhile names it.

The line is written when the answer is ready: a long poll gives one line when it ends, with its
whole wait as its duration. Its route is the Flask rule (`/jobs/<job_id>`: no ids, no secrets in
paths); a path that matched none is cut and cleaned. REQUEST_LOG=errors keeps only answers of 400
and up, `off` none (the header stays). gunicorn's own access log (ACCESS_LOG) is separate and off by
default; when on, its lines end with the same request id.
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time

from flask import Flask, Response, g, request

from .logging_setup import request_id

HEADER = "X-Request-Id"
_PLAIN = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
_PATH_CHARS = 120
_ID_CHARS = 64

log = logging.getLogger("app.request")


def install(app: Flask, mode: str) -> None:
    """`mode`: REQUEST_LOG (all, errors or off). Ours run first before the request and last after it."""
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    app.after_request_funcs.setdefault(None, []).insert(0, _finisher(mode))  # run in reverse order
    app.teardown_request_funcs.setdefault(None, []).append(_end)


def incoming_or_new(value: str | None) -> str:
    """The client's request id when it is plain enough to log, else a new one."""
    return value if value and _PLAIN.match(value) else _new_id()


# A made id is 16 hex characters: a random prefix of this process, then a counter. Ids only need to
# be unique, not unguessable, and os.urandom per request cost a tenth of a worker's busy time under
# a 10,000-call burst (py-spy, bench burst10k). The prefix is drawn again after a fork.
_prefix: tuple[int, str] = (0, "")
_counter = itertools.count()


def _new_id() -> str:
    global _prefix
    pid = os.getpid()
    if _prefix[0] != pid:
        _prefix = (pid, secrets.token_hex(4))
    return f"{_prefix[1]}{next(_counter) & 0xFFFFFFFF:08x}"


def _begin() -> None:
    g._request_started = time.perf_counter()
    g._request_id_token = request_id.set(incoming_or_new(request.headers.get(HEADER)))


def _finisher(mode: str):
    def finish(response: Response) -> Response:
        rid = request_id.get()
        if rid is None:  # a hook before ours answered or failed: still an id for this answer
            rid = incoming_or_new(request.headers.get(HEADER))
        response.headers[HEADER] = rid
        if mode == "off":
            return response
        parked = getattr(response, "parked", None)  # a long poll waiting in the worker (api/parking.py)
        if parked is not None:  # its line is written when it is answered
            line = _Line.of_request(rid)
            parked.when_answered(lambda status, size: line.write(status, size) if _logs(mode, status) else None)
        elif _logs(mode, response.status_code) and log.isEnabledFor(_level(response.status_code)):
            _Line.of_request(rid).write(response.status_code, response.content_length)  # None when streamed
        return response

    return finish


def answered(mode: str, rid: str, started: float, method: str, route: str, cluster_id: str | None,
             machine: str | None, status: int, size: int) -> None:
    """The line of a request answered outside Flask's hooks (api/hot_path.py), as `finish` writes it."""
    if _logs(mode, status) and log.isEnabledFor(_level(status)):
        _Line(rid, started, method, route, cluster_id, machine).write(status, size)


def _logs(mode: str, status: int) -> bool:
    return mode == "all" or (mode == "errors" and status >= 400)


def _level(status: int) -> int:
    return logging.WARNING if status >= 500 else logging.INFO


class _Line:
    """What the line of this request says, read from its context; written once the answer is made."""

    def __init__(self, rid: str, started: float | None, method: str, route: str, cluster_id: str | None,
                 machine: str | None) -> None:
        self.rid, self.started, self.method, self.route = rid, started, method, route
        self.cluster_id, self.machine = cluster_id, machine

    @classmethod
    def of_request(cls, rid: str) -> "_Line":
        """The line of the request in this context (Flask's)."""
        req, ctx = request._get_current_object(), g._get_current_object()  # one context lookup each
        rule = req.url_rule
        return cls(rid, ctx.get("_request_started"), req.method,
                   rule.rule if rule is not None else _clean(req.path, _PATH_CHARS), ctx.get("cluster_id"),
                   req.headers.get("x-machine-id"))

    def write(self, status: int, size: int | None) -> None:
        level = _level(status)
        if not log.isEnabledFor(level):  # LOG_LEVEL above it: no line to build
            return
        started, route, cluster_id, machine = self.started, self.route, self.cluster_id, self.machine
        duration_ms = round((time.perf_counter() - started) * 1000, 1) if started is not None else None
        fields = {"method": self.method, "route": route, "status": status, "durationMs": duration_ms,
                  "bytes": size}
        if cluster_id:
            fields["clusterId"] = cluster_id
        if machine:
            fields["machineId"] = _clean(machine, _ID_CHARS)
        text = (f"{fields['method']} {route} {status} {'-' if duration_ms is None else duration_ms}ms "
                f"{'-' if size is None else size}B")
        if cluster_id:
            text += f" cluster={cluster_id}"
        if machine:
            text += f" machine={fields['machineId']}"
        log.log(level, text, extra={"http": fields, "request_id": self.rid})


def _end(_exc: BaseException | None) -> None:
    token = g.pop("_request_id_token", None)
    if token is not None:
        try:
            request_id.reset(token)
        except ValueError:  # set in another context (cannot happen in one thread; never fail a request)
            request_id.set(None)


def _clean(value: str, limit: int) -> str:
    """Printable ASCII only, at most `limit` characters: a path or header cannot break a line."""
    cleaned = _UNPRINTABLE.sub("?", value[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."
