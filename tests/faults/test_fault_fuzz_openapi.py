"""Property-based fuzzing of every route in GET /openapi.json against the live server (schemathesis).

Each operation is driven with schema-valid and schema-breaking inputs (schemathesis' positive and
negative modes), with valid credentials, with none and with a wrong one, and with path parameters
naming real clusters and jobs. No answer may be a 5xx, and every answer must match what the
document declares for it (status code, content type, body schema).

Bounded: a few dozen examples per operation and variant, no shrinking (a failure is reported with
a curl command instead); long-poll waits (`ttl`) are capped at 200 ms so an example never waits 20 s.

Schema-driven generation stays near the schema: it never sent the inputs that once answered 500
(audit M1, M2). So about half the examples are also made hostile (`HOSTILE`): an integer of 309
to 4,300 digits in a numeric body field or query parameter, JSON nested up to 100,000 levels
inside the body, or an id header longer than its column.
"""
from __future__ import annotations

import collections
import json
import time
import uuid

import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from faultkit import Wire
from support.server import ControlPlane
from support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(600)]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_TTL_MS = 200
# Seconds for the whole fuzzing run (about 60 operations; it shares the machine with another test
# process in scripts/test's parallel pass); the test fails if it cannot finish inside it.
TIME_BUDGET = 420.0

# (name, generation mode, credentials, real path ids, max examples)
VARIANTS = [
    ("valid-auth", GenerationMode.POSITIVE, "valid", False, 25),
    ("valid-auth-bad-input", GenerationMode.NEGATIVE, "valid", False, 25),
    ("valid-auth-real-ids", GenerationMode.POSITIVE, "valid", True, 15),
    ("no-auth", GenerationMode.POSITIVE, "none", False, 5),
    ("wrong-auth", GenerationMode.POSITIVE, "wrong", False, 5),
    ("wrong-auth-bad-input", GenerationMode.NEGATIVE, "wrong", False, 5),
]


# Routes that end or change the cluster they name (its secret): with real ids, they get a cluster of
# their own, so the fuzzed cluster and its secret stay for every other route.
SACRIFICED = {("DELETE", "/clusters/{clusterId}"), ("POST", "/clusters/{clusterId}/secret/rotate")}

# Routes whose success needs a target another route made first (a deployment still uploading, a
# client library still reserved) or a URL the control-plane signed: fuzzing checks their refusals
# (no 5xx, answers as documented); their successes are tested in tests/controlplane/test_assets.py.
# A deployment exists only with the cloud settings, which the fuzzed server lacks (its other routes
# answer 501 there): reading one is tested in tests/controlplane/test_deployments.py.
NEEDS_A_TARGET = {("POST", "/clusters/{clusterId}/assets"), ("PUT", "/assets/{key}"),
                  ("GET", "/clusters/{clusterId}/service/{service}/deployments/{deploymentId}")}

LONG_POLLS = {("POST", "/jobs-request"): "body", ("GET", "/jobs/{jobId}"): "query",
              ("POST", "/batch-jobs-status-request"): "body"}


# Synchronous calls wait up to waitSeconds (20 s when absent): capped the same way.
WAITS = {("POST", "/clusters/{clusterId}/execute"): "body", ("GET", "/clusters/{clusterId}/execute/{jobId}"): "query"}


def _cap_wait(case) -> None:
    where = WAITS.get((case.operation.method.upper(), case.operation.path))
    if where == "query":
        case.query = {**(case.query or {}), "waitSeconds": 0}
    elif where == "body" and isinstance(case.body, dict):
        case.body["waitSeconds"] = 0


def _cap_ttl(case) -> None:
    """Long polls wait up to ttl (20 s when absent): cap it, so one example costs milliseconds."""
    _cap_wait(case)
    where = LONG_POLLS.get((case.operation.method.upper(), case.operation.path))
    if where is None:
        return
    if where == "query" and case.query is None:
        case.query = {}
    container = case.body if where == "body" else case.query
    if not isinstance(container, dict):
        return
    ttl = container.get("ttl")
    if "ttl" not in container or (isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > MAX_TTL_MS):
        container["ttl"] = MAX_TTL_MS


# (kind, parameter): what a hostile example changes; None leaves the example as generated.
HOSTILE = st.one_of(
    st.none(),
    st.tuples(st.just("huge"), st.integers(309, 4300), st.booleans(), st.integers(0, 1000)),
    st.tuples(st.just("deep"), st.sampled_from([33, 64, 900, 5000, 100_000]), st.booleans(), st.integers(0, 1000)),
    st.tuples(st.just("header"), st.sampled_from(["x-deployment-id", "x-machine-id"]), st.integers(201, 6000),
              st.integers(0, 1000)),
)
_DEEP = "__deep_nesting__"


