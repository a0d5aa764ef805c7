"""Client-library versions and registry tokens of a cluster, under the management secret.

Versions: reserve (POST), publish once the upload is in the asset store, list what is published.
Tokens: read-only credentials for the npm and pip routes (api/registry.py), shown once.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..engine import client_libraries as libraries, registry_tokens as tokens
from . import schemas as s
from .routing import route, state

bp = Blueprint("client_libraries", __name__)

ERRORS = {400: s.ERROR, 401: s.ERROR, 404: s.ERROR}
_LIBRARIES = "/clusters/<cluster_id>/client-libraries"
_LIBRARY = _LIBRARIES + "/<library_id>"
_TOKENS = "/clusters/<cluster_id>/registry-tokens"
_TEXT = {"type": "string"}
_NULLABLE_INT = {"type": ["integer", "null"]}
_LANGUAGE = {"type": "string", "enum": list(libraries.LANGUAGES)}

CREATE_LIBRARY = {**s.obj({
    "increment": {"type": "string", "enum": list(libraries.INCREMENTS), "default": "patch",
                  "description": "which part of the highest published (or still reserved) version to increment"},
    "language": {**_LANGUAGE, "default": "typescript"},
}, extra=False), "examples": [{"increment": "minor", "language": "python"}]}
LIBRARIES_QUERY = s.obj({"language": _LANGUAGE}, extra=False)
_NAMES = {"packageName": _TEXT, "fileName": _TEXT,
          "distribution": {**_TEXT, "description": "python only: the distribution name"},
          "module": {**_TEXT, "description": "python only: the import name"}}
LIBRARY = s.obj({"id": s.ID, "version": _TEXT, "language": _TEXT, **_NAMES,
                 "status": {"type": "string", "enum": [libraries.RESERVED, libraries.PUBLISHED]},
                 "createdAt": s.TIMESTAMP, "expiresAt": s.TIMESTAMP, "size": _NULLABLE_INT,
                 "sha256": s.NULLABLE_TEXT, "publishedAt": s.TIMESTAMP},
                required=("id", "version", "language", "packageName", "fileName", "status"))
LIBRARIES = s.obj({"libraries": {"type": "array", "items": LIBRARY}}, required=("libraries",))

TOKEN_NAME = {"type": "string", "minLength": 1, "maxLength": tokens.NAME_MAX, "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$",
              "description": "what the token is for, e.g. 'ci' or a team's name"}
CREATE_TOKEN = {**s.obj({"name": TOKEN_NAME}, required=("name",), extra=False), "examples": [{"name": "ci"}]}
TOKEN = s.obj({"id": s.ID, "name": _TEXT, "createdAt": s.TIMESTAMP, "lastUsedAt": s.TIMESTAMP},
              required=("id", "name", "createdAt", "lastUsedAt"))
NEW_TOKEN = s.obj({"id": s.ID, "name": _TEXT, "createdAt": s.TIMESTAMP,
                   "token": {"type": "string", "description": "drt_ + 64 hex; shown only in this answer"}},
                  required=("id", "name", "token", "createdAt"))
TOKENS = s.obj({"tokens": {"type": "array", "items": TOKEN}}, required=("tokens",))
_MAX_BODY = 4 * 1024


def _listed(library: dict) -> dict:
    return {k: v for k, v in library.items() if k not in ("key", "contentType", "sha1", "sha512", "integrity")}


@route(bp, "POST", _LIBRARIES, summary="Reserve the next version of the cluster's client library (publish it after "
       "uploading it)", auth_kind="management", tag="registry", body=CREATE_LIBRARY, body_required=False,
       max_body=_MAX_BODY, responses={201: LIBRARY, 409: s.ERROR, **ERRORS})
def reserve(cluster_id, body):
    made = libraries.reserve(cluster_id, body["increment"], body["language"], store=state().assets)
    return jsonify(made), 201


@route(bp, "GET", _LIBRARIES, summary="The published versions, highest first", auth_kind="management",
       tag="registry", query=LIBRARIES_QUERY, responses={200: LIBRARIES, **ERRORS})
def list_libraries(cluster_id, query):
    return jsonify({"libraries": [_listed(f) for f in libraries.published(cluster_id, query.get("language"))]}), 200


@route(bp, "GET", _LIBRARY, summary="One version, reserved or published", auth_kind="management", tag="registry",
       responses={200: LIBRARY, **ERRORS})
def get_library(cluster_id, library_id):
    return jsonify(libraries.get(cluster_id, library_id)), 200


@route(bp, "POST", _LIBRARY + "/publish", summary="Publish an uploaded version: its object is checked (size, "
       "digests) and only then does the version count", auth_kind="management", tag="registry",
       responses={200: LIBRARY, 409: s.ERROR, **ERRORS})
def publish(cluster_id, library_id):
    return jsonify(libraries.publish(cluster_id, library_id, store=state().assets)), 200


@route(bp, "POST", _TOKENS, summary="Create a registry token that reads this cluster's packages (shown once)",
       auth_kind="management", tag="registry", body=CREATE_TOKEN, max_body=_MAX_BODY,
       responses={201: NEW_TOKEN, 409: s.ERROR, **ERRORS})
def create_token(cluster_id, body):
    return jsonify(tokens.create(cluster_id, body["name"])), 201


@route(bp, "GET", _TOKENS, summary="The cluster's registry tokens (never the tokens themselves)",
       auth_kind="management", tag="registry", responses={200: TOKENS, **ERRORS})
def list_tokens(cluster_id):
    return jsonify({"tokens": tokens.list_for(cluster_id)}), 200


@route(bp, "DELETE", _TOKENS + "/<token_id>", summary="Revoke a registry token (at once, on every replica)",
       auth_kind="management", tag="registry", responses={204: None, **ERRORS})
def revoke_token(cluster_id, token_id):
    tokens.delete(cluster_id, token_id)
    return "", 204
