"""Bad input on every route gets its documented 4xx as JSON, and nothing is stored."""
from __future__ import annotations

import pytest

from app import db
from app.api.routing import ROUTES
from app.models import Cluster, Event, Job
from cp_helpers import MANAGEMENT_SECRET


def stored_counts():
    from app.observability.events import events

    events.flush()
    return db.unit_of_work(lambda: (Job.select().count(), Cluster.select().count(), Event.select().count()))


def concrete(path: str, cluster_id: str) -> str:
    return (path.replace("<cluster_id>", cluster_id).replace("<job_id>", "some-job")
            .replace("<service_name>", "svc"))


def assert_error(response, status, code=None):
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.is_json, response.data[:300]
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    if code:
        assert error["code"] == code


def test_missing_and_wrong_credentials_answer_401_on_every_guarded_route(api):
    cluster = api.new_cluster()
    before = stored_counts()
    guarded = [r for r in ROUTES if r.auth]
    assert len(guarded) >= 12
    for spec in guarded:
        path = concrete(spec.path, cluster["id"])
        for headers in ({}, {"Authorization": "Basic wrong-secret"}, {"Authorization": "Basic"},
                        {"Authorization": "Bearer " + ("sk_management_" + "x" * 40)}):
            r = api.client.open(path, method=spec.method, headers=headers, json={})
            assert_error(r, 401)
    # A cluster secret is not a management secret, and the reverse.
    r = api.client.get("/clusters", headers=api.headers(cluster))
    assert_error(r, 401, "invalid_credential")
    r = api.client.post("/jobs", headers={"Authorization": f"Basic {MANAGEMENT_SECRET}"},
                        json={"service": "s", "targetFn": "f", "targetArgs": "kA=="})
    assert_error(r, 401, "invalid_credential")
    assert stored_counts() == before


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2", b"\xff\xfe", b'"just a string"', b"[]", b"null"])
def test_malformed_or_non_object_bodies_answer_400(make_app, body):
    from cp_helpers import Api

    # Cloud features on: with them off, /events/sns answers 501 before it reads a body.
    api = Api(make_app(deployment_sns_topic="arn:aws:sns:us-east-1:000000000000:t"))
    cluster = api.new_cluster()
    before = stored_counts()
    for spec in ROUTES:
        if spec.body is None:
            continue
        headers = api.mgmt if spec.auth == "management" else api.headers(cluster)
        r = api.client.open(concrete(spec.path, cluster["id"]), method=spec.method, headers=headers, data=body,
                            content_type="application/json")
        assert_error(r, 400)
    assert stored_counts() == before


WRONG = [
    ("/jobs", {"service": 1, "targetFn": "f", "targetArgs": "x"}, "service"),
    ("/jobs", {"service": "s", "targetFn": "f"}, "targetArgs"),
    ("/jobs", {"service": "", "targetFn": "f", "targetArgs": "x"}, "service"),
    ("/jobs", {"service": "s", "targetFn": "f", "targetArgs": "x", "callConfig": {"timeoutSeconds": 0}},
     "callConfig.timeoutSeconds"),
    ("/jobs", {"service": "s", "targetFn": "f", "targetArgs": "x", "callConfig": {"retryCountOnStall": -1}},
     "callConfig.retryCountOnStall"),
    ("/jobs", {"service": "s", "targetFn": "f", "targetArgs": "x", "callConfig": {"timeoutSeconds": 1.5}},
     "callConfig.timeoutSeconds"),
    ("/jobs", {"service": "s", "targetFn": "f", "targetArgs": "x", "callConfig": {"cache": {"key": "k"}}},
     "callConfig.cache.ttlSeconds"),
    ("/jobs-request", {"service": "s", "limit": -1}, "limit"),
    ("/jobs-request", {"service": "s", "limit": "5"}, "limit"),
    ("/jobs-request", {"service": "s", "functions": [{"nom": "x"}]}, "functions[0].name"),
    ("/jobs-request", {"limit": 1}, "service"),
    ("/batch-jobs-status-request", {"jobIds": "abc"}, "jobIds"),
    ("/batch-jobs-status-request", {"jobIds": [1, 2]}, "jobIds[0]"),
    ("/jobs/some-job/result", {"result": "x", "resultType": "maybe"}, "resultType"),
    ("/jobs/some-job/result", {"result": 5, "resultType": "resolution"}, "result"),
    ("/jobs/some-job/result", {"result": "x", "resultType": "resolution", "functionExecutionTime": -3},
     "functionExecutionTime"),
    ("/metrics", {"events": [{"type": "somethingElse"}]}, "events[0].type"),
    ("/metrics", {"events": {}}, "events"),
]


