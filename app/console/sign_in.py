"""Signing in with the management secret, and out. The secret travels only in the POST body: it is
never in a URL, a page or a log line."""
from __future__ import annotations

import datetime as dt
import hmac
import logging
import math

from flask import current_app, g, redirect, render_template, request, url_for

from ..engine import console_sessions
from . import bp
from .security import COOKIE, limiter, management_secret, over_https

log = logging.getLogger(__name__)


def _next_path() -> str:
    """Where to go after signing in: a console path only (never another site)."""
    wanted = request.values.get("next", "")
    if wanted.startswith(bp.url_prefix + "/") and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    return url_for("console.clusters")


@bp.route("/sign-in", methods=["GET", "POST"], endpoint="sign_in")
def sign_in():
    secret = management_secret()
    if request.method == "GET":
        token = request.cookies.get(COOKIE)
        if secret and token and console_sessions.lookup(token, secret):
            return redirect(_next_path(), 303)  # signed in already
        return render_template("console/sign_in.html", next=_next_path(), off=not secret)
    address = request.remote_addr or "?"
    wait = limiter.wait_seconds(address)
    if wait > 0:
        seconds = math.ceil(wait)
        return render_template("console/sign_in.html", next=_next_path(), off=not secret,
                               error=f"Too many failed sign-ins: try again in {seconds} s."), 429, \
            {"Retry-After": str(seconds)}
    sent = request.form.get("secret", "")
    if not secret or not hmac.compare_digest(sent.encode(), secret.encode()):
        limiter.failed(address)
        log.warning("console sign-in refused from %s: wrong management secret", address)
        error = "That is not the management secret." if secret else "The console is off: MANAGEMENT_SECRET is unset."
        return render_template("console/sign_in.html", next=_next_path(), off=not secret, error=error), 401
    limiter.succeeded(address)
    hours = current_app.extensions["differential"].settings.console_session_hours
    token, _ = console_sessions.create(secret, dt.timedelta(hours=hours))
    response = redirect(_next_path(), 303)
    response.set_cookie(COOKIE, token, max_age=int(hours * 3600), path=bp.url_prefix, secure=over_https(),
                        httponly=True, samesite="Strict")
    return response


@bp.route("/sign-out", methods=["POST"], endpoint="sign_out")
def sign_out():
    console_sessions.end(g.console_token)
    response = redirect(url_for("console.sign_in"), 303)
    response.delete_cookie(COOKIE, path=bp.url_prefix, secure=over_https(), httponly=True, samesite="Strict")
    return response
