"""POST /clusters/:id/execute: JSON in, the same MessagePack the SDKs send, the function's result out
as JSON (not JSON text in a string, the original's defect), a remote error as a structured body, a
call that outlives the wait answered 202 with a Location to poll (not an empty 500, R6).

The decoder's mapping (engine/arguments.unpack_value) is tested alone; the routes in process on
both backends with the worker's side spoken directly; and end to end through our SDK's worker on a
real control-plane."""
from __future__ import annotations

import base64
import datetime as dt
import json
import struct
import time
import uuid

import httpx
import msgpack
import pytest

from app.engine import statements
from app.engine.arguments import ArgumentsError, pack_arguments, unpack_value
from app.engine.maintenance import ExpireDeadlines
from differential.serialize import pack

from cp_helpers import Api

UTC = dt.timezone.utc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the decoder ----------------------------------------------------------------------------------

JSON_VALUES = [None, True, False, 0, 1, -1, -32, -33, 127, 128, 255, 256, 65535, 65536, 2**31, -(2**31) - 1,
               2**53 + 1, 2**63 - 1, 2**64 - 1, -(2**63), 0.5, -1.25, 1e300, "", "hello", "é日本🎉", "x" * 70_000,
               [], [1, [2, [3, []]]], {}, {"a": {"b": [None, True]}}, list(range(20)), {str(i): i for i in range(20)}]


def test_json_values_round_trip_through_the_packer_and_the_decoder():
    assert unpack_value(pack_arguments(JSON_VALUES)) == JSON_VALUES
    for value in JSON_VALUES:
        got = unpack_value(pack_arguments([value]))[0]
        assert got == value and type(got) is type(value), value


@pytest.mark.parametrize(("packed", "expected"), [
    (b"\xd6\xff" + struct.pack(">I", 1704164645), "2024-01-02T03:04:05.000Z"),  # timestamp 32 (msgpackr, whole s)
    (b"\xd7\xff" + struct.pack(">Q", (678_000_000 << 34) | 1704164645), "2024-01-02T03:04:05.678Z"),  # 64
    (b"\xc7\x0c\xff" + struct.pack(">Iq", 0, -2208988800), "1900-01-01T00:00:00.000Z"),  # 96 (before 1970)
    (b"\xd7\xff" + struct.pack(">Q", (123_456_000 << 34) | 1704164645), "2024-01-02T03:04:05.123456Z"),
    (b"\xd7\xff" + struct.pack(">Q", (1 << 34) | 0), "1970-01-01T00:00:00.000000001Z"),
    (b"\xd4\xff\xff", None),  # msgpackr's Invalid Date
    (b"\xc7\x0c\xff" + struct.pack(">Iq", 0, 2**62), {"$timestamp": {"seconds": 2**62, "nanoseconds": 0}}),
    (b"\xd4\x00\x00", None),  # msgpackr's undefined
    (b"\xc4\x03\x00\x01\xff", "AAH/"),  # bin -> base64
    (b"\xc5\x00\x00", ""),
    (b"\xcb" + struct.pack(">d", float("nan")), None), (b"\xcb" + struct.pack(">d", float("inf")), None),
    (b"\xca" + struct.pack(">f", 1.5), 1.5), (b"\xcb" + struct.pack(">d", 2.0**53), 2**53),
    (b"\xcb" + struct.pack(">d", -3.0), -3), (b"\xcb" + struct.pack(">d", 2.0**60), 2.0**60),
    (b"\xcf" + struct.pack(">Q", 2**64 - 1), 2**64 - 1), (b"\xd3" + struct.pack(">q", -(2**63)), -(2**63)),
    (b"\xd5\x05ab", {"$ext": 5, "base64": "YWI="}), (b"\xc7\x01\x42\x07", {"$ext": 0x42, "base64": "Bw=="}),
    (b"\x83\x01\xa1a\xc0\xa1b\xc3\xa1c", {"1": "a", "null": "b", "true": "c"}),  # keys that are not text
    (b"\xa2\xc3\x28", "\ufffd("),  # not UTF-8
    (b"\x81\xa1a\x90", {"a": []}),
])
def test_the_documented_mapping(packed, expected):
    got = unpack_value(b64(packed))
    assert got == expected and type(got) is type(expected)


