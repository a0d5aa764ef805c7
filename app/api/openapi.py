"""OpenAPI 3.1 document generated from the route declarations (our schemas are JSON Schema,
which OpenAPI 3.1 takes as they are).

Each operation names its credential (`security`, from the route's auth kind; `[]`: public) and
every error status its declaration implies besides those it declares (`implied_errors`), all with
the error schema, so clients and the fuzz test know every answer a route can give.
"""
from __future__ import annotations

import re

from . import schemas as s
from .routing import ROUTES, RouteSpec

_DESCRIPTIONS = {200: "OK", 201: "Created", 204: "No content", 400: "Invalid request", 401: "Missing or wrong credential",
                 403: "The credential may not do this", 404: "Not found", 409: "Conflict", 413: "Body too large",
                 429: "Too many requests", 503: "Unavailable"}

# A route's auth kind -> the credentials that pass it (any one of them).
MEDIA_TYPE = "x-media-type"  # a response schema's key naming its media type, when it is not JSON

SECURITY = {
    "cluster": [{"clusterSecret": []}],
    "management": [{"managementSecret": []}],
    "caller": [{"accessPoint": []}, {"clusterSecret": []}],
    "metrics": [{"metricsToken": []}, {"managementSecret": []}],
    "registry": [{"registryToken": []}, {"managementSecret": []}],
    None: [],
}

SECURITY_SCHEMES = {
    "clusterSecret": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "'Basic <cluster API secret>'"},
    "managementSecret": {"type": "apiKey", "in": "header", "name": "Authorization",
                         "description": "'Basic <management secret>'"},
    "accessPoint": {"type": "apiKey", "in": "header", "name": "Authorization",
                    "description": "'Bearer <access-point token>': calls the services it allows, of its cluster"},
    "metricsToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                     "description": "'Bearer <METRICS_TOKEN>'"},
    "registryToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "'Bearer <registry token>' (npm's _authToken), or HTTP Basic with the token as "
                                     "the password (pip): reads one cluster's packages"},
}


def implied_errors(spec: RouteSpec) -> dict[int, str]:
    """The error statuses a route can answer because of how it is declared (status -> why)."""
    errors: dict[int, str] = {}
    if spec.body is not None or spec.query or spec.path_params or spec.auth == "cluster":
        errors[400] = "Invalid request (the field, parameter or header is named in details)"
    if spec.auth is not None:
        errors[401] = "Missing or wrong credential"
    if spec.auth == "caller":
        errors[403] = "The access point may not call this service"
    if spec.path_params:  # includes an id longer than any stored one, which is not looked up (routing.py)
        errors[404] = "Not found"
    if spec.body is not None:  # every body has a limit
        errors[413] = (f"Body larger than {spec.max_body} bytes" if spec.max_body
                       else "Body larger than MAX_BODY_BYTES, or a field over its own limit (targetArgs: MAX_ARGS_BYTES)")
    if spec.auth is not None or spec.body is not None:
        reasons = ["the database is unreachable or too busy"]
        if spec.auth == "management":
            reasons.append("the management API is off (MANAGEMENT_SECRET unset)")
        if spec.body is not None and spec.refused is None:
            reasons.append("too many big bodies at once (see Retry-After)")
        errors[503] = "Unavailable: " + "; ".join(reasons)
    return errors


def document() -> dict:
    paths: dict[str, dict] = {}
    for spec in ROUTES:
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + _camel(m.group(1)) + "}", spec.path)
        op: dict = {"summary": spec.summary, "operationId": f"{spec.method.lower()}_{path}", "tags": [spec.tag],
                    "responses": {}}
        params = [{"name": _camel(p), "in": "path", "required": True, "schema": s.ID} for p in spec.path_params]
        if spec.query:
            for name, prop in spec.query.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": False, "schema": prop})
        if spec.auth == "cluster":
            for header in ("x-machine-id", "x-deployment-id"):
                params.append({"name": header, "in": "header", "required": False,
                               "schema": {"type": "string", "maxLength": 200}})
        if spec.auth not in SECURITY:
            raise ValueError(f"{spec.method} {spec.path}: auth kind {spec.auth!r} has no security scheme")
        op["security"] = SECURITY[spec.auth]
        if params:
            op["parameters"] = params
        if spec.body is not None:
            media = {"schema": spec.body}
            if spec.body.get("examples"):  # a body schema's own examples, where tools look for them
                media["examples"] = {f"example{i}": {"value": v} for i, v in enumerate(spec.body["examples"], 1)}
            op["requestBody"] = {"required": spec.body_required, "content": {"application/json": media}}
        implied = implied_errors(spec)
        responses = {**{status: s.ERROR for status in implied}, **spec.responses}
        for status, schema in sorted(responses.items()):
            response: dict = {"description": implied.get(status) or _DESCRIPTIONS.get(status, str(status)),
                              "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}}
            if schema is not None:
                media_type = schema.get(MEDIA_TYPE, "application/json")
                response["content"] = {media_type: {"schema": {k: v for k, v in schema.items() if k != MEDIA_TYPE}}}
            op["responses"][str(status)] = response
        paths.setdefault(path, {})[spec.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Differential control-plane", "version": "1.0.0",
                 "description": "Durable remote function calls. Authorization: '<scheme> <secret>'; the scheme "
                                "word is ignored."},
        "paths": paths,
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "headers": {"RequestId": {
                "description": "This request's id, as in the log line: the client's X-Request-Id when it is at "
                               "most 64 of [A-Za-z0-9._-], else a new one",
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}},
        },
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
