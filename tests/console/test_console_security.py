"""The console's guard, in-process on both backends: sign-in and its limit, the session cookie,
CSRF, sign-out, the secret kept out of pages and logs, escaping and the security headers."""
from __future__ import annotations

import logging
import re
import time

import pytest

from app.console import security
from app.engine import clusters

from console_helpers import MANAGEMENT_SECRET, Console, csrf_of

DUMMY = {"cluster_id": "cluster-none", "job_id": "job-none", "service": "svc", "service_name": "svc",
         "name": "ap", "filename": "console.css"}


def _console_rules(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("console.") and rule.endpoint not in security.PUBLIC_ENDPOINTS:
            yield rule


def _path(rule) -> str:
    return rule.build({name: DUMMY.get(name, "x") for name in rule.arguments})[1]


@pytest.fixture(autouse=True)
def _fresh_limiter(monkeypatch):
    monkeypatch.setattr(security, "limiter", security.SignInLimiter())
    monkeypatch.setattr("app.console.sign_in.limiter", security.limiter)


def test_every_page_needs_a_session_and_every_form_refuses_without_one(app):
    client = app.test_client()
    rules = list(_console_rules(app))
    assert len(rules) >= 3
    for rule in rules:
        path = _path(rule)
        if "GET" in rule.methods:
            r = client.get(path)
            assert r.status_code == 303, (path, r.status_code)
            assert r.headers["Location"].startswith("/console/sign-in?next=")
        if "POST" in rule.methods:
            r = client.post(path, data={"csrf_token": "x"})
            assert r.status_code == 401, (path, r.status_code)
            assert "Sign in again" in r.text


def test_signing_in_sets_a_strict_http_only_cookie_and_goes_where_it_was_asked(app):
    client = app.test_client()
    r = client.get("/console/clusters/abc")
    assert r.headers["Location"] == "/console/sign-in?next=/console/clusters/abc"
    form = client.get(r.headers["Location"])
    assert 'value="/console/clusters/abc"' in form.text
    r = client.post("/console/sign-in", data={"secret": MANAGEMENT_SECRET, "csrf_token": csrf_of(form.text),
                                              "next": "/console/clusters/abc"})
    assert r.status_code == 303 and r.headers["Location"] == "/console/clusters/abc"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(security.COOKIE + "=")
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=43200"):
        assert flag in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert MANAGEMENT_SECRET not in cookie


def test_the_sign_in_page_sends_a_signed_in_browser_on(console):
    r = console.client.get("/console/sign-in?next=/console/clusters/abc")
    assert r.status_code == 303 and r.headers["Location"] == "/console/clusters/abc"


def test_behind_an_https_proxy_the_cookie_is_secure(app):
    client = app.test_client()
    https = {"X-Forwarded-Proto": "https"}
    form = client.get("/console/sign-in", headers=https)
    assert "Secure" in form.headers["Set-Cookie"]
    r = client.post("/console/sign-in", headers=https,
                    data={"secret": MANAGEMENT_SECRET, "csrf_token": csrf_of(form.text)})
    assert r.status_code == 303 and "Secure" in r.headers["Set-Cookie"]


@pytest.mark.parametrize("wanted", ["//evil.example/x", "https://evil.example/", "/clusters", "/console\\..\\x"])
def test_sign_in_never_sends_the_browser_elsewhere(app, wanted):
    client = app.test_client()
    form = client.get("/console/sign-in")
    r = client.post("/console/sign-in", data={"secret": MANAGEMENT_SECRET, "csrf_token": csrf_of(form.text),
                                              "next": wanted})
    assert r.headers["Location"] == "/console/"


def test_a_wrong_secret_is_refused_and_failures_are_limited(app):
    client = app.test_client()
    form = client.get("/console/sign-in")
    token = csrf_of(form.text)
    for _ in range(security.limiter.per_address):
        r = client.post("/console/sign-in", data={"secret": MANAGEMENT_SECRET + "x", "csrf_token": token})
        assert r.status_code == 401 and "not the management secret" in r.text
    r = client.post("/console/sign-in", data={"secret": MANAGEMENT_SECRET, "csrf_token": token})
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    assert 0 < int(r.headers["Retry-After"]) <= 60
    other = app.test_client()
    form = other.get("/console/sign-in", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    r = other.post("/console/sign-in", environ_base={"REMOTE_ADDR": "10.0.0.9"},
                   data={"secret": MANAGEMENT_SECRET, "csrf_token": csrf_of(form.text)})
    assert r.status_code == 303  # another address is not locked out


def test_the_limiter_lets_an_address_try_again_once_its_failures_age_out():
    now = [0.0]
    limiter = security.SignInLimiter(per_address=2, overall=3, window=10, clock=lambda: now[0])
    limiter.failed("a")
    now[0] = 1
    limiter.failed("a")
    assert limiter.wait_seconds("a") == pytest.approx(9)
    assert limiter.wait_seconds("b") == 0
    limiter.failed("b")
    assert limiter.wait_seconds("c") == pytest.approx(9)  # three failures in all: everyone waits
    now[0] = 10.5  # the first failure aged out
    assert limiter.wait_seconds("a") == 0 and limiter.wait_seconds("c") == 0


def test_the_sign_in_form_refuses_a_post_without_its_own_token(app):
    client = app.test_client()
    client.get("/console/sign-in")
    r = client.post("/console/sign-in", data={"secret": MANAGEMENT_SECRET})
    assert r.status_code == 403 and security.COOKIE not in r.headers.get("Set-Cookie", "")
    fresh = app.test_client()  # no cookie of the form at all: another site's form
    r = fresh.post("/console/sign-in", data={"secret": MANAGEMENT_SECRET, "csrf_token": "made-up"})
    assert r.status_code == 403


def test_a_form_without_its_csrf_token_or_from_another_origin_changes_nothing(console):
    before = len(clusters.list_clusters())
    r = console.client.post("/console/clusters", data={"description": "no token"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = console.client.post("/console/clusters", data={"description": "wrong", "csrf_token": "x" * 43})
    assert r.status_code == 403
    r = console.post("/console/clusters", {"description": "elsewhere"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert len(clusters.list_clusters()) == before
    r = console.post("/console/clusters", {"description": "with token"}, headers={"Origin": "http://localhost"},
                     status=303)
    assert len(clusters.list_clusters()) == before + 1


def test_signing_out_ends_the_session_even_for_a_copied_cookie(console):
    cookie = console.client.get_cookie(security.COOKIE, path="/console").value
    console.post("/console/sign-out", status=303)
    thief = console.app.test_client()
    thief.set_cookie(security.COOKIE, cookie, path="/console")
    assert thief.get("/console/").status_code == 303


def test_changing_the_management_secret_signs_every_session_out(make_app, console):
    cookie = console.client.get_cookie(security.COOKIE, path="/console").value
    assert console.get("/console/").status_code == 200
    other = make_app(MANAGEMENT_SECRET="sk_management_" + "n" * 40)
    client = other.test_client()
    client.set_cookie(security.COOKIE, cookie, path="/console")
    assert client.get("/console/").status_code == 303


def test_a_session_ends_after_its_lifetime(make_app):
    app = make_app(CONSOLE_SESSION_HOURS="0.0003")  # about a second
    console = Console(app)
    console.get("/console/")
    time.sleep(1.3)
    assert console.client.get("/console/").status_code == 303


def test_without_a_management_secret_the_console_says_how_to_turn_it_on(make_app):
    app = make_app(MANAGEMENT_SECRET=None)
    client = app.test_client()
    page = client.get("/console/sign-in")
    assert page.status_code == 200 and "MANAGEMENT_SECRET" in page.text
    r = client.get("/console/")
    assert r.status_code == 503 and "MANAGEMENT_SECRET" in r.text


def test_the_secret_is_in_no_page_url_or_log_line(console, caplog):
    caplog.set_level(logging.DEBUG)
    console.post("/console/clusters", {"description": "mine"}, status=303)
    paths = [_path(rule) for rule in _console_rules(console.app) if "GET" in rule.methods]
    cluster_id = clusters.list_clusters()[-1]["id"]
    for path in paths:
        r = console.client.get(path.replace("cluster-none", cluster_id))
        assert MANAGEMENT_SECRET not in r.text
        assert MANAGEMENT_SECRET not in r.headers.get("Location", "")
    bad = console.app.test_client()
    form = bad.get("/console/sign-in")
    bad.post("/console/sign-in", data={"secret": MANAGEMENT_SECRET[:-1] + "?", "csrf_token": csrf_of(form.text)})
    assert MANAGEMENT_SECRET not in caplog.text and MANAGEMENT_SECRET[:-1] not in caplog.text


def test_pages_carry_a_policy_forbidding_inline_script_and_are_never_cached(console):
    signed_out = console.app.test_client()
    for path in ("/console/", "/console/sign-in", "/console/static/console.css", "/console/static/console.js"):
        r = signed_out.get(path) if path.endswith("sign-in") else console.get(path)
        assert r.status_code == 200, path
        policy = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
        if "/static/" not in path:
            assert r.headers["Cache-Control"] == "no-store"


def test_what_a_user_names_is_shown_as_text(console):
    console.post("/console/clusters", {"description": "<script>alert(1)</script><b>x</b>"}, status=303)
    page = console.get("/console/").text
    assert "<script>alert(1)</script>" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in page


@pytest.mark.parametrize("description", ["x" * 1025, "nul\x00byte"])
def test_a_cluster_description_the_api_refuses_is_refused_on_the_page_too(console, description):
    before = len(clusters.list_clusters())
    r = console.post("/console/clusters", {"description": description}, status=400)
    assert "description" in r.text
    assert len(clusters.list_clusters()) == before


def test_a_wrong_console_address_is_a_page_that_says_so(console):
    r = console.get("/console/no/such/page", status=404)
    assert "There is no console page at /console/no/such/page" in r.text
    assert console.get("/console/static/console.css").status_code == 200
    assert console.client.get("/console/static/nothing.css").status_code == 404


def test_a_missing_cluster_is_a_page_that_says_so(console):
    r = console.get("/console/clusters/cluster-nope", status=404)
    assert "cluster-nope" in r.text and "does not exist" in r.text
    assert re.search(r"<title>[^<]*· Differential</title>", r.text)
