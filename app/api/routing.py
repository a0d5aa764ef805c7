"""Route declarations: one decorator names a route's auth, body and query schemas and responses.

The declaration does the parsing and guarding before the view runs, and it is also what
/openapi.json is generated from, so every documented route is validated exactly as documented.
A body is read only after the route's guards (credential, `precondition`) pass, and never past the
route's limit (`max_body`, at most MAX_BODY_BYTES): checked against Content-Length before reading
and against the bytes read, so a chunked body over it answers 413 instead of being cut and parsed.
Big bodies take their bytes from the process's body budget (body_budget.py) while their request runs,
or, for a long poll parked in the worker (parking.py), until it is answered or given up.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Callable

from flask import Blueprint, current_app, g, jsonify, request

from ..engine import deployment_tokens, machines
from ..errors import BadRequest, NotFound, TooLarge, Unavailable
from . import auth, deployment_scope, registry_auth, validation
from .admission import BigBodyAdmission
from .body_budget import BodyBudget, Grant
from .parking import parked_of

_READ_CHUNK = 64 * 1024
# Bodies from this size on take their bytes from the body budget (smaller ones are bounded by the
# thread count); also the big-status-poll admission's threshold (api/jobs.py).
BIG_BODY_BYTES = 64 * 1024
_BUDGET_WAIT_SECONDS = 2.0


@dataclass
class RouteSpec:
    method: str
    path: str  # Flask form: /jobs/<job_id>
    summary: str
    auth: str | None  # "cluster", "management" or None
    body: dict | None
    body_required: bool
    query: dict | None
    responses: dict[int, dict | None]
    tag: str
    path_params: list[str] = field(default_factory=list)
    admission: BigBodyAdmission | None = None
    refused: Callable | None = None  # the answer when admission or the body budget refuses
    max_body: int | None = None  # this route's body limit in bytes (None: MAX_BODY_BYTES)
    precondition: Callable[[], None] | None = None  # raises when the route cannot serve; before the body is read
    polls: bool = False  # a worker's poll for jobs: what makes the caller a machine


ROUTES: list[RouteSpec] = []


def state():
    return current_app.extensions["differential"]


def request_base_url() -> str:
    """`scheme://host` as the client reached us: a proxy's X-Forwarded-Proto (http or https) wins over
    the connection's own scheme, so URLs handed out behind a TLS-terminating proxy stay https."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    scheme = forwarded if forwarded in ("http", "https") else request.scheme
    return f"{scheme}://{request.host}"


def route(bp: Blueprint, method: str, path: str, *, summary: str, auth_kind: str | None, tag: str,
          responses: dict[int, dict | None], body: dict | None = None, body_required: bool = True,
          query: dict | None = None, admission: BigBodyAdmission | None = None,
          refused: Callable | None = None, max_body: int | None = None,
          precondition: Callable[[], None] | None = None, polls: bool = False) -> Callable:
    """`admission`: big bodies of this route are read, then wait their turn to be parsed (or get
    `refused()` when too many wait, or when the body budget stays spent); the view may give the
    slot back early with `admission_releaser()`, else it is given back when the view ends.
    `max_body`: this route's body limit (below MAX_BODY_BYTES). `precondition()`: raises an
    ApiError when the route cannot serve now (a feature off), checked before the body is read.
    `polls`: the route is a worker's poll; its x-machine-id makes a machine (others only refresh one)."""
    if (admission is None) != (refused is None):
        raise TypeError("admission and refused go together")
    spec = RouteSpec(method, path, summary, auth_kind, body, body_required, query, responses, tag,
                     re.findall(r"<(?:\w+:)?(\w+)>", path), admission, refused, max_body, precondition, polls)
    ROUTES.append(spec)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def handler(**path_args):
            _guard(spec)
            check_path_params(path_args)
            if spec.precondition is not None:
                spec.precondition()
            kwargs = dict(path_args)
            limit = body_limit(spec)
            grant = take_budget(body_budget(current_app), request.content_length, limit) if spec.body is not None else None
            if spec.body is not None and grant is None:
                discard_body(request.stream)
                return spec.refused() if spec.refused else budget_spent()
            ticket = spec.admission.enter(request.content_length) if spec.admission else None
            if spec.admission and ticket is None:
                grant.release()
                discard_body(request.stream)
                return spec.refused()
            g.admission = ticket
            try:
                if spec.body is not None:
                    raw = read_body(request.stream, request.content_length, limit)
                    if ticket is not None and ticket.big:
                        ticket.wait()  # read while in line, parsed in turn
                    kwargs["body"] = parse_body(spec, raw)
                    raw = None  # a parked long poll must not keep its raw body besides the parsed one
                if spec.query is not None:
                    kwargs["query"] = validation.coerce_query(spec.query, request.args)
                answer = view(**kwargs)
                parked = parked_of(answer)
                if parked is not None and grant is not None:
                    # The parsed body stays with the poll while the worker holds it: so do its bytes.
                    parked.when_answered(lambda _status, _size, held=grant: held.release())
                    grant = None
                return answer
            finally:
                if ticket is not None:
                    ticket.release()
                if grant is not None:
                    grant.release()

        bp.add_url_rule(path, endpoint=view.__name__, view_func=handler, methods=[method])
        return handler

    return decorate


