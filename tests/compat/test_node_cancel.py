"""The published @differentialhq/core 3.18.0 caller, cancelled mid-call (issue 14): its results
poller acts only on `success` and `failure`, so a cancelled job answers `success` with a packed
rejection, which the SDK throws as an error carrying our message. Its worker's late result is
fenced (answered 204: the worker lives on)."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest


from compat_helpers import Worker, get_job, json_lines, serving, start_caller
from support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.node, pytest.mark.slow]


@pytest.fixture(scope="module")
def cp(pg_admin_url, node_sdk):
    with serving("cancel", {"SWEEP_INTERVAL_SECONDS": "0.5"}) as server:
        yield server


def _running_job(cp, cluster, fn):
    r = httpx.get(f"{cp.url}/clusters/{cluster['id']}", headers=cp.management_headers, timeout=10)
    return next((j for j in r.json()["jobs"] if j["targetFn"] == fn and j["status"] == "running"), None)


def test_the_published_callers_call_cancelled_mid_call_throws_a_clear_error(cp):
    cluster = cp.create_cluster(f"cancel-{uuid.uuid4().hex[:8]}")
    service = f"svc{uuid.uuid4().hex[:10]}"
    worker = Worker(cp, cluster, service).ready()
    caller = start_caller(cp, cluster, service, "cancelled", SLOW_MS=8000)
    try:
        job = wait_until(lambda: _running_job(cp, cluster, "slow"), timeout=30, what="the slow call to run")
        r = httpx.post(f"{cp.url}/clusters/{cluster['id']}/jobs/{job['id']}/cancel", headers=cp.management_headers,
                       json={"reason": "deploy in progress"}, timeout=10)
        assert r.status_code == 200, r.text
        cancelled_at = time.monotonic()
        assert caller.wait(timeout=30) == 0
        out = [x for x in json_lines(Path(caller.log_path).read_text()) if x.get("scenario") == "cancelled"][-1]
        assert time.monotonic() - cancelled_at < 8  # not waiting out the 8 s function
        assert out["threw"] is True and out["isError"] is True
        assert out["name"] == "DifferentialCancelledError" and out["code"] == "CANCELLED"
        assert out["message"] == (f"call {job['id']} of {service}.slow was cancelled by an operator: "
                                  "deploy in progress")
        assert out["ms"] < 8000
        # The worker finishes its 8 s function and posts: fenced, answered 204, the worker lives on.
        def fenced():
            r = httpx.get(f"{cp.url}/clusters/{cluster['id']}/activity", params={"jobId": job["id"]},
                          headers=cp.management_headers, timeout=10)
            return next((e for e in r.json()["events"] if e["type"] == "jobResultedButNotPersisted"), None)
        event = wait_until(fenced, timeout=30, what="the late result to be fenced")
        assert event["meta"]["reason"] == "job is cancelled"
        assert worker.proc.poll() is None
        assert get_job(cp, cluster, job["id"])["state"] == "cancelled"
    finally:
        if caller.poll() is None:
            caller.kill()
        worker.stop()
