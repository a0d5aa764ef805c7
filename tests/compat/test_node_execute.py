"""POST /clusters/:id/execute against a TypeScript service on the published SDK (@differentialhq/core
3.18.0, tests/node/execute_worker.mjs): JSON arguments arrive as a JavaScript caller's would, and
what the function returns (Dates, Buffers, undefined, NaN, a Set included) comes back as
the README's JSON mapping says (Map and BigInt the SDK itself refuses to send); a thrown error is a structured body; a slow call is 202, then polled."""
from __future__ import annotations

import uuid

import httpx
import pytest

from compat_helpers import Worker, serving
from support.node import NODE_DIR, start_node

pytestmark = [pytest.mark.postgres, pytest.mark.node, pytest.mark.slow]

SCRIPT = NODE_DIR / "execute_worker.mjs"

# JSON values a JavaScript function can hold exactly (integers within 2^53; see the big-integer
# row of the README's mapping for larger ones).
JSON_VALUES = [None, True, False, 0, 1, -1, -33, 127, 255, 65536, 2**31, -(2**31) - 1, 2**40, 2**53, -(2**53),
               0.5, -1.25, 1e300, 0.1, "", "hello", "é日本🎉", "x" * 70_000, [], [1, [2, [3, []]]], {},
               {"a": {"b": [None, True]}, "n": -1.5}, list(range(20)), {str(i): i for i in range(20)}]


class ExecuteWorker(Worker):
    def __init__(self, cp, cluster: dict, service: str):
        self.name = "execute"
        self.proc = start_node(SCRIPT, env={"DIFFERENTIAL_API_SECRET": cluster["apiSecret"],
                                            "DIFFERENTIAL_ENDPOINT": cp.url, "SERVICE": service})


@pytest.fixture(scope="module")
def cp(pg_admin_url, node_sdk):
    with serving("execnode") as server:
        yield server


@pytest.fixture(scope="module")
def ctx(cp):
    cluster = cp.create_cluster(f"execute-node-{uuid.uuid4().hex[:8]}")
    service = f"svc{uuid.uuid4().hex[:10]}"
    worker = ExecuteWorker(cp, cluster, service)
    try:
        worker.ready()
        token = httpx.put(f"{cp.url}/clusters/{cluster['id']}/access-point/curl", headers=cp.management_headers,
                          json={"allowedServices": service}, timeout=30).json()["token"]
        with httpx.Client(base_url=cp.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            yield {"cluster": cluster, "service": service, "http": http, "worker": worker}
    finally:
        worker.stop()


def run(ctx, function, *args, wait: float = 20):
    return ctx["http"].post(f"/clusters/{ctx['cluster']['id']}/execute",
                            json={"service": ctx["service"], "function": function, "args": list(args),
                                  "waitSeconds": wait})


def result(ctx, function, *args):
    r = run(ctx, function, *args)
    assert r.status_code == 200 and r.json()["outcome"] == "resolution", r.text
    return r.json()["result"]


def test_every_json_type_in_and_out_through_a_typescript_service(ctx):
    for value in JSON_VALUES:
        assert result(ctx, "identity", value) == value, value
    assert result(ctx, "identity", JSON_VALUES) == JSON_VALUES
    assert result(ctx, "kinds", None, True, 1, 1.5, "s", [], {}) == [
        "null", "boolean", "number", "number", "string", "array", "object"]
    assert result(ctx, "describe", {"a": [1, "two", None]}) == {"kind": "object", "json": '{"a":[1,"two",null]}'}


def test_javascript_values_come_back_as_the_documented_json(ctx):
    assert result(ctx, "jsValues") == {
        "date": "2024-01-02T03:04:05.678Z", "wholeSecond": "2024-01-02T03:04:05.000Z",
        "before1970": "1900-01-01T00:00:00.000Z", "invalidDate": None, "buffer": "AAH/", "undef": None,
        "nan": None, "inf": None, "float": 0.1, "past32Bits": 2**40, "set": [1, 2]}
    assert '"past32Bits":1099511627776,' in run(ctx, "jsValues").text  # a float64 of msgpackr's, as an integer
    assert result(ctx, "nothing") is None


def test_a_thrown_error_through_a_typescript_service(ctx):
    r = run(ctx, "fail", "no name")
    assert r.status_code == 200
    body = r.json()
    assert body["outcome"] == "rejection" and body["status"] == "success" and body["resultType"] == "rejection"
    err = body["error"]
    assert (err["name"], err["message"], err["code"], err["retryable"]) == (
        "GreetingError", "cannot greet: no name", "E_GREET", False)
    assert "GreetingError" in err["stack"]


def test_a_call_outliving_the_wait_through_a_typescript_service(ctx):
    r = run(ctx, "slow", 2000, wait=0.2)
    assert r.status_code == 202, r.text
    assert r.json()["state"] in ("pending", "running")
    final = ctx["http"].get(r.headers["Location"], params={"waitSeconds": 10})
    assert final.status_code == 200 and final.json()["result"] == {"slept": 2000}