@pytest.mark.parametrize("path,body,field", WRONG)
def test_invalid_fields_answer_400_naming_the_field(api, path, body, field):
    cluster = api.new_cluster()
    before = stored_counts()
    r = api.client.post(path, headers=api.headers(cluster), json=body)
    assert_error(r, 400, "validation_failed")
    assert field in [f["field"] for f in r.json["error"]["details"]["fields"]]
    assert field in r.json["error"]["message"]
    assert stored_counts() == before


def test_management_input_errors(api):
    before = stored_counts()
    r = api.client.post("/clusters", headers=api.mgmt, json={"description": 5})
    assert_error(r, 400, "validation_failed")
    r = api.client.get("/clusters/cluster-nope", headers=api.mgmt)
    assert_error(r, 404, "cluster_not_found")
    r = api.client.get("/clusters/cluster-nope/settings", headers=api.mgmt)
    assert_error(r, 404)
    r = api.client.put("/clusters/cluster-nope/settings", headers=api.mgmt, json={"predictiveRetriesEnabled": True})
    assert_error(r, 404)
    cluster = api.new_cluster()
    before = stored_counts()
    r = api.client.get(f"/clusters/{cluster['id']}/service/never-seen", headers=api.mgmt)
    assert_error(r, 404, "service_not_found")
    r = api.client.get(f"/clusters/{cluster['id']}?limit=abc", headers=api.mgmt)
    assert_error(r, 400)
    r = api.client.put(f"/clusters/{cluster['id']}/settings", headers=api.mgmt, json={"unknown": True})
    assert_error(r, 400)
    assert stored_counts() == before


def test_unknown_ids_routes_and_methods(api):
    cluster = api.new_cluster()
    before = stored_counts()
    assert_error(api.client.get("/jobs/never-created?ttl=0", headers=api.headers(cluster)), 404, "job_not_found")
    assert_error(api.client.get("/no/such/route"), 404, "route_not_found")
    assert_error(api.client.post("/no/such/route", json={}), 404)
    r = api.client.delete("/jobs")
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"]
    assert_error(api.client.put("/live"), 405)
    # A result for a job that does not exist is dropped (204, as the published SDK requires).
    r = api.client.post("/jobs/never-created/result", headers=api.headers(cluster),
                        json={"result": "x", "resultType": "resolution"})
    assert r.status_code == 204
    jobs, clusters, _events = stored_counts()
    assert (jobs, clusters) == before[:2]


def test_oversized_bodies_answer_413_and_the_server_keeps_serving(make_app):
    from cp_helpers import Api

    api = Api(make_app(max_body_bytes=64 * 1024))
    cluster = api.new_cluster()
    before = stored_counts()
    big = "A" * (65 * 1024)
    r = api.client.post("/jobs", headers=api.headers(cluster), json={"service": "s", "targetFn": "f", "targetArgs": big})
    assert_error(r, 413, "payload_too_large")
    assert stored_counts() == before
    assert api.call(cluster, args="kA==")  # and it still serves


def test_missing_machine_id_on_worker_routes(api):
    cluster = api.new_cluster()
    r = api.client.post("/jobs-request", headers=api.headers(cluster, machine=None), json={"service": "s", "ttl": 0})
    assert_error(r, 400, "missing_machine_id")


def test_management_api_off_without_secret(make_app):
    from cp_helpers import Api

    api = Api(make_app(management_secret=None))
    r = api.client.post("/clusters", headers=api.mgmt)
    assert_error(r, 503, "management_secret_not_set")
    assert "MANAGEMENT_SECRET" in r.json["error"]["message"]


def test_openapi_lists_every_route_with_its_schemas(api):
    doc = api.client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    import re

    listed = {(method.upper(), re.sub(r"\{\w+\}", "{}", path)) for path, ops in doc["paths"].items() for method in ops}
    declared = {(r.method, re.sub(r"<(?:\w+:)?\w+>", "{}", r.path)) for r in ROUTES}
    assert listed == declared and len(declared) == len(ROUTES)
    create = doc["paths"]["/jobs"]["post"]
    from app.api import schemas

    assert create["requestBody"]["content"]["application/json"]["schema"] == schemas.CREATE_JOB
    assert "401" in create["responses"] and "413" in create["responses"]


def test_put_settings_takes_exactly_the_settings_get_reports(api):
    from app.api import schemas

    assert set(schemas.PUT_SETTINGS["properties"]) == set(schemas.CLUSTER_SETTINGS["properties"])
    cluster = api.new_cluster()
    path = f"/clusters/{cluster['id']}/settings"
    initial = api.client.get(path, headers=api.mgmt).json
    assert initial == {"predictiveRetriesEnabled": False, "cloudEnabled": False}
    for name in initial:  # each one alone, and it sticks
        r = api.client.put(path, headers=api.mgmt, json={name: True})
        assert r.status_code == 200 and r.json[name] is True, r.json
        assert api.client.get(path, headers=api.mgmt).json[name] is True
    r = api.client.put(path, headers=api.mgmt, json={"predictiveRetriesEnabled": False, "cloudEnabled": False})
    assert r.status_code == 200 and r.json == initial
    r = api.client.put(path, headers=api.mgmt, json={"cloudEnabled": "yes"})
    assert_error(r, 400, "validation_failed")
    assert api.client.get(path, headers=api.mgmt).json == initial