def test_what_our_python_sdk_and_msgpack_write_decodes():
    value = [dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), b"\x00\xff", float("-inf"), {"k": [1, 2.5]}]
    assert unpack_value(pack(value)) == ["2024-01-02T03:04:05.678Z", "AP8=", None, {"k": [1, 2.5]}]
    assert unpack_value(b64(msgpack.packb({"a": [1, 2], "b": b"x"}, use_bin_type=True))) == {"a": [1, 2], "b": "eA=="}
    assert json.dumps(unpack_value(pack([float("nan")])), allow_nan=False) == "[null]"  # valid JSON


@pytest.mark.parametrize(("text", "message"), [
    ("not base64!", "not base64"), (b64(b"\x92\x01"), "cut short"), (b64(b"\x01\x02"), "after its MessagePack"),
    (b64(b"\xc1"), "0xc1"), (b64(b"\xdd\xff\xff\xff\xff"), "cut short"), (b64(b"\x91" * 600 + b"\xc0"), "deeper"),
    (b64(b"\xa5ab"), "cut short"),
])
def test_what_is_not_messagepack_is_a_clear_error(text, message):
    with pytest.raises(ArgumentsError, match=message):
        unpack_value(text)


def test_empty_is_null():
    assert unpack_value(None) is None and unpack_value("") is None


# --- the routes, in process -----------------------------------------------------------------------

def exec_(api: Api, cluster: dict, body: dict, token: str | None = None):
    return api.client.post(f"/clusters/{cluster['id']}/execute",
                           headers={"Authorization": f"Bearer {token or cluster['apiSecret']}"}, json=body)


def poll(api: Api, cluster: dict, location: str, token: str | None = None, wait: int = 0):
    return api.client.get(f"{location}?waitSeconds={wait}",
                          headers={"Authorization": f"Bearer {token or cluster['apiSecret']}"})


def test_a_call_outliving_the_wait_is_202_with_a_location_that_gives_the_result(api):
    cluster = api.new_cluster()
    r = exec_(api, cluster, {"service": "svc", "function": "fn", "args": [{"n": 1}], "waitSeconds": 0})
    assert r.status_code == 202 and r.json == {"jobId": r.json["jobId"], "status": "pending", "state": "pending"}
    location = r.headers["Location"]
    assert location == f"/clusters/{cluster['id']}/execute/{r.json['jobId']}"
    [job] = api.claim(cluster)
    assert unpack_value(job["targetArgs"]) == [{"n": 1}] and job["targetArgs"] == pack_arguments([{"n": 1}])
    assert poll(api, cluster, location).json["state"] == "running"
    api.result(cluster, job["id"], value=pack_arguments([{"ok": True, "at": None}]))
    r = poll(api, cluster, location, wait=5)
    assert r.status_code == 200 and "Location" not in r.headers
    assert r.json == {"jobId": job["id"], "status": "success", "state": "success", "resultType": "resolution",
                      "outcome": "resolution", "result": [{"ok": True, "at": None}]}


def test_a_result_is_json_not_json_text_in_a_string(api):
    cluster = api.new_cluster()
    job_id = exec_(api, cluster, {"service": "svc", "function": "fn", "waitSeconds": 0}).json["jobId"]
    api.claim(cluster)
    api.result(cluster, job_id, value=b64(msgpack.packb({"a": [1, "two"]})))
    r = poll(api, cluster, f"/clusters/{cluster['id']}/execute/{job_id}")
    assert r.json["result"] == {"a": [1, "two"]}


def test_a_wait_returns_as_soon_as_the_result_is_in(api, app):
    import threading

    cluster = api.new_cluster()
    job_ids: list[str] = []

    def worker():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            jobs = Api(app).claim(cluster, ttl=1000)
            if jobs:
                job_ids.append(jobs[0]["id"])
                Api(app).result(cluster, jobs[0]["id"], value=b64(b"\xa4done"))
                return

    thread = threading.Thread(target=worker)
    thread.start()
    started = time.monotonic()
    r = exec_(api, cluster, {"service": "svc", "function": "fn", "waitSeconds": 15})
    thread.join()
    assert r.status_code == 200 and r.json["result"] == "done" and r.json["jobId"] == job_ids[0]
    assert time.monotonic() - started < 10


