"""OpenAPI 3.1 document generated from the route declarations (our schemas are JSON Schema,
which OpenAPI 3.1 takes as they are)."""
from __future__ import annotations

import re

from . import schemas as s
from .routing import ROUTES

_DESCRIPTIONS = {200: "OK", 201: "Created", 204: "No content", 400: "Invalid request", 401: "Missing or wrong credential",
                 404: "Not found", 409: "Conflict", 413: "Body too large", 503: "Unavailable"}


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
            op["security"] = [{"clusterSecret": []}]
        elif spec.auth == "caller":  # either credential (api/access.py)
            op["security"] = [{"accessPoint": []}, {"clusterSecret": []}]
        elif spec.auth == "management":
            op["security"] = [{"managementSecret": []}]
        if params:
            op["parameters"] = params
        if spec.body is not None:
            media = {"schema": spec.body}
            if spec.body.get("examples"):  # a body schema's own examples, where tools look for them
                media["examples"] = {f"example{i}": {"value": v} for i, v in enumerate(spec.body["examples"], 1)}
            op["requestBody"] = {"required": spec.body_required, "content": {"application/json": media}}
        responses = dict(spec.responses)
        if spec.body is not None:  # every body has a limit and takes its bytes from the body budget
            responses.setdefault(413, s.ERROR)
            if spec.refused is None:
                responses.setdefault(503, s.ERROR)
        if spec.path_params:  # an id longer than any stored one (routing.py) is not looked up
            responses.setdefault(404, s.ERROR)
        for status, schema in sorted(responses.items()):
            response: dict = {"description": _DESCRIPTIONS.get(status, str(status))}
            if status == 413:
                response["description"] = (f"Body larger than {spec.max_body} bytes" if spec.max_body
                                           else "Body larger than MAX_BODY_BYTES, or a field over its own limit "
                                                "(targetArgs: MAX_ARGS_BYTES)")
            elif status == 503 and spec.body is not None:
                response["description"] = "Unavailable (e.g. too many big bodies at once: see Retry-After)"
            if schema is not None:
                response["content"] = {"application/json": {"schema": schema}}
            op["responses"][str(status)] = response
        paths.setdefault(path, {})[spec.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Differential control-plane", "version": "1.0.0",
                 "description": "Durable remote function calls. Authorization: '<scheme> <secret>'; the scheme "
                                "word is ignored."},
        "paths": paths,
        "components": {"securitySchemes": {
            "clusterSecret": {"type": "apiKey", "in": "header", "name": "Authorization",
                              "description": "'Basic <cluster API secret>'"},
            "managementSecret": {"type": "apiKey", "in": "header", "name": "Authorization",
                                 "description": "'Basic <management secret>'"},
            "accessPoint": {"type": "apiKey", "in": "header", "name": "Authorization",
                            "description": "'Bearer <access-point token>' (sk_ap_...): calls some services of one cluster"},
        }},
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
