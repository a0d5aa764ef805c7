"""Errors inside the console answer as pages (the API's answer JSON): a missing cluster or job, a
refused form, a wrong route under /console."""
from __future__ import annotations

import logging

from flask import render_template
from werkzeug.exceptions import HTTPException

from .. import db
from ..errors import ApiError
from . import bp

log = logging.getLogger(__name__)


def page(status: int, title: str, message: str):
    return render_template("console/error.html", title=title, message=message), status


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return page(exc.status, exc.code.replace("_", " ").capitalize(), exc.message)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return page(exc.code or 500, exc.name, exc.description or exc.name)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    if db.is_unavailable(exc):
        return page(503, "Database unavailable", "The database is not reachable or too busy right now; reload "
                                                 "in a moment.")
    log.exception("unhandled error in the console")
    return page(500, "Unexpected error", "An unexpected error occurred; it has been logged.")


@bp.route("/<path:rest>", endpoint="not_found")
def _no_such_page(rest: str):
    """Any other path under /console is a page saying so (the API's 404 answers JSON)."""
    return page(404, "No such page", f"There is no console page at /console/{rest}; the clusters list "
                                     "leads to every page.")
