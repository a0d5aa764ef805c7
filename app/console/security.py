"""What guards every console request: the session, CSRF, the sign-in rate limit, and the headers.

- A page needs a session (engine/console_sessions), found by the HttpOnly, SameSite=Strict cookie
  `COOKIE`; without one a GET goes to the sign-in page (the path it wanted rides along as `next`)
  and anything else answers 401.
- Every POST carries the session's CSRF token (form field `csrf_token`, or header `X-CSRF-Token`
  for scripts) and, when the browser sends one, an `Origin` of this host; the sign-in form, which
  has no session yet, carries the token of its own cookie instead (double submit).
- Failed sign-ins are limited per client address and for the whole process (`SignInLimiter`).
- Every answer carries a content security policy with no inline script or style, and pages are
  never cached (they hold cluster secrets and call arguments).
"""
from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from typing import Callable
from urllib.parse import urlsplit

from flask import current_app, g, redirect, request, url_for

from ..api.validation import storable_text
from ..engine import console_sessions
from . import bp
from .error_pages import page as refuse

COOKIE = "differential_console"
SIGN_IN_COOKIE = "differential_console_sign_in"  # the sign-in form's CSRF token, before any session
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
PUBLIC_ENDPOINTS = frozenset({"console.static", "console.sign_in"})

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class SignInLimiter:
    """At most `per_address` failed sign-ins per address and `overall` in all per `window` seconds
    (in this process); past either, sign-in answers 429 until the oldest failure ages out."""

    def __init__(self, per_address: int = 5, overall: int = 100, window: float = 60.0, addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_address, self.overall, self.window, self.addresses = per_address, overall, window, addresses
        self._clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._all: list[float] = []
        self._lock = threading.Lock()

    def wait_seconds(self, address: str) -> float:
        """0 if `address` may try now, else how long until it may."""
        with self._lock:
            now = self._clock()
            self._all = [t for t in self._all if t > now - self.window]
            mine = [t for t in self._failures.get(address, ()) if t > now - self.window]
            waits = [0.0]
            if len(mine) >= self.per_address:
                waits.append(mine[-self.per_address] + self.window - now)
            if len(self._all) >= self.overall:
                waits.append(self._all[-self.overall] + self.window - now)
            return max(waits)

    def failed(self, address: str) -> None:
        with self._lock:
            now = self._clock()
            mine = [t for t in self._failures.pop(address, ()) if t > now - self.window] + [now]
            self._failures[address] = mine[-self.per_address:]
            self._all.append(now)
            while len(self._failures) > self.addresses:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


limiter = SignInLimiter()


def management_secret() -> str | None:
    return current_app.extensions["differential"].settings.management_secret


def over_https() -> bool:
    """Served over https, directly or behind a proxy that says so (the cookie is then Secure)."""
    return request.is_secure or request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip() == "https"


def csrf_token() -> str:
    """The token every form of this page carries (the session's, or the sign-in form's own)."""
    session = g.get("console_session")
    if session is not None:
        return session.csrf_token
    token = g.get("console_sign_in_token")
    if token is None:
        token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
        g.console_sign_in_token = token
    return token


def _same_origin() -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # an older browser, or a non-browser client; the CSRF token still decides
    return origin != "null" and urlsplit(origin).netloc == request.host


def _csrf_ok(expected: str | None) -> bool:
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode()) and _same_origin()


@bp.before_request
def _guard():
    if request.endpoint in PUBLIC_ENDPOINTS:
        if request.method == "POST" and not _csrf_ok(request.cookies.get(SIGN_IN_COOKIE)):
            return refuse(403, "Form expired", "The sign-in form's CSRF token is missing or wrong (cookies "
                                               "must be on for this site). Reload the sign-in page and try again.")
        return None
    if not management_secret():
        return refuse(503, "Console off", "The console signs in with the management secret, and none is set: set "
                                          "MANAGEMENT_SECRET in the control-plane's environment and restart it.")
    token = request.cookies.get(COOKIE)
    session = console_sessions.lookup(token, management_secret()) if token else None
    if session is None:
        if request.method in ("GET", "HEAD"):
            return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?")), 303)
        return refuse(401, "Signed out", "Your session ended (it expired, you signed out, or the management "
                                         "secret changed). Sign in again and repeat what you did.")
    g.console_session = session
    g.console_token = token
    if request.method not in ("GET", "HEAD") and not _csrf_ok(session.csrf_token):
        return refuse(403, "Form expired", "The form's CSRF token is missing or wrong. Reload the page and try "
                                           "again.")
    return None


@bp.before_request
def _storable_path():
    """A path part the database cannot hold (NUL, an unpaired surrogate) names nothing: a 400 page,
    never the database's error (a 500 on PostgreSQL)."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and not storable_text(value):
            return refuse(400, "Bad address", f"The address's {name} holds a NUL character or an unpaired "
                                              "surrogate, so it names nothing.")
    return None


@bp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    token = g.get("console_sign_in_token")
    if token is not None and request.cookies.get(SIGN_IN_COOKIE) != token:
        response.set_cookie(SIGN_IN_COOKIE, token, max_age=3600, path=bp.url_prefix, secure=over_https(),
                            httponly=True, samesite="Strict")
    return response


@bp.app_template_global()
def csrf_field_name() -> str:
    return CSRF_FIELD


@bp.app_template_global("csrf_token")
def _csrf_token_global() -> str:
    return csrf_token()