def _guard(spec: RouteSpec) -> None:
    settings = state().settings
    header = request.headers.get("Authorization")
    g.machine_id = request.headers.get("x-machine-id") or None
    g.deployment_id = request.headers.get("x-deployment-id") or None
    if spec.auth == "management":
        auth.require_management(header, settings.management_secret)
    elif spec.auth == "caller":  # the credential now, before any path check; the service in the view
        g.caller = auth.require_caller(header, request.view_args["cluster_id"], None)
        g.cluster_id = g.caller.cluster_id
    elif spec.auth == "registry":  # a registry token or the management secret (api/registry_auth.py)
        g.registry_reader = registry_auth.require_reader(header, settings.management_secret)
    elif spec.auth == "cluster":
        sender = cluster_sender(spec, header, request.headers.get("x-machine-id"),
                                request.headers.get("x-deployment-id"), request.remote_addr, settings)
        g.deployment_scope, g.cluster_id = sender.scope, sender.cluster_id
        g.machine_id, g.deployment_id = sender.machine_id, sender.deployment_id


@dataclass(frozen=True)
class Sender:
    """Who sent a request on a cluster-secret route, as its credential and headers say."""

    cluster_id: str
    machine_id: str | None
    deployment_id: str | None
    scope: deployment_tokens.Scope | None  # a deployment token's; None for the cluster secret


def cluster_sender(spec: RouteSpec, header: str | None, machine_header: str | None, deployment_header: str | None,
                   ip: str | None, settings) -> Sender:
    """The sender of a request on a cluster-secret route (401 or 403 when its credential may not
    use it), its id headers checked; a poll makes its machine, any other request refreshes it."""
    machine_id, deployment_id = machine_header or None, deployment_header or None
    # A deployment's function polls with a token scoped to its service's worker routes (deployment_scope.py).
    scope = deployment_scope.authenticate(header, worker_route=spec.tag == "worker")
    if scope is not None:
        cluster_id, deployment_id = scope.cluster_id, scope.deployment_id
        machine_id = deployment_scope.machine_id_for(scope, machine_id)
    else:
        cluster_id = auth.require_cluster(header)
    # Checked before any use: they go to VARCHAR(200) columns.
    _check_header("x-machine-id", machine_header)
    _check_header("x-deployment-id", deployment_header)
    if machine_id and spec.polls:  # a poll makes its sender a machine (engine/machines.py)
        machines.ping(cluster_id, machine_id, ip=ip, deployment_id=deployment_id,
                      machine_timeout_seconds=settings.machine_timeout_seconds)
    elif machine_id:  # any other request keeps a machine alive, but makes none: callers are not machines
        machines.touch(cluster_id, machine_id, ip=ip, machine_timeout_seconds=settings.machine_timeout_seconds)
    return Sender(cluster_id, machine_id, deployment_id, scope)


def check_path_params(path_args: dict) -> None:
    for name, value in path_args.items():
        if isinstance(value, str) and not validation.storable_text(value):
            raise BadRequest(f"path parameter {name} must not contain NUL characters or unpaired surrogates",
                             {"parameter": name})
        if isinstance(value, str) and len(value) > MAX_ID_LENGTH:  # no such row can exist
            raise NotFound(f"no {name.split('_')[0]} has an id of {len(value)} characters "
                           f"(at most {MAX_ID_LENGTH})", {"parameter": name},
                           code=f"{name.rsplit('_', 1)[0]}_not_found")