def test_a_remote_error_is_a_structured_body(api):
    cluster = api.new_cluster()
    job_id = exec_(api, cluster, {"service": "svc", "function": "fn", "waitSeconds": 0}).json["jobId"]
    api.claim(cluster)
    error = {"name": "GreetingError", "message": "cannot greet", "code": "E_GREET", "stack": "at x", "extra": [1]}
    api.result(cluster, job_id, value=b64(msgpack.packb(error)), kind="rejection")
    r = poll(api, cluster, f"/clusters/{cluster['id']}/execute/{job_id}")
    assert r.status_code == 200
    assert r.json == {"jobId": job_id, "status": "success", "state": "success", "resultType": "rejection",
                      "outcome": "rejection", "error": error}


def test_a_control_plane_failure_says_its_state_and_reason(api):
    cluster = api.new_cluster()
    job_id = exec_(api, cluster, {"service": "svc", "function": "fn", "waitSeconds": 0}).json["jobId"]
    r = api.client.post(f"/jobs/{job_id}/cancel", headers=api.headers(cluster), json={"reason": "changed my mind"})
    assert r.status_code == 200, r.json
    r = poll(api, cluster, f"/clusters/{cluster['id']}/execute/{job_id}")
    assert r.status_code == 200
    body = r.json
    assert body["outcome"] == "cancelled" and body["state"] == "cancelled" and "changed my mind" in body["reason"]
    assert body["error"]["name"] == "DifferentialCancelledError" and body["error"]["code"] == "CANCELLED"
    # A queue deadline that passed before any machine claimed it: failure, with the deadline's error.
    job_id = exec_(api, cluster, {"service": "svc", "function": "fn", "waitSeconds": 0,
                                  "callConfig": {"queueDeadlineSeconds": 30}}).json["jobId"]
    assert ExpireDeadlines().run_once(statements.database_now() + dt.timedelta(seconds=31)) == {
        "expired": 1}
    body = poll(api, cluster, f"/clusters/{cluster['id']}/execute/{job_id}").json
    assert body["outcome"] == "failure" and body["state"] == "failure" and "30 s queue deadline" in body["reason"]
    assert body["error"]["name"] == "DifferentialDeadlineError" and body["error"]["code"] == "QUEUE_DEADLINE"


def test_spent_attempts_answer_the_sdks_did_not_complete_error():
    from app.engine import execute

    status, body = execute.answer({"id": "j", "status": "failure", "state": "failure", "resultType": None,
                                   "result": None, "reason": None, "service": "svc"})
    assert status == 200 and body["outcome"] == "failure" and body["reason"] is None
    assert body["error"]["code"] == "EXECUTION_DID_NOT_COMPLETE" and body["error"]["name"] == "DifferentialError"


def test_an_undecodable_result_is_answered_not_a_500(api):
    cluster = api.new_cluster()
    job_id = exec_(api, cluster, {"service": "svc", "function": "fn", "waitSeconds": 0}).json["jobId"]
    api.claim(cluster)
    api.result(cluster, job_id, value=b64(b"\x92\x01"))
    r = poll(api, cluster, f"/clusters/{cluster['id']}/execute/{job_id}")
    assert r.status_code == 200 and r.json["result"]["$undecodable"] and r.json["result"]["base64"] == b64(b"\x92\x01")


