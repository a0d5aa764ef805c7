"""Health and the API description."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import db
from . import openapi
from . import schemas as s
from .routing import route

bp = Blueprint("system", __name__)


@route(bp, "GET", "/live", summary="Liveness: the process serves and the database answers", auth_kind=None,
       tag="system", responses={200: s.LIVE, 503: s.ERROR})
def live():
    db.ping()
    return jsonify({"status": "ok"}), 200


@route(bp, "GET", "/openapi.json", summary="This API, described from the schemas that validate it",
       auth_kind=None, tag="system", responses={200: {"type": "object"}})
def openapi_json():
    return jsonify(openapi.document()), 200