# --- the audit's M1, M2 and M4 inputs: each once answered 500 or made a job that could not finish --

BIG = "9" * 400  # a whole number past a double's range (and below Python's 4,300-digit limit)
DEEP = '{"a":' * 5000 + "1" + "}" * 5000


def _raw_post(api, path, headers, text):
    return api.client.post(path, headers=headers, data=text.encode(), content_type="application/json")


def _fields(response):
    return [f["field"] for f in response.json["error"]["details"]["fields"]]


@pytest.mark.parametrize("path,text,field", [
    ("/jobs", '{"service": "s", "targetFn": "f", "targetArgs": "kA==", "callConfig": ' + DEEP + "}", "callConfig.a"),
    ("/jobs", "[" * 100_000 + "]" * 100_000, "[0]"),
    ("/jobs", '{"service": "s", "targetFn": "f", "targetArgs": "kA==", "callConfig": {"x": '
     + "[" * 40 + "]" * 40 + "}}", "callConfig.x"),  # parses, and is deeper than any body of ours
    ("/jobs-request", '{"service": "s", "functions": [{"name": "f", "extra": ' + "[" * 60 + "]" * 60 + "}]}",
     "functions[0].extra"),  # would be stored in the service definition, then fail every read of it
    ("/jobs-request", '{"service": "s", "limit": ' + BIG + "}", "limit"),
    ("/batch-jobs-status-request", '{"jobIds": ["a"], "ttl": ' + BIG + "}", "ttl"),
    ("/jobs/x/result", '{"result": "oA==", "resultType": "resolution", "functionExecutionTime": ' + BIG + "}",
     "functionExecutionTime"),
    ("/metrics", '{"events": [{"type": "functionInvocation", "intFields": {"n": ' + BIG + "}}]}",
     "events[0].intFields.n"),
    ("/metrics", '{"events": [{"type": "functionInvocation", "intFields": {"n": -' + BIG + "}}]}",
     "events[0].intFields.n"),
])
def test_deep_nesting_and_huge_numbers_answer_400_naming_the_field(api, path, text, field):
    cluster = api.new_cluster()
    before = stored_counts()
    r = _raw_post(api, path, api.headers(cluster), text)
    assert_error(r, 400)
    assert any(f.startswith(field) for f in _fields(r)), r.json
    assert field in r.json["error"]["message"]
    assert stored_counts() == before


def test_deep_nesting_without_a_credential_answers_400(api):
    r = _raw_post(api, "/events/sns", {}, "[" * 100_000 + "]" * 100_000)
    assert r.status_code in (400, 501), r.data[:300]  # 501 first when cloud features are off
    assert r.is_json


@pytest.mark.parametrize("query,field", [("/jobs/x?ttl=" + BIG, "ttl"), ("/jobs/x?ttl=-" + BIG, "ttl")])
def test_huge_query_integers_on_the_job_protocol_answer_400(api, query, field):
    cluster = api.new_cluster()
    r = api.client.get(query, headers=api.headers(cluster))
    assert_error(r, 400, "validation_failed")
    assert field in _fields(r) and field in r.json["error"]["message"]


@pytest.mark.parametrize("suffix,field", [("?limit=" + BIG, "limit"), ("/activity?before=" + BIG, "before"),
                                          ("/activity?before=" + "9" * 19, "before"),  # past a bigint
                                          ("/activity?limit=" + "9" * 5000, "limit")])
def test_huge_query_integers_on_management_routes_answer_400(api, suffix, field):
    cluster = api.new_cluster()
    r = api.client.get(f"/clusters/{cluster['id']}{suffix}", headers=api.mgmt)
    assert_error(r, 400)
    assert field in r.json["error"]["message"]


def test_numbers_a_client_can_send_still_pass(api):
    cluster = api.new_cluster()
    api.call(cluster)
    [job] = api.claim(cluster)
    r = api.client.post(f"/jobs/{job['id']}/result", headers=api.headers(cluster),
                        json={"result": "oA==", "resultType": "resolution", "functionExecutionTime": 1e300})
    assert r.status_code == 204  # absurd but a double: clamped, as before
    r = _raw_post(api, "/metrics", api.headers(cluster),
                  '{"events": [{"type": "functionInvocation", "intFields": {"n": 1' + "0" * 300 + "}}]}")
    assert r.status_code == 204, r.data