def test_call_config_and_execution_id_go_through_the_ordinary_create(api):
    cluster = api.new_cluster()
    body = {"service": "svc", "function": "fn", "args": [1], "waitSeconds": 0,
            "callConfig": {"executionId": "order-42", "timeoutSeconds": 7, "retryCountOnStall": 0}}
    first = exec_(api, cluster, body).json
    again = exec_(api, cluster, body).json
    assert first["jobId"] == again["jobId"] == "order-42"
    detail = api.client.get(f"/clusters/{cluster['id']}/jobs/order-42", headers=api.mgmt).json
    assert detail["timeoutSeconds"] == 7 and detail["attemptsAllowed"] == 1
    assert [e["type"] for e in api.activity(cluster)].count("jobJoined") == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"service": "svc", "function": "fn", "args": {"a": 1}}, "args"),
    ({"service": "svc", "function": "fn", "args": "[1]"}, "args"),
    ({"service": "svc", "function": "fn", "args": [float("1e400")]}, None),
    ({"service": "svc", "function": "fn", "args": [2**64]}, "args[0]"),
    ({"service": "", "function": "fn"}, "service"),
    ({"service": "s\u0001", "function": "fn"}, "service"),
    ({"service": "svc", "function": "f" * 201}, "function"),
    ({"service": "svc"}, "function"),
    ({"service": "svc", "function": "fn", "waitSeconds": 21}, "waitSeconds"),
    ({"service": "svc", "function": "fn", "waitSeconds": -1}, "waitSeconds"),
    ({"service": "svc", "function": "fn", "arguments": [1]}, "arguments"),
    ({"service": "svc", "function": "fn", "callConfig": {"timeoutSeconds": 0}}, "callConfig.timeoutSeconds"),
    ({"service": "svc", "function": "fn", "callConfig": {"delaySeconds": 1, "runAt": "2030-01-01T00:00:00Z"}},
     "callConfig.runAt"),
])
def test_bad_input_is_400_naming_the_field(api, body, field):
    cluster = api.new_cluster()
    raw = json.dumps(body).replace("Infinity", "1e400")
    r = api.client.post(f"/clusters/{cluster['id']}/execute", data=raw, content_type="application/json",
                        headers={"Authorization": f"Bearer {cluster['apiSecret']}"})
    assert r.status_code == 400, r.json
    if field is not None:
        assert r.json["error"]["details"]["fields"][0]["field"] == field, r.json
    assert api.client.get(f"/clusters/{cluster['id']}/jobs", headers=api.mgmt).json["jobs"] == []


def test_args_over_max_args_bytes_are_refused_naming_the_field(make_app):
    api = Api(make_app(max_args_bytes=1024))
    cluster = api.new_cluster()
    r = exec_(api, cluster, {"service": "svc", "function": "fn", "args": ["x" * 1024]})
    assert r.status_code == 413 and r.json["error"]["details"]["field"] == "args", r.json
    assert exec_(api, cluster, {"service": "svc", "function": "fn", "args": ["x" * 100],
                                "waitSeconds": 0}).status_code == 202


def test_the_poll_route_is_limited_to_the_access_points_services(api):
    cluster = api.new_cluster()
    ours = api.client.put(f"/clusters/{cluster['id']}/access-point/ours", headers=api.mgmt,
                          json={"allowedServices": "svc"}).json["token"]
    theirs = api.client.put(f"/clusters/{cluster['id']}/access-point/theirs", headers=api.mgmt,
                            json={"allowedServices": "other"}).json["token"]
    location = exec_(api, cluster, {"service": "svc", "function": "fn", "waitSeconds": 0}, ours).headers["Location"]
    assert poll(api, cluster, location, ours).status_code == 202
    assert poll(api, cluster, location).status_code == 202  # the cluster secret reads every call
    r = poll(api, cluster, location, theirs)
    assert r.status_code == 403 and r.json["error"]["code"] == "service_not_allowed"
    r = poll(api, cluster, f"/clusters/{cluster['id']}/execute/nope", ours)
    assert r.status_code == 404 and r.json["error"]["code"] == "job_not_found"
    assert poll(api, cluster, location + "x" * 300, ours).status_code == 404
    r = api.client.get(f"{location}?waitSeconds=abc", headers={"Authorization": f"Bearer {ours}"})
    assert r.status_code == 400


def test_an_unknown_credential_is_refused_before_the_body_is_read(api):
    cluster = api.new_cluster()
    r = api.client.post(f"/clusters/{cluster['id']}/execute", data="not json",
                        headers={"Authorization": "Bearer sk_ap_nope"}, content_type="application/json")
    assert r.status_code == 401


# --- end to end through our SDK's worker ----------------------------------------------------------

