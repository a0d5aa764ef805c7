"""Logs (issue #15): one line per request with a request id that the answer carries back in
X-Request-Id, JSON lines with LOG_FORMAT=json (the app's and gunicorn's), and never a secret in any
line at any level (a whole flow at DEBUG with SQL_DEBUG, searched for every secret)."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
import types

import httpx
import pytest

from app.observability import logging_setup
from app.observability.logging_setup import Formatter, Redactor
from cp_helpers import MANAGEMENT_SECRET, Api
from support.server import ControlPlane, new_management_secret

NEW_ID = re.compile(r"[0-9a-f]{16}\Z")


@pytest.fixture
def backend():
    return "sqlite"  # what is logged does not depend on the database


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def _request_lines(lines: list[str], rid: str) -> list[str]:
    return [line for line in lines if "app.request" in line and rid in line]


def _records(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines]


# -- the request id ------------------------------------------------------------------------------

def test_a_plain_incoming_request_id_is_answered_and_logged(make_app, capsys):
    api = Api(make_app())
    r = api.client.get("/live", headers={"X-Request-Id": "abc.DEF-1_2"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "abc.DEF-1_2"
    lines = _request_lines(_lines(capsys), "[abc.DEF-1_2]")
    assert len(lines) == 1 and "GET /live 200 " in lines[0]


@pytest.mark.parametrize("sent", [None, "", "has space", "x" * 65, "quote\"d", "semi;colon", "caf\u00e9",
                                  "new%0Aline"])
def test_a_missing_or_unsafe_request_id_is_replaced_by_a_new_one(make_app, sent):
    api = Api(make_app())
    headers = {} if sent is None else {"X-Request-Id": sent.encode("utf-8").decode("latin-1")}
    first = api.client.get("/live", headers=headers).headers["X-Request-Id"]
    second = api.client.get("/live", headers=headers).headers["X-Request-Id"]
    assert NEW_ID.match(first) and NEW_ID.match(second) and first != second


def test_every_kind_of_error_answer_carries_a_request_id(make_app):
    app = make_app(max_body_bytes=1024)

    @app.route("/test-boom")
    def boom():
        raise RuntimeError("boom")

    api = Api(app)
    cluster = api.new_cluster()
    answers = {
        404: api.client.get("/no-such-route"),
        405: api.client.delete("/live"),
        401: api.client.get("/clusters", headers={"Authorization": "Basic sk_wrong"}),
        400: api.client.post("/jobs", headers=api.headers(cluster), data="{not json",
                             content_type="application/json"),
        413: api.client.post("/jobs", headers=api.headers(cluster), data="x" * 5000,
                             content_type="application/json"),
        500: api.client.get("/test-boom"),
    }
    for status, r in answers.items():
        assert r.status_code == status, (status, r.data)
        assert NEW_ID.match(r.headers.get("X-Request-Id", "")), status


def test_an_unhandled_errors_traceback_names_the_request_id(make_app, capsys):
    app = make_app(log_format="json")

    @app.route("/test-boom")
    def boom():
        raise RuntimeError("boom")

    r = app.test_client().get("/test-boom", headers={"X-Request-Id": "trace-me-1"})
    assert r.status_code == 500
    records = [rec for rec in _records(_lines(capsys)) if rec.get("requestId") == "trace-me-1"]
    error = next(rec for rec in records if rec["logger"] == "app.api")
    assert error["level"] == "ERROR" and "RuntimeError: boom" in error["exception"]
    line = next(rec for rec in records if rec["logger"] == "app.request")
    assert (line["status"], line["level"]) == (500, "WARNING")


# -- the line ------------------------------------------------------------------------------------

def test_one_json_line_per_request_with_its_fields(make_app, capsys):
    api = Api(make_app(log_format="json"))
    cluster = api.new_cluster()
    job_id = api.call(cluster)
    capsys.readouterr()
    r = api.client.get(f"/jobs/{job_id}?ttl=0", headers={**api.headers(cluster, "machine-7"),
                                                          "X-Request-Id": "one-line"})
    assert r.status_code == 200
    records = _records(_lines(capsys))  # every line parses: the test fails here otherwise
    mine = [rec for rec in records if rec.get("requestId") == "one-line" and rec["logger"] == "app.request"]
    assert len(mine) == 1
    line = mine[0]
    assert {k: line[k] for k in ("level", "method", "route", "status", "bytes", "clusterId", "machineId")} == {
        "level": "INFO", "method": "GET", "route": "/jobs/<job_id>", "status": 200, "bytes": len(r.data),
        "clusterId": cluster["id"], "machineId": "machine-7"}
    assert job_id not in line["route"] and isinstance(line["durationMs"], float) and line["durationMs"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["message"].startswith(f"GET /jobs/<job_id> 200 {line['durationMs']}ms {len(r.data)}B")


def test_an_unmatched_path_is_cut_and_cleaned(make_app, capsys):
    api = Api(make_app(log_format="json"))
    api.client.get("/" + "a" * 300 + "%0A%1Bx", headers={"X-Request-Id": "long-path"})
    line = next(rec for rec in _records(_lines(capsys)) if rec.get("requestId") == "long-path")
    assert line["status"] == 404 and line["route"] == "/" + "a" * 119 + "..."
    api.client.get("/x%0Ay%1B%E2%80%AE", headers={"X-Request-Id": "odd-path"})
    line = next(rec for rec in _records(_lines(capsys)) if rec.get("requestId") == "odd-path")
    assert re.fullmatch(r"/x\?y\?+", line["route"])


def test_a_long_poll_gives_one_line_when_it_ends_with_its_wait(make_app, capsys):
    api = Api(make_app())
    cluster = api.new_cluster()
    job_id = api.call(cluster)
    capsys.readouterr()
    answer = {}

    def poll():
        client = api.app.test_client()
        answer["r"] = client.get(f"/jobs/{job_id}?ttl=1500", headers={**api.headers(cluster),
                                                                       "X-Request-Id": "the-long-poll"})

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.6)
    during = _request_lines(capsys.readouterr().err.splitlines(), "[the-long-poll]")
    thread.join(timeout=20)
    after = _request_lines(_lines(capsys), "[the-long-poll]")
    assert during == [] and len(after) == 1
    assert answer["r"].headers["X-Request-Id"] == "the-long-poll"
    waited = float(re.search(r" 200 ([\d.]+)ms ", after[0]).group(1))
    assert waited >= 1400


@pytest.mark.parametrize("mode,logged", [("all", {200, 404}), ("errors", {404}), ("off", set())])
def test_request_log_modes(make_app, capsys, mode, logged):
    api = Api(make_app(request_log=mode, log_format="json"))
    capsys.readouterr()
    ok = api.client.get("/live", headers={"X-Request-Id": "mode-ok"})
    missing = api.client.get("/nothing-here", headers={"X-Request-Id": "mode-missing"})
    assert ok.headers["X-Request-Id"] == "mode-ok" and missing.headers["X-Request-Id"] == "mode-missing"
    lines = [rec for rec in _records(_lines(capsys)) if rec["logger"] == "app.request"]
    assert {rec["status"] for rec in lines} == logged


# -- redaction -----------------------------------------------------------------------------------

def _format(redactor: Redactor, message: str, *args, as_json: bool = False) -> str:
    record = logging.LogRecord("t", logging.DEBUG, __file__, 1, message, args, None)
    return Formatter(redactor, as_json=as_json).format(record)


# Fixed, random-looking values: the test ids hold them, and they must be the same in every process
# that collects the suite (pytest-xdist compares the workers' collections).
CLUSTER_SECRET = "sk_" + hashlib.sha256(b"a cluster secret").hexdigest()
ACCESS_POINT = "sk_ap_" + base64.urlsafe_b64encode(hashlib.sha256(b"an access point").digest()).decode().rstrip("=")


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("message,secret", [
    (f"cluster secret {CLUSTER_SECRET} in a sentence", CLUSTER_SECRET),
    (f"path /jobs/{ACCESS_POINT}/result", ACCESS_POINT),
    (f"json {{\"apiSecret\": \"{CLUSTER_SECRET}\"}}", CLUSTER_SECRET),
    ("Authorization: Basic c29tZSB1c2VyOnNvbWUgcGFzc3dvcmQ=", "c29tZSB1c2VyOnNvbWUgcGFzc3dvcmQ="),
    ("headers {'Authorization': 'Bearer eyJhbGciOi.eyJzdWIiOjF9.c2lnbmF0dXJl'}", "eyJhbGciOi"),
    ("authorization=opaque-token-without-digits", "opaque-token-without-digits"),
    ("x-api-key: abcDEF123456", "abcDEF123456"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG"),
    ("'SecretAccessKey': 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'", "wJalrXUtnFEMI/K7MDENG"),
    ("connecting to postgresql://app:hunter2-pw@db:5432/differential", "hunter2-pw"),
    (f"url-encoded sk_management_abc%2Bdef%2Fghi{'x' * 20}", "abc%2Bdef"),
])
def test_shapes_of_secrets_are_redacted(message, secret, as_json):
    out = _format(Redactor(), message, as_json=as_json)
    assert secret not in out and "[redacted]" in out
    if as_json:
        json.loads(out)


def test_the_values_of_secret_settings_are_redacted_whatever_their_shape():
    settings = types.SimpleNamespace(
        database_url="postgresql://u:pa55-w0rd-xyz@h/db", management_secret=MANAGEMENT_SECRET,
        secrets_key=("a2V5LW9uZS1rZXktb25lLWtleS1vbmUta2V5LW9uZQ==", "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWs="),
        aws_access_key_id="AKIAEXAMPLEKEYID", aws_secret_access_key="plainSecretNoPattern",
        metrics_token="mt-plain-metrics-token")
    redactor = Redactor(logging_setup.secrets_of(settings))
    values = ["pa55-w0rd-xyz", MANAGEMENT_SECRET, *settings.secrets_key, "plainSecretNoPattern", "AKIAEXAMPLEKEYID"]
    if any(v.field == "metrics_token" for v in logging_setup.settings_module.VARIABLES):
        values.append("mt-plain-metrics-token")  # METRICS_TOKEN, once it is a (secret) setting
    for value in values:
        out = _format(redactor, "value: %s, again %r", value, value)
        assert value not in out, value


def test_ordinary_words_are_not_redacted():
    text = ("task_scheduler_for_risk_scoring ran basic configuration; token_hash = ?; "
            "cluster-calm-otter-0123456789 machine sk_short")
    assert _format(Redactor(), text).endswith(text)


def _our_handler() -> logging.Handler:
    return next(h for h in logging.getLogger().handlers if getattr(h, "_differential_handler", False))


def test_a_record_that_cannot_be_formatted_is_not_printed_raw(make_app, capsys):
    make_app()
    record = logging.LogRecord("app.t", logging.INFO, __file__, 7, "two values %s %s", (CLUSTER_SECRET,), None)
    _our_handler().handle(record)  # logging's own handleError would print the arguments as they are
    err = capsys.readouterr().err
    assert "could not be written: TypeError" in err and CLUSTER_SECRET not in err


def test_an_uncaught_exception_in_a_thread_is_logged_redacted(make_app, capsys):
    make_app(log_format="json")
    try:
        raise RuntimeError(f"failed with {CLUSTER_SECRET}")
    except RuntimeError as exc:
        args = types.SimpleNamespace(exc_type=RuntimeError, exc_value=exc, exc_traceback=exc.__traceback__,
                                     thread=threading.current_thread())
    logging_setup._thread_died(args)
    err = capsys.readouterr().err
    record = json.loads(err.strip().splitlines()[-1])
    assert record["message"].startswith("uncaught exception in thread") and "RuntimeError" in record["exception"]
    assert CLUSTER_SECRET not in err


# -- a whole flow through gunicorn, searched for every secret --------------------------------------

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY" + secrets.token_hex(5)
METRICS_TOKEN = "metrics-" + secrets.token_hex(16)
SECRETS_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def _flow(cp: ControlPlane) -> list[str]:
    """Everything a cluster's life does, and secrets sent where they do not belong; returns the
    secrets and tokens to look for."""
    url, mgmt = cp.url, cp.management_headers
    with httpx.Client(base_url=url, timeout=30) as http:
        cluster = http.post("/clusters", headers=mgmt, json={"description": "logs"}).json()
        secret = cluster["apiSecret"]
        auth = {"Authorization": f"Basic {secret}", "x-machine-id": "machine-1"}
        poll = {"service": "svc", "limit": 5, "ttl": 200, "functions": [{"name": "fn"}]}
        assert http.post("/jobs-request", headers=auth, json=poll).status_code == 200
        job = http.post("/jobs", headers=auth, json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="}).json()
        claimed = http.post("/jobs-request", headers=auth, json=poll).json()
        assert [j["id"] for j in claimed] == [job["id"]]
        r = http.post(f"/jobs/{job['id']}/result", headers=auth,
                      json={"result": "oA==", "resultType": "resolution", "functionExecutionTime": 1})
        assert r.status_code == 204
        assert http.get(f"/jobs/{job['id']}?ttl=0", headers=auth).json()["status"] == "success"
        assert http.get("/clusters", headers=mgmt).status_code == 200
        assert http.get(f"/clusters/{cluster['id']}", headers=mgmt).status_code == 200
        wrong = "sk_" + secrets.token_hex(32)
        assert http.get("/services/svc", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
        assert http.get("/services/svc", headers={"Authorization": f"Bearer {ACCESS_POINT}"}).status_code == 401
        assert http.get("/services/svc", headers={"Authorization": f"Basic {cp.management_secret}"}).status_code == 401
        assert http.get("/clusters", headers={"Authorization": f"Basic {secret}"}).status_code == 401
        assert http.get("/services/svc", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 401
        # Secrets where they do not belong: in a path, a query, a machine id, a request id, a body.
        assert http.get(f"/nothing/{secret}?token={cp.management_secret}").status_code == 404
        assert http.get(f"/jobs/{secret}", headers=auth).status_code == 404
        assert http.get("/services/svc", headers={**auth, "x-machine-id": secret,
                                                  "X-Request-Id": cp.management_secret}).status_code == 200
        assert http.post("/jobs", headers=auth, content=f'{{"service": "{secret}"').status_code == 400
        assert http.post("/jobs", headers=auth, json={"service": METRICS_TOKEN, "targetFn": AWS_SECRET}).status_code == 400
    # An answer of the server itself (a head past its limit never reaches the app) has an id too.
    answer = _raw(cp.port, b"GET /live HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + secret.encode()
                  + b"\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ") and re.search(rb"\r\nX-Request-Id: [0-9a-f]{16}\r\n", answer), answer
    return [secret, wrong, cp.management_secret, ACCESS_POINT, METRICS_TOKEN, AWS_SECRET, SECRETS_KEY]


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _leaks(log: str, tokens: list[str]) -> list[str]:
    found = []
    for token in tokens:
        for part in {token, token.removeprefix("sk_"), token[-16:]}:
            if part in log:
                found.append(part)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_any_line_of_a_whole_flow_at_debug_with_sql_debug(log_format):
    env = {"LOG_LEVEL": "DEBUG", "SQL_DEBUG": "true", "ACCESS_LOG": "-", "LOG_FORMAT": log_format,
           "WEB_CONCURRENCY": "1", "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "METRICS_TOKEN": METRICS_TOKEN,
           "SECRETS_KEY": SECRETS_KEY}
    with ControlPlane(management_secret=new_management_secret(), env=env) as cp:
        tokens = _flow(cp)
        time.sleep(0.5)  # the access log is written after each answer
        cp.stop()
        log = cp.log_path.read_text(errors="replace")
    assert _leaks(log, tokens) == [], "secrets in the log"
    records = [json.loads(line) for line in log.splitlines() if line.strip()] if log_format == "json" else []
    messages = "\n".join(rec["message"] for rec in records) if records else log
    assert "INSERT INTO" in messages and '"POST /jobs HTTP/1.1" 201' in messages  # SQL_DEBUG and ACCESS_LOG were on
    if log_format == "json":
        loggers = {rec["logger"] for rec in records}
        assert {"gunicorn.error", "gunicorn.access", "app.request", "peewee"} <= loggers
        requests = [rec for rec in records if rec["logger"] == "app.request"]
        access = [rec for rec in records if rec["logger"] == "gunicorn.access"]
        assert all(rec["requestId"] for rec in requests)
        # gunicorn's access line ends with the same id as the app's line of that request
        assert {rec["message"].rsplit(" ", 1)[1] for rec in access} >= {rec["requestId"] for rec in requests}


def test_made_request_ids_are_unique_and_a_forked_process_draws_its_own_prefix():
    from app.observability import request_log

    made = {request_log.incoming_or_new(None) for _ in range(10_000)}
    assert len(made) == 10_000 and all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in made)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a gunicorn worker forked from its master
        os.write(write, request_log.incoming_or_new(None).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child[:8] != next(iter(made))[:8] and child not in made
