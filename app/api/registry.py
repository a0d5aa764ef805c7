"""The package registry the real npm and pip read: npm's packument and tarball routes, and the
Python simple index (PEP 503 HTML, PEP 691 JSON) with its wheel files.

Read with a registry token of the package's cluster (npm's `_authToken`, i.e. `Bearer <token>`;
pip's URL credentials, i.e. HTTP Basic with the token as the password and any user name) or with
the management secret. Anything else, another cluster's token included, is 401 with
`WWW-Authenticate: Basic realm="differential"` (pip then retries with its credentials or keyring).
Werkzeug decodes npm's `@differential.dev%2f<id>` before routing, so one route serves both forms.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging

from flask import Blueprint, Response, jsonify, redirect, request

from ..cloud.assets import StoreError
from ..engine import client_libraries as libraries, registry_tokens as tokens
from ..errors import NotFound, Unauthorized, UpstreamFailed
from ..registry import names, npm, simple_index
from . import schemas as s
from .auth import token_from_header
from .routing import request_base_url, route, state

log = logging.getLogger(__name__)

bp = Blueprint("registry", __name__)

REALM = 'Basic realm="differential"'
_NPM = "/packages/npm/@" + names.NPM_SCOPE + "/<cluster_id>"
_SIMPLE = "/packages/pypi/simple/"
_FILES = "/packages/pypi/files/<cluster_id>/<file_name>"
_READ_ERRORS = {401: s.ERROR, 404: s.ERROR}
PACKUMENT = s.obj({"name": {"type": "string"}, "dist-tags": s.obj({"latest": {"type": "string"}}),
                   "versions": {"type": "object"}, "time": {"type": "object"}},
                  required=("name", "dist-tags", "versions"))
_HTML = {"type": "string", "description": "PEP 503 HTML (PEP 691 JSON when Accept asks for "
         f"{simple_index.JSON_TYPE})", "x-media-type": "text/html"}
_TARBALL = {"type": "string", "format": "binary", "x-media-type": "application/gzip"}
_WHEEL = {"type": "string", "format": "binary", "x-media-type": "application/zip"}


@bp.errorhandler(Unauthorized)
def _unauthorized(exc: Unauthorized):
    response = jsonify(exc.body())
    response.headers["WWW-Authenticate"] = REALM
    return response, 401


def _candidates(header: str | None) -> list[str]:
    """The credential as sent (`Bearer <t>`, or a bare `Basic <t>`), then Basic's password if the
    rest is base64 of `user:password` (what pip sends for URL credentials)."""
    token = token_from_header(header)
    if token is None:
        return []
    found = [token]
    if header.strip().lower().startswith("basic "):
        try:
            decoded = base64.b64decode(token, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        user, colon, password = decoded.partition(":")
        if colon and password:
            found.append(password)
    return found


def require_reader(cluster_id: str | None) -> str | None:
    """The cluster the credential reads (None: the management secret, every cluster); 401 unless it
    may read `cluster_id` (None: only that it is a credential at all)."""
    management = state().settings.management_secret
    candidates = _candidates(request.headers.get("Authorization"))
    if not candidates:
        raise Unauthorized("missing credential: npm sends its _authToken (a registry token) as 'Authorization: "
                           "Bearer <token>'; pip sends the password of the index URL's credentials",
                           code="missing_credential")
    for token in candidates:
        if management and hmac.compare_digest(token.encode(), management.encode()):
            return None
    for token in candidates:
        if not tokens.looks_like_token(token):
            continue
        reader = tokens.reader_for_token(token)
        if reader is None:
            continue
        if cluster_id is not None and reader.cluster_id != cluster_id:
            raise Unauthorized(f"the registry token does not belong to cluster {cluster_id!r}",
                               code="invalid_credential")
        tokens.record_use(reader.token_id)
        return reader.cluster_id
    raise Unauthorized("the credential is neither a registry token (revoked ones stop at once) nor the management "
                       "secret", code="invalid_credential")


def _stream(file: dict, download_name: str) -> Response:
    try:
        chunks = iter(state().assets.read(file["key"]))
        first = next(chunks, b"")
    except StoreError as exc:
        raise UpstreamFailed(str(exc)) from exc
    except KeyError:
        log.warning("client library object %s is missing from the asset store", file["key"])
        raise NotFound(f"the file of version {file['version']} is missing from the asset store; publish a new "
                       "version", {"version": file["version"]}, code="client_library_file_missing") from None

    def body():
        yield first
        yield from chunks

    return Response(body(), status=200, content_type=file["contentType"], headers={
        "Content-Length": str(file["size"]), "Content-Disposition": f'attachment; filename="{download_name}"',
        "Cache-Control": "private, max-age=31536000, immutable"})


# --- npm ------------------------------------------------------------------------------------------

@route(bp, "GET", _NPM, summary="npm packument of the cluster's TypeScript client (@differential.dev/<clusterId>)",
       auth_kind="registry", tag="registry", responses={200: PACKUMENT, **_READ_ERRORS})
def packument(cluster_id):
    require_reader(cluster_id)
    files = libraries.published(cluster_id, "typescript")
    if not files:
        raise NotFound(f"cluster {cluster_id!r} has published no TypeScript client yet (differential client publish)",
                       {"package": names.npm_package(cluster_id)}, code="package_not_found")
    return jsonify(npm.packument(cluster_id, files, request_base_url())), 200


@route(bp, "GET", _NPM + "/-/<file_name>", summary="npm tarball of one published version",
       auth_kind="registry", tag="registry", responses={200: _TARBALL, **_READ_ERRORS})
def tarball(cluster_id, file_name):
    require_reader(cluster_id)
    version = names.version_of_file("typescript", cluster_id, file_name)
    if version is None:
        raise NotFound(f"{file_name!r} is not a tarball name of {names.npm_package(cluster_id)} "
                       f"({names.npm_tarball(cluster_id, '<version>')})", {"file": file_name},
                       code="client_library_version_not_found")
    return _stream(libraries.published_file(cluster_id, "typescript", version), file_name)


# --- pip --------------------------------------------------------------------------------------------

def _simple(text: str, as_json: bool) -> Response:
    if as_json:
        content_type = simple_index.JSON_TYPE
    elif request.accept_mimetypes.best == simple_index.HTML_TYPE:
        content_type = simple_index.HTML_TYPE
    else:
        content_type = "text/html; charset=utf-8"
    return Response(text, status=200, content_type=content_type, headers={"Vary": "Accept"})


@route(bp, "GET", _SIMPLE, summary="Python simple index: the projects this credential reads", auth_kind="registry",
       tag="registry", responses={200: _HTML, 401: s.ERROR})
def simple_root():
    reader = require_reader(None)
    if reader is None:
        cluster_ids = libraries.clusters_with_python()
    else:
        cluster_ids = [reader] if libraries.published(reader, "python") else []
    as_json = simple_index.wants_json(request.accept_mimetypes)
    return _simple(simple_index.root(cluster_ids, as_json), as_json)


@route(bp, "GET", _SIMPLE + "<project>/", summary="Python simple index: a cluster's client project (its wheels "
       "with #sha256=); a name not normalised redirects to the normalised one", auth_kind="registry",
       tag="registry", responses={200: _HTML, 301: None, **_READ_ERRORS})
def simple_project(project):
    normalised = names.normalise(project)
    cluster_id = names.cluster_of_project(normalised)
    require_reader(cluster_id)
    if cluster_id is None:
        raise NotFound(f"project {project!r} is not a cluster's client (those are {names.PYTHON_PREFIX}<clusterId>)",
                       {"project": project}, code="project_not_found")
    if normalised != project:
        return redirect(f"../{normalised}/", code=301)
    files = libraries.published(cluster_id, "python")
    if not files:
        raise NotFound(f"cluster {cluster_id!r} has published no Python client yet (differential client publish "
                       "--language python)", {"project": project}, code="project_not_found")
    as_json = simple_index.wants_json(request.accept_mimetypes)
    return _simple(simple_index.project(cluster_id, files, as_json), as_json)


@route(bp, "GET", _FILES, summary="A published wheel of a cluster's Python client", auth_kind="registry",
       tag="registry", responses={200: _WHEEL, **_READ_ERRORS})
def wheel(cluster_id, file_name):
    require_reader(cluster_id)
    version = names.version_of_file("python", cluster_id, file_name)
    if version is None:
        raise NotFound(f"{file_name!r} is not a wheel of {names.distribution(cluster_id)}", {"file": file_name},
                       code="client_library_version_not_found")
    return _stream(libraries.published_file(cluster_id, "python", version), file_name)