def _numeric_paths(schema: dict, path: tuple = ()) -> list[tuple]:
    """Paths (keys, 0 for an array's first item) to every number the body schema declares."""
    if not isinstance(schema, dict):
        return []
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "integer" in kinds or "number" in kinds:
        return [path]
    found = []
    for name, prop in (schema.get("properties") or {}).items():
        found += _numeric_paths(prop, path + (name,))
    if isinstance(schema.get("additionalProperties"), dict):
        found += _numeric_paths(schema["additionalProperties"], path + ("n",))
    if isinstance(schema.get("items"), dict):
        found += _numeric_paths(schema["items"], path + (0,))
    return found


def _object_paths(schema: dict, path: tuple = ()) -> list[tuple]:
    """Paths to every object the body schema declares (the body itself included)."""
    if not isinstance(schema, dict) or schema.get("type") not in ("object", None) or "properties" not in schema:
        return []
    found = [path]
    for name, prop in schema["properties"].items():
        found += _object_paths(prop, path + (name,))
    return found


def _put(body, path: tuple, value):
    """body with value at path, making the containers on the way."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if head == 0:
        items = body if isinstance(body, list) and body else [{}]
        items[0] = _put(items[0] if isinstance(items[0], (dict, list)) else {}, rest, value)
        return items
    container = body if isinstance(body, dict) else {}
    container[head] = _put(container.get(head, {}), rest, value)
    return container


def _body_schema(operation) -> dict | None:
    body = operation.definition.raw.get("requestBody") or {}
    return ((body.get("content") or {}).get("application/json") or {}).get("schema")


def _make_hostile(case, hostile) -> tuple[str | None, dict]:
    """Apply a HOSTILE draw to case: (a raw JSON body to send instead of case.body, or None;
    headers to send over the variant's own)."""
    if hostile is None:
        return None, {}
    kind, param, flag, pick = hostile
    schema = _body_schema(case.operation)
    if kind == "header":
        return None, {param: "h" * flag}
    if kind == "huge":
        number = int("9" * param) * (-1 if flag else 1)
        query = [p["name"] for p in case.operation.definition.raw.get("parameters", [])
                 if p.get("in") == "query" and (p.get("schema") or {}).get("type") in ("integer", "number")]
        targets = [("query", name) for name in query] + [("body", path) for path in _numeric_paths(schema)]
        if targets:
            where, target = targets[pick % len(targets)]
            if where == "query":
                case.query = {**(case.query or {}), target: str(number)}
            else:
                case.body = _put(case.body if isinstance(case.body, dict) else {}, target, number)
        return None, {}
    if schema is None:
        return None, {}
    objects = _object_paths(schema) or [()]
    body = _put(case.body if isinstance(case.body, dict) else {}, objects[pick % len(objects)] + ("deep",), _DEEP)
    open_, close = ("[", "]") if flag else ('{"a":', "}")
    return json.dumps(body).replace(json.dumps(_DEEP), open_ * param + "1" + close * param, 1), {}


def _send_raw(case, raw: str, base_url: str, headers: dict) -> Response:
    """case's request with raw as its JSON body (too deep for any JSON encoder to write)."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
    for key in ("json", "data"):
        kwargs.pop(key, None)
    kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": "application/json"}
    return Response.from_requests(requests.request(**kwargs, data=raw.encode(), timeout=30), verify=True)


def _cloud_off(response) -> bool:
    if response.status_code != 501:
        return False
    try:
        return response.json()["error"]["code"] == "cloud_not_configured"
    except Exception:
        return False


def _auth_kind(operation) -> str | None:
    security = operation.definition.raw.get("security") or []
    names = {name for requirement in security for name in requirement}
    return "management" if "managementSecret" in names else "cluster" if "clusterSecret" in names else None


def _publish_clients(cp, cluster_id: str) -> dict:
    """A published TypeScript and Python client and a registry token of the fuzzed cluster: the
    registry routes' real ids (api/client_libraries.py, api/registry.py)."""
    mgmt = {"Authorization": f"Basic {cp.management_secret}"}
    base = f"{cp.url}/clusters/{cluster_id}"
    ids = {}
    for language in ("typescript", "python"):
        made = requests.post(f"{base}/client-libraries", json={"language": language}, headers=mgmt, timeout=30).json()
        upload = requests.post(f"{base}/assets", json={"type": "client_library", "target": made["id"]}, headers=mgmt,
                               timeout=30).json()
        requests.put(upload["presignedUrl"], data=b"fuzz", headers=upload["headers"], timeout=30).raise_for_status()
        requests.post(f"{base}/client-libraries/{made['id']}/publish", headers=mgmt, timeout=30).raise_for_status()
        ids["libraryId"] = made["id"]
        if language == "typescript":
            ids["fileName"] = made["fileName"]
        else:
            ids.update(wheelName=made["fileName"], project=made["distribution"])
    ids["tokenId"] = requests.post(f"{base}/registry-tokens", json={"name": "fuzz"}, headers=mgmt, timeout=30).json()["id"]
    return ids


def test_every_route_survives_fuzzing(fresh_pg_url):
    with ControlPlane(fresh_pg_url, env={"WEB_CONCURRENCY": "2"}) as cp:
        cluster = cp.create_cluster()
        wire = Wire(cp.url, cluster, cp.management_secret)
        job_id = wire.call(service="fuzz-svc", fn="fuzz-fn", timeoutSeconds=1, retryCountOnStall=0)
        wire.claim("fuzz-machine", service="fuzz-svc")  # a service and a machine exist too
        # Its one attempt times out and the control-plane gives up: a failed job the re-run route can take.
        wait_until(lambda: wire.status(job_id)["status"] == "failure", timeout=30, what="the fuzzed job to fail")
        # And one nobody serves, pending: the cancel routes' (cancelling it again answers 200 too).
        pending_id = wire.call(service="fuzz-unserved", fn="fuzz-fn")
        wire.close()
        real_ids = {"clusterId": cluster["id"], "jobId": job_id, "serviceName": "fuzz-svc",
                    "name": "nightly-report",  # the schedule the create example below makes
                    **_publish_clients(cp, cluster["id"])}

        schema = schemathesis.openapi.from_url(cp.url + "/openapi.json")
        headers_for = {
            ("management", "valid"): {"Authorization": f"Basic {cp.management_secret}"},
            ("cluster", "valid"): {"Authorization": f"Basic {cluster['apiSecret']}", "x-machine-id": "fuzz-machine"},
            ("management", "wrong"): {"Authorization": "Basic sk_management_" + "x" * 40},
            ("cluster", "wrong"): {"Authorization": f"Basic {uuid.uuid4().hex}", "x-machine-id": "fuzz-machine"},
        }

        operations = []
        for result in schema.get_all_operations():
            operations.append(result.ok())  # an operation schemathesis cannot load is itself a failure
        labels = sorted(op.label for op in operations)
        assert len(operations) >= 15, f"expected every route in /openapi.json, got {labels}"

        statuses: dict[tuple, collections.Counter] = {}
        # A body a schema cannot describe whole (a cron expression, a time zone) is rarely valid when
        # generated; the examples the document gives for it must be, so they are sent first.
        for operation in operations:
            media = (operation.definition.raw.get("requestBody") or {}).get("content", {}).get("application/json", {})
            for example in (media.get("examples") or {}).values():
                kind = _auth_kind(operation)
                response = requests.request(operation.method.upper(), cp.url + operation.path.format(**real_ids),
                                            json=example["value"], headers=headers_for.get((kind, "valid"), {}),
                                            timeout=30)
                assert 200 <= response.status_code < 300, (operation.label, example, response.text)
                statuses.setdefault((operation.label, "valid-auth-real-ids"), collections.Counter())[
                    response.status_code] += 1

        failures: dict[tuple, str] = {}  # (operation, variant, failure title) -> first example
        failure_counts: dict[tuple, int] = {}
        counts: dict[str, int] = {}
        slowest = [0.0, ""]
        started = time.monotonic()
        for operation in operations:
            kind = _auth_kind(operation)
            path_names = {p.name for p in operation.path_parameters}
            for name, mode, creds, use_real_ids, max_examples in VARIANTS:
                if use_real_ids and not path_names:
                    continue
                if creds != "valid" and kind is None:
                    continue  # public routes: nothing to withhold
                headers = headers_for.get((kind, creds), {}) if kind else {}
                if creds == "none":
                    headers = {}
                ids = {**real_ids, "jobId": pending_id} if operation.path.endswith("/cancel") else real_ids
                if (operation.method.upper(), operation.path) in SACRIFICED:  # each on a cluster of its own
                    ids = {**ids, "clusterId": cp.create_cluster(f"fuzzed by {operation.label}")["id"]}
                path_parameters = {k: v for k, v in ids.items() if k in path_names} if use_real_ids else None
                try:
                    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                except Exception as exc:  # e.g. no negative variant exists for a body-less operation
                    counts[f"{operation.label} {name}"] = 0
                    if mode is GenerationMode.NEGATIVE:
                        continue
                    raise AssertionError(f"{operation.label} {name}: cannot build a strategy: {exc!r}") from exc
                seen: list = []

                @hypothesis.settings(max_examples=max_examples, deadline=None, database=None, derandomize=False,
                                     phases=[Phase.explicit, Phase.generate],
                                     suppress_health_check=list(HealthCheck))
                @given(case=strategy, hostile=HOSTILE)
                def run(case, hostile):  # called at once below, inside this iteration (ruff.toml: B023)
                    seen.append(1)
                    _cap_ttl(case)
                    if creds == "none" and case.headers:
                        case.headers.pop("Authorization", None)
                        case.headers.pop("authorization", None)
                    raw, extra = _make_hostile(case, hostile)  # after the ttl cap: a huge ttl stays huge
                    sent = {**headers, **extra}
                    if time.monotonic() - started > TIME_BUDGET:
                        return  # out of budget: the assertion after this variant reports it
                    t0 = time.monotonic()
                    try:
                        if raw is None:
                            response = case.call(headers=sent, timeout=30)
                        else:
                            response = _send_raw(case, raw, cp.url, sent)
                        statuses.setdefault((operation.label, name), collections.Counter())[response.status_code] += 1
                        if _cloud_off(response):
                            return  # cloud routes answer 501 cloud_not_configured when cloud is off
                        if response.status_code in (414, 431):
                            return  # gunicorn's own request-line/header size limits, before the app
                        case.validate_response(response, checks=CHECKS, headers=sent)
                    except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis Failure(Group)
                        titles = [getattr(e, "title", type(e).__name__) for e in getattr(exc, "exceptions", [exc])]
                        for title in titles:
                            key = (operation.label, name, title)
                            if key not in failures:
                                failures[key] = (f"{str(exc)[:1200]}\n    reproduce: "
                                                 f"{case.as_curl_command(headers=sent, base_url=cp.url)[:1500]}"
                                                 + (f" (with the body {raw[:300]}…)" if raw else ""))
                            failure_counts[key] = failure_counts.get(key, 0) + 1
                    took = time.monotonic() - t0
                    if took > slowest[0]:
                        slowest[:] = [took, f"{operation.label} [{name}]"]

                try:
                    run()
                except hypothesis.errors.Unsatisfiable:
                    # Nothing in this operation can be made invalid (e.g. GET /clusters: no inputs).
                    if mode is not GenerationMode.NEGATIVE:
                        raise
                counts[f"{operation.label} {name}"] = len(seen)
                assert time.monotonic() - started < TIME_BUDGET, (
                    f"fuzzing exceeded its {TIME_BUDGET:.0f}s budget at {operation.label} {name}")

        elapsed = time.monotonic() - started
        total = sum(counts.values())
        print(f"\nfuzzed {len(operations)} operations, {total} requests in {elapsed:.1f}s; "
              f"slowest {slowest[0]:.2f}s ({slowest[1]})")
        assert not failures, f"{len(failures)} distinct failures:\n" + "\n".join(
            f"--- {op} [{variant}] {title} x{failure_counts[(op, variant, title)]}\n{example}"
            for (op, variant, title), example in list(failures.items())[:12])
        for operation in operations:
            # Every operation was exercised, and valid credentials got real answers (some 2xx).
            assert counts.get(f"{operation.label} valid-auth", 0) > 0, f"{operation.label} was never called"
            answered = sum((statuses.get((operation.label, v[0]), collections.Counter()) for v in VARIANTS
                            if v[2] == "valid"), collections.Counter())
            assert any(200 <= code < 300 or code == 501 for code in answered) or (
                (operation.method.upper(), operation.path) in NEEDS_A_TARGET and answered), (
                f"{operation.label} never succeeded with valid credentials: {dict(answered)}")
            # Without valid credentials a protected route answers 401 and nothing else.
            if _auth_kind(operation) is not None:
                for variant in VARIANTS:
                    if variant[2] != "valid":
                        seen_codes = set(statuses.get((operation.label, variant[0]), ()))
                        assert seen_codes <= {401, 414, 431}, (
                            f"{operation.label} [{variant[0]}] answered {seen_codes} without valid credentials")
