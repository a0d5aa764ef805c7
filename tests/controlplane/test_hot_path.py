"""The hot path (app/api/hot_path.py): POST /jobs and POST /jobs/:id/result served before Flask.

Each request below is sent to the hot path and to the Flask app behind it (`fallback`), and the
two answers must be the same: status, headers (but the request id) and body, for good requests
and for every kind of bad one. The hot path must also serve these two routes without Flask, log
the same line and count the same metrics, and leave every other path to Flask.
"""
from __future__ import annotations

import json
import re

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from app import db
from app.api import jobs as job_routes
from app.observability import prometheus
from cp_helpers import Api

JOB_ID = re.compile(rb'\{"id":"[0-9A-Z]{26}"\}\n\Z')
CREATE = {"service": "svc", "targetFn": "fn", "targetArgs": "kA=="}
RESULT = {"result": "oA==", "resultType": "resolution", "functionExecutionTime": 3}


@pytest.fixture
def backend():
    return "sqlite"  # the answers do not depend on the database; the engine's tests cover both


class _Spy:
    """The Flask app behind the hot path, recording the paths it was given."""

    def __init__(self, wsgi):
        self.wsgi, self.paths = wsgi, []

    def __call__(self, environ, start_response):
        self.paths.append(environ["PATH_INFO"])
        return self.wsgi(environ, start_response)


@pytest.fixture
def setup(make_app):
    app = make_app(max_body_bytes=4096, max_args_bytes=1024)
    api = Api(app)
    cluster = api.new_cluster()
    hot = app.wsgi_app
    spy = _Spy(hot.fallback)
    hot.fallback = spy
    return api, cluster, Client(hot, Response), Client(spy.wsgi, Response), spy


def _answer(response) -> tuple:
    headers = [(k, v) for k, v in response.headers.items() if k != "X-Request-Id"]
    return response.status, headers, response.data


def _cases(secret: str):
    auth = {"Authorization": f"Basic {secret}", "x-machine-id": "machine-a"}
    create, result = json.dumps(CREATE).encode(), json.dumps(RESULT).encode()
    return {
        "create": ("/jobs", create, auth),
        "create without machine": ("/jobs", create, {"Authorization": auth["Authorization"]}),
        "create, bare token": ("/jobs", create, {"Authorization": secret}),
        "create with an executionId": ("/jobs", json.dumps({**CREATE, "callConfig": {"executionId": "e-1"}}).encode(), auth),
        "malformed JSON": ("/jobs", b'{"service": "svc"', auth),
        "empty body": ("/jobs", b"", auth),
        "a JSON array": ("/jobs", b"[]", auth),
        "schema violation": ("/jobs", json.dumps({**CREATE, "service": 7}).encode(), auth),
        "nested too deep": ("/jobs", b"[" * 100_000 + b"]" * 100_000, auth),
        "args over MAX_ARGS_BYTES": ("/jobs", json.dumps({**CREATE, "targetArgs": "A" * 2000}).encode(), auth),
        "body over MAX_BODY_BYTES": ("/jobs", b" " * 5000, auth),
        "wrong secret": ("/jobs", create, {"Authorization": "Basic sk_wrong", "x-machine-id": "m"}),
        "no credential": ("/jobs", create, {}),
        "long machine id": ("/jobs", create, {**auth, "x-machine-id": "m" * 201}),
        "NUL in machine id": ("/jobs", create, {**auth, "x-machine-id": "a\x00b"}),
        "long deployment id": ("/jobs", create, {**auth, "x-deployment-id": "d" * 201}),
        "result of an unknown job": ("/jobs/no-such-job/result", result, auth),
        "result without machine": ("/jobs/no-such-job/result", result, {"Authorization": auth["Authorization"]}),
        "result, bad type": ("/jobs/no-such-job/result", json.dumps({**RESULT, "resultType": "x"}).encode(), auth),
        "result, huge execution time": ("/jobs/no-such-job/result",
                                        json.dumps({**RESULT, "functionExecutionTime": 10**30}).encode(), auth),
        "result, long job id": ("/jobs/" + "j" * 201 + "/result", result, auth),
        "result, NUL in job id": ("/jobs/a%00b/result", result, auth),
        "result, UTF-8 job id": ("/jobs/%C3%A9t%C3%A9/result", result, auth),
        "result, not UTF-8": ("/jobs/%FF%FE/result", result, auth),
        "result, wrong secret": ("/jobs/x/result", result, {"Authorization": "Basic sk_wrong"}),
    }


CASES = list(_cases("sk_placeholder"))


@pytest.mark.parametrize("case", CASES)
def test_the_hot_path_answers_as_flask_does_and_without_it(setup, case):
    api, cluster, hot, flask, spy = setup
    path, body, headers = _cases(cluster["apiSecret"])[case]
    through_hot = hot.post(path, data=body, headers=headers, content_type="application/json")
    assert spy.paths == [], "the hot path handed this request to Flask"
    through_flask = flask.post(path, data=body, headers=headers, content_type="application/json")
    hot_answer, flask_answer = _answer(through_hot), _answer(through_flask)
    if through_hot.status_code == 201 and hot_answer[2] != flask_answer[2]:  # two creates, two new ids
        assert JOB_ID.match(hot_answer[2]) and JOB_ID.match(flask_answer[2])
        hot_answer, flask_answer = hot_answer[:2], flask_answer[:2]
    assert hot_answer == flask_answer
    assert re.fullmatch(r"[0-9a-f]{16}", through_hot.headers["X-Request-Id"])