LONG = "x" * 201


def test_long_deployment_id_answers_400_before_anything_is_stored(api):
    cluster = api.new_cluster()
    before = stored_counts()
    for machine in ("machine-a", None):
        headers = {**api.headers(cluster, machine), "x-deployment-id": "d" * 300}
        r = api.client.post("/jobs", headers=headers, json={"service": "s", "targetFn": "f", "targetArgs": "kA=="})
        assert_error(r, 400)
        assert "x-deployment-id" in r.json["error"]["message"]
        r = api.client.post("/jobs-request", headers=headers, json={"service": "s", "ttl": 0})
        assert_error(r, 400)
    assert stored_counts() == before
    headers = {**api.headers(cluster), "x-deployment-id": "d" * 200}  # the column's size is fine
    r = api.client.post("/jobs", headers=headers, json={"service": "s", "targetFn": "f", "targetArgs": "kA=="})
    assert r.status_code == 201, r.json


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/jobs/{long}/result", {"result": "oA==", "resultType": "resolution"}),
    ("GET", "/jobs/{long}?ttl=0", None),
])
def test_path_ids_longer_than_any_stored_answer_404_and_record_nothing(api, method, path, body):
    cluster = api.new_cluster()
    before = stored_counts()
    r = api.client.open(path.format(long=LONG), method=method, headers=api.headers(cluster), json=body)
    assert_error(r, 404, "job_not_found")
    assert stored_counts() == before  # no jobResultedButNotPersisted event with a 201-char job id


def test_long_management_path_ids_answer_404(api):
    cluster = api.new_cluster()
    assert_error(api.client.get(f"/clusters/{LONG}", headers=api.mgmt), 404, "cluster_not_found")
    assert_error(api.client.get(f"/clusters/{cluster['id']}/service/{LONG}", headers=api.mgmt), 404,
                 "service_not_found")


def test_metric_tag_values_fit_their_column(api):
    cluster = api.new_cluster()
    before = stored_counts()
    r = api.client.post("/metrics", headers=api.headers(cluster),
                        json={"events": [{"type": "functionInvocation", "tags": {"service": "s" * 300}}]})
    assert_error(r, 400, "validation_failed")
    assert "events[0].tags.service" in r.json["error"]["message"]
    assert stored_counts() == before


@pytest.mark.parametrize("execution_id", ["a/b", "/", "..", ".", "line\nbreak", "tab\tid", "nul\x00", "del\x7f",
                                          "trailing\n", "x" * 201, ""])
def test_execution_ids_that_cannot_round_trip_answer_400(api, execution_id):
    cluster = api.new_cluster()
    before = stored_counts()
    r = api.client.post("/jobs", headers=api.headers(cluster), json={
        "service": "s", "targetFn": "f", "targetArgs": "kA==", "callConfig": {"executionId": execution_id}})
    assert_error(r, 400, "validation_failed")
    assert "callConfig.executionId" in _fields(r)
    assert "callConfig.executionId" in r.json["error"]["message"]
    assert stored_counts() == before


@pytest.mark.parametrize("where", ["service", "targetFn", "jobs-request service", "functions[0].name"])
@pytest.mark.parametrize("name", ["x\nj/cluster-other/job", "bell\x07", "c1\x85"])
def test_names_with_control_characters_answer_400(api, where, name):
    cluster = api.new_cluster()
    before = stored_counts()
    if where in ("service", "targetFn"):
        body = {"service": "s", "targetFn": "f", "targetArgs": "kA==", where: name}
        r = api.client.post("/jobs", headers=api.headers(cluster), json=body)
        field = where
    elif where == "jobs-request service":
        r = api.client.post("/jobs-request", headers=api.headers(cluster), json={"service": name, "ttl": 0})
        field = "service"
    else:
        r = api.client.post("/jobs-request", headers=api.headers(cluster),
                            json={"service": "s", "ttl": 0, "functions": [{"name": name}]})
        field = where
    assert_error(r, 400, "validation_failed")
    assert field in _fields(r) and field in r.json["error"]["message"]
    assert stored_counts() == before


@pytest.mark.parametrize("execution_id", ["q?x=1", "h#frag", "pct%2Fx", "with space", "ünïcødé-✓", "...", "a.b",
                                          "x" * 200])
def test_execution_ids_that_round_trip_run_end_to_end(api, execution_id):
    from urllib.parse import quote

    cluster = api.new_cluster()
    assert api.call(cluster, executionId=execution_id) == execution_id
    [job] = api.claim(cluster)
    assert job["id"] == execution_id
    api.result(cluster, quote(execution_id, safe=""))
    status = api.status(cluster, quote(execution_id, safe=""))
    assert status["id"] == execution_id and status["status"] == "success", status