@pytest.fixture(scope="module")
def real_cp(pg_admin_url):
    from support import postgres
    from support.server import ControlPlane

    url = postgres.create_database("execute")
    cp = ControlPlane(database_url=url, env={"SWEEP_INTERVAL_SECONDS": "0.5"}).start()
    yield cp
    cp.stop()
    try:
        postgres.drop_database(url)
    except Exception:
        pass


@pytest.fixture
def python_service(real_cp):
    from differential import Differential

    cluster = real_cp.create_cluster(f"execute-{uuid.uuid4().hex[:8]}")
    d = Differential(cluster["apiSecret"], endpoint=real_cp.url)
    name = f"svc{uuid.uuid4().hex[:10]}"
    svc = d.service(name, concurrency=8)
    seen: list = []

    class InsufficientFunds(Exception):
        def __init__(self, message, balance):
            super().__init__(message)
            self.code = "E_FUNDS"
            self.balance = balance

    @svc.function
    def identity(value):
        seen.append(value)
        return value

    @svc.function
    def kinds(*values):
        return [type(v).__name__ for v in values]

    @svc.function
    def python_values():
        return {"when": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "bytes": b"\x00\x01\xff",
                "nan": float("nan"), "inf": float("-inf"), "big": 2**64 - 1, "tuple": (1, 2)}

    @svc.function
    def withdraw(amount):
        raise InsufficientFunds(f"cannot withdraw {amount}", balance=12)

    @svc.function
    def slow(seconds):
        time.sleep(seconds)
        return {"slept": seconds}

    svc.start()
    token = httpx.put(f"{real_cp.url}/clusters/{cluster['id']}/access-point/curl", headers=real_cp.management_headers,
                      json={"allowedServices": [name]}, timeout=30).json()["token"]
    http = httpx.Client(base_url=real_cp.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    yield {"cluster": cluster, "service": name, "http": http, "seen": seen, "d": d}
    http.close()
    assert svc.stop(timeout=10)
    d.close()


def run(ctx, function, *args, wait=20):
    r = ctx["http"].post(f"/clusters/{ctx['cluster']['id']}/execute",
                         json={"service": ctx["service"], "function": function, "args": list(args), "waitSeconds": wait})
    return r


@pytest.mark.postgres
@pytest.mark.slow
def test_every_json_type_in_and_out_through_a_python_service(python_service):
    ctx = python_service
    for value in JSON_VALUES:
        r = run(ctx, "identity", value)
        assert r.status_code == 200, r.text
        assert r.json()["result"] == value and type(r.json()["result"]) is type(value), value
    assert ctx["seen"] == JSON_VALUES  # the service saw what an SDK caller would have sent
    sdk_result = ctx["d"].client(ctx["service"], timeout=30).identity(JSON_VALUES)
    assert run(ctx, "identity", JSON_VALUES).json()["result"] == sdk_result == JSON_VALUES
    assert run(ctx, "kinds", None, True, 1, 1.5, "s", [], {}).json()["result"] == [
        "NoneType", "bool", "int", "float", "str", "list", "dict"]
    assert run(ctx, "python_values").json()["result"] == {
        "when": "2024-01-02T03:04:05.678Z", "bytes": "AAH/", "nan": None, "inf": None, "big": 2**64 - 1,
        "tuple": [1, 2]}
    assert "18446744073709551615" in run(ctx, "python_values").text  # exact in the JSON text


@pytest.mark.postgres
@pytest.mark.slow
def test_a_remote_error_through_a_python_service(python_service):
    r = run(python_service, "withdraw", 50)
    assert r.status_code == 200
    body = r.json()
    assert body["outcome"] == "rejection" and body["resultType"] == "rejection"
    err = body["error"]
    assert (err["name"], err["message"], err["code"], err["balance"]) == ("InsufficientFunds", "cannot withdraw 50",
                                                                          "E_FUNDS", 12)
    assert "Traceback" in err["stack"]


@pytest.mark.postgres
@pytest.mark.slow
def test_a_call_outliving_the_wait_through_a_python_service(python_service):
    ctx = python_service
    r = run(ctx, "slow", 2, wait=0.2)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    final = ctx["http"].get(location, params={"waitSeconds": 10})
    assert final.status_code == 200 and final.json()["result"] == {"slept": 2}
    assert final.json()["jobId"] == r.json()["jobId"]
