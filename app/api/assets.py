"""Uploads: an upload URL for a deployment's bundle or a client library's package, and the local
store's own upload route (the embedded default has no S3 to PUT to).

The URL comes from the asset store (app/cloud/assets.py): presigned S3 when ASSET_UPLOAD_BUCKET is
set, else signed by this control-plane for `PUT /assets/<key>`. That route needs no credential: its
signature is one, as a presigned S3 URL's is; it streams the body to the folder within the size the
URL allows, and the engine checks the object again before it counts (engine/assets.confirm).
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..cloud import assets as store
from ..engine import assets
from ..errors import BadRequest, Forbidden, NotFound, TooLarge
from . import schemas as s
from .routing import request_base_url, route, state

bp = Blueprint("assets", __name__)


@route(bp, "POST", "/clusters/<cluster_id>/assets", summary="An upload URL for a deployment's bundle or a client "
       "library's package (PUT the file there with the headers given; a retry gets a fresh URL)",
       auth_kind="management", tag="assets", body=s.REQUEST_UPLOAD,
       responses={201: s.UPLOAD_URL, 400: s.ERROR, 401: s.ERROR, 404: s.ERROR, 409: s.ERROR, 502: s.ERROR})
def request_upload(cluster_id, body):
    answer = assets.request_upload(cluster_id, body["type"], body["target"], store=state().assets,
                                   base_url=request_base_url())
    return jsonify(answer), 201


@route(bp, "PUT", "/assets/<path:key>", summary="Upload to the local asset store (a URL from POST "
       "/clusters/:id/assets when ASSET_UPLOAD_BUCKET is unset; the URL's signature is the credential)",
       auth_kind=None, tag="assets",
       responses={200: s.UPLOADED, 400: s.ERROR, 403: s.ERROR, 404: s.ERROR, 413: s.ERROR})
def local_upload(key):
    local = state().assets
    if not isinstance(local, store.LocalStore):
        raise NotFound("this control-plane keeps assets in S3 (ASSET_UPLOAD_BUCKET): upload to the presigned URL "
                       "that POST /clusters/:id/assets answered", code="route_not_found")
    try:
        store.check_key(key)
        limit = local.check_upload(key, request.args, request.headers.get("Content-Type"), request.content_length)
        request.max_content_length = limit
        size = local.write(key, request.stream, limit)
    except store.TooBig as exc:
        raise TooLarge(str(exc), {"key": key}, code="upload_too_large") from exc
    except store.UploadRefused as exc:
        raise Forbidden(str(exc), {"key": key}, code="upload_refused") from exc
    except ValueError as exc:  # not a key of this store
        raise BadRequest(str(exc), {"key": key}, code="bad_asset_key") from exc
    return jsonify({"key": key, "size": size}), 200
