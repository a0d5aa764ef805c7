"""Property-based fuzzing of every route in GET /openapi.json against the live server (schemathesis).

Each operation is driven with schema-valid and schema-breaking inputs (schemathesis' positive and
negative modes), with valid credentials, with none and with a wrong one, and with path parameters
naming real clusters and jobs. No answer may be a 5xx, and every answer must match what the
document declares for it (status code, content type, body schema).

Bounded: a few dozen examples per operation and variant, no shrinking (a failure is reported with
a curl command instead); long-poll waits (`ttl`) are capped at 200 ms so an example never waits 20 s.
"""
from __future__ import annotations

import collections
import time
import uuid

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from faultkit import Wire
from support.server import ControlPlane

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(150)]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_TTL_MS = 200
TIME_BUDGET = 100.0  # seconds for the whole fuzzing run; the test fails if it cannot finish inside it

# (name, generation mode, credentials, real path ids, max examples)
VARIANTS = [
    ("valid-auth", GenerationMode.POSITIVE, "valid", False, 25),
    ("valid-auth-bad-input", GenerationMode.NEGATIVE, "valid", False, 25),
    ("valid-auth-real-ids", GenerationMode.POSITIVE, "valid", True, 15),
    ("no-auth", GenerationMode.POSITIVE, "none", False, 5),
    ("wrong-auth", GenerationMode.POSITIVE, "wrong", False, 5),
    ("wrong-auth-bad-input", GenerationMode.NEGATIVE, "wrong", False, 5),
]


LONG_POLLS = {("POST", "/jobs-request"): "body", ("GET", "/jobs/{jobId}"): "query",
              ("POST", "/batch-jobs-status-request"): "body"}


def _cap_ttl(case) -> None:
    """Long polls wait up to ttl (20 s when absent): cap it, so one example costs milliseconds."""
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


def test_every_route_survives_fuzzing(fresh_pg_url):
    with ControlPlane(fresh_pg_url, env={"WEB_CONCURRENCY": "2"}) as cp:
        cluster = cp.create_cluster()
        wire = Wire(cp.url, cluster, cp.management_secret)
        job_id = wire.call(service="fuzz-svc", fn="fuzz-fn")
        wire.claim("fuzz-machine", service="fuzz-svc")  # a service and a machine exist too
        wire.close()
        real_ids = {"clusterId": cluster["id"], "jobId": job_id, "serviceName": "fuzz-svc"}

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

        failures: dict[tuple, str] = {}  # (operation, variant, failure title) -> first example
        failure_counts: dict[tuple, int] = {}
        counts: dict[str, int] = {}
        slowest = [0.0, ""]
        statuses: dict[tuple, collections.Counter] = {}
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
                path_parameters = {k: v for k, v in real_ids.items() if k in path_names} if use_real_ids else None
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
                @given(case=strategy)
                def run(case):  # called at once below, inside this iteration (ruff.toml: B023)
                    seen.append(1)
                    _cap_ttl(case)
                    if creds == "none" and case.headers:
                        case.headers.pop("Authorization", None)
                        case.headers.pop("authorization", None)
                    if time.monotonic() - started > TIME_BUDGET:
                        return  # out of budget: the assertion after this variant reports it
                    t0 = time.monotonic()
                    try:
                        response = case.call(headers=headers, timeout=30)
                        statuses.setdefault((operation.label, name), collections.Counter())[response.status_code] += 1
                        if _cloud_off(response):
                            return  # cloud routes answer 501 cloud_not_configured when cloud is off
                        if response.status_code in (414, 431):
                            return  # gunicorn's own request-line/header size limits, before the app
                        case.validate_response(response, checks=CHECKS, headers=headers)
                    except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis Failure(Group)
                        titles = [getattr(e, "title", type(e).__name__) for e in getattr(exc, "exceptions", [exc])]
                        for title in titles:
                            key = (operation.label, name, title)
                            if key not in failures:
                                failures[key] = (f"{str(exc)[:1200]}\n    reproduce: "
                                                 f"{case.as_curl_command(headers=headers, base_url=cp.url)[:1500]}")
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
            assert any(200 <= code < 300 or code == 501 for code in answered), (
                f"{operation.label} never succeeded with valid credentials: {dict(answered)}")
            # Without valid credentials a protected route answers 401 and nothing else.
            if _auth_kind(operation) is not None:
                for variant in VARIANTS:
                    if variant[2] != "valid":
                        seen_codes = set(statuses.get((operation.label, variant[0]), ()))
                        assert seen_codes <= {401, 414, 431}, (
                            f"{operation.label} [{variant[0]}] answered {seen_codes} without valid credentials")