def test_a_call_made_through_the_hot_path_runs_and_its_result_is_fenced(setup):
    api, cluster, hot, _flask, spy = setup
    headers = api.headers(cluster)
    created = hot.post("/jobs", json=CREATE, headers=headers)
    assert created.status_code == 201
    job_id = created.json["id"]
    assert [job["id"] for job in api.claim(cluster)] == [job_id]
    reported = hot.post(f"/jobs/{job_id}/result", json=RESULT, headers=headers)
    assert (reported.status_code, reported.data) == (204, b"")
    again = hot.post(f"/jobs/{job_id}/result", json={**RESULT, "result": "oB=="}, headers=headers)
    assert again.status_code == 204  # fenced: the first result stands
    assert api.status(cluster, job_id)["result"] == "oA=="
    once = {**CREATE, "callConfig": {"executionId": "once"}}
    assert [hot.post("/jobs", json=once, headers=headers).json["id"] for _ in range(2)] == ["once", "once"]
    assert [path for path in spy.paths if path == "/jobs" or path.endswith("/result")] == []  # claims went to Flask


@pytest.mark.parametrize("method, path", [
    ("POST", "/jobs/"), ("POST", "/jobs//result"), ("POST", "/jobs/a/b/result"), ("POST", "/jobs/a/result/"),
    ("POST", "/jobs/result"), ("GET", "/jobs"), ("PUT", "/jobs/a/result"), ("POST", "/jobs-request"),
    ("POST", "/batch-jobs-status-request"), ("POST", "/jobs/a/cancel"),
])
def test_every_other_request_goes_to_flask(setup, method, path):
    api, cluster, hot, flask, spy = setup
    through_hot = hot.open(path, method=method, json={}, headers=api.headers(cluster))
    assert spy.paths == [path]
    through_flask = flask.open(path, method=method, json={}, headers=api.headers(cluster))
    assert through_hot.status_code == through_flask.status_code


def test_its_requests_are_logged_and_counted_as_flasks_are(make_app, capsys):
    api = Api(make_app(log_format="json"))
    cluster = api.new_cluster()
    hot, flask = Client(api.app.wsgi_app, Response), Client(api.app.wsgi_app.fallback, Response)

    def counted(status: str) -> float:
        child = prometheus.HTTP_REQUESTS.labels("POST", "/jobs", status)
        return child._value.get()

    before = counted("201")
    for client, rid in ((hot, "via-hot"), (flask, "via-flask")):
        r = client.post("/jobs", json=CREATE, headers={**api.headers(cluster, "machine-7"), "X-Request-Id": rid})
        assert r.status_code == 201 and r.headers["X-Request-Id"] == rid
        r = client.post("/jobs/x/result", data=b"{", headers={**api.headers(cluster), "X-Request-Id": rid + "-bad"})
        assert r.status_code == 400
    assert counted("201") == before + 2
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    def line(rid):
        [found] = [rec for rec in records if rec.get("requestId") == rid and rec["logger"] == "app.request"]
        return {k: v for k, v in found.items() if k not in ("time", "durationMs", "message", "requestId")}

    assert line("via-hot") == line("via-flask")
    assert line("via-hot")["route"] == "/jobs" and line("via-hot")["clusterId"] == cluster["id"]
    assert line("via-hot-bad") == line("via-flask-bad")
    assert line("via-hot-bad")["route"] == "/jobs/<job_id>/result" and line("via-hot-bad")["status"] == 400


@pytest.mark.parametrize("failure, status, code", [(RuntimeError("boom"), 500, "internal_error"),
                                                   (None, 503, "database_unavailable")])
def test_an_unexpected_error_is_answered_and_logged_by_the_apps_handler(make_app, monkeypatch, capsys, failure,
                                                                       status, code):
    api = Api(make_app(log_format="json"))
    cluster = api.new_cluster()
    hot, flask = Client(api.app.wsgi_app, Response), Client(api.app.wsgi_app.fallback, Response)
    if failure is None:  # what a database that went away raises
        failure = db.CONNECTION_ERRORS[0]("the server closed the connection unexpectedly")
    assert db.is_unavailable(failure) == (status == 503)

    def fail(*_args, **_kwargs):
        raise failure

    monkeypatch.setattr(job_routes, "create_call", fail)
    answers = [client.post("/jobs", json=CREATE, headers={**api.headers(cluster), "X-Request-Id": rid})
               for client, rid in ((hot, "hot-boom"), (flask, "flask-boom"))]
    assert [(r.status_code, r.json["error"]["code"]) for r in answers] == [(status, code)] * 2
    assert answers[0].data == answers[1].data
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [error] = [rec for rec in records if rec.get("requestId") == "hot-boom" and rec["logger"] == "app.api"]
    assert error["level"] == "ERROR" and type(failure).__name__ in error["exception"]
    [line] = [rec for rec in records if rec.get("requestId") == "hot-boom" and rec["logger"] == "app.request"]
    assert (line["status"], line["level"]) == (status, "WARNING")