MAX_ID_LENGTH = 200  # of the id and name columns (models.py): a longer path or header value fits none


def _check_header(name: str, value: str | None) -> None:
    if value and len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{name} must be at most {MAX_ID_LENGTH} characters", {"header": name})
    if value and not validation.storable_text(value):
        raise BadRequest(f"{name} must not contain NUL characters", {"header": name})


def discard_body(stream) -> None:
    """Read the body without keeping it. gunicorn drains at most 64 KiB of an unread body before
    it reuses a kept-alive connection and closes it otherwise; the published SDK dies on the
    "other side closed" that follows (a node10k run did, on a refused 300 KB poll)."""
    while stream.read(_READ_CHUNK):
        pass


def body_limit(spec: RouteSpec, settings=None) -> int:
    """The largest body this route reads: its own limit, never above MAX_BODY_BYTES."""
    largest = (settings or state().settings).max_body_bytes
    return min(spec.max_body, largest) if spec.max_body else largest


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"the request body is larger than the {limit} bytes this route accepts",
                    {"limitBytes": limit})


def body_budget(app) -> BodyBudget:
    """This app's body budget (one per app, so one per process in production)."""
    extensions = app.extensions
    budget = extensions.get("differential.body_budget")
    if budget is None:  # setdefault keeps the first made
        budget = extensions.setdefault("differential.body_budget", BodyBudget(
            capacity_bytes=extensions["differential"].settings.body_budget_bytes, threshold_bytes=BIG_BODY_BYTES,
            max_wait_seconds=_BUDGET_WAIT_SECONDS))
    return budget


def take_budget(budget: BodyBudget, length: int | None, limit: int) -> Grant | None:
    """A body's bytes from the budget (a body of unknown length, chunked, may be as big as the limit)."""
    if length is not None and length > limit:
        raise _too_large(limit)  # before anything is read or taken
    return budget.take(limit if length is None else length)


def budget_spent():
    error = Unavailable("too many big request bodies are being worked on in this process; retry shortly",
                        {"retryAfterSeconds": 1}, code="body_budget_spent")
    response = jsonify(error.body())
    response.headers["Retry-After"] = "1"
    return response, 503


def read_body(stream, length: int | None, limit: int) -> bytes | bytearray:
    """The body, never more than `limit` bytes: a longer one (e.g. chunked, with no Content-Length)
    answers 413 rather than being cut off and parsed (a declared length was checked before)."""
    if length is not None and length < _READ_CHUNK:  # most bodies: one read of what was declared
        first = stream.read(length)
        if len(first) == length:
            return first
        raw = bytearray(first)
    else:
        raw = bytearray()
    while chunk := stream.read(min(_READ_CHUNK, limit + 1 - len(raw))):
        raw += chunk
        if len(raw) > limit:
            raise _too_large(limit)
    return raw


def parse_body(spec: RouteSpec, raw: bytes | bytearray):
    if not raw or raw.isspace():
        if spec.body_required:
            raise BadRequest("the request body is empty; send a JSON object", code="empty_body")
        return validation.validate(spec.body, {})  # an optional body's defaults apply too
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", code="malformed_json") from None
    except RecursionError:  # nested past what json.loads can parse: name the field, as validate would
        raise validation.nesting_error(raw) from None
    return validation.validate(spec.body, value)


def admission_releaser() -> Callable[[], None] | None:
    """What gives this request's admission slot back (a long poll done with its reading); callable
    after the request's context is gone (a parked poll: api/parking.py)."""
    ticket = g.get("admission")
    return None if ticket is None else ticket.release


def require_machine_id() -> str:
    return machine_id_required(g.machine_id)


def machine_id_required(machine_id: str | None) -> str:
    """The sender's machine id, or 400 naming the header."""
    if not machine_id:
        raise BadRequest("this route needs the x-machine-id header naming the calling machine",
                         {"header": "x-machine-id"}, code="missing_machine_id")
    return machine_id
