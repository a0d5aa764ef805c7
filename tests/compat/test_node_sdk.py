"""The real @differentialhq/core 3.18.0 under Node against the real control-plane (gunicorn on
PostgreSQL): values, errors, cache, background calls, 500 concurrent calls, a SIGKILLed worker."""
from __future__ import annotations

import base64
import statistics
import time
import uuid
from pathlib import Path

import httpx
import msgpack
import pytest

from support.server import ControlPlane

from compat_helpers import Worker, get_job, json_lines, run_caller, serving, start_caller
from support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.node, pytest.mark.slow]


@pytest.fixture(scope="module")
def cp(pg_admin_url, node_sdk):
    with serving("compat") as server:
        yield server


@pytest.fixture
def cluster(cp):
    return cp.create_cluster(f"compat-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def service():
    return f"svc{uuid.uuid4().hex[:10]}"


@pytest.fixture
def workers():
    """Start workers with workers(cp, cluster, service, name=...); all are SIGKILLed afterwards."""
    started: list[Worker] = []

    def start(cp, cluster, service, name="worker", **kw):
        w = Worker(cp, cluster, service, name, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def worker(cp, cluster, service, workers):
    return workers(cp, cluster, service).ready()


def test_values_round_trip(cp, cluster, service, worker):
    out = run_caller(cp, cluster, service, "values")
    assert out["greet"] == "Hello, Ada!"
    assert out["add"] == 42
    assert out["float"] == pytest.approx(0.30000000000000004)
    assert out["nested"] == {"a": {"b": [1, "two", {"c": True, "d": None}]}, "n": -1.5}
    assert out["whenIsDate"] is True and out["whenMs"] == 1704164645678
    assert out["nothingIsUndefined"] is True
    assert out["unicodeOut"] == out["unicodeIn"] == "héllo 🎉👩‍👩‍👧 日本語 中文 한국어"
    assert out["unicodeGreet"] == "Hello, 世界🌍!"


def test_one_megabyte_payloads_both_ways(cp, cluster, service, worker):
    n = 1024 * 1024
    out = run_caller(cp, cluster, service, "big", timeout=120, BIG_BYTES=n)
    assert out["stringSize"] >= n and out["argStringSize"] == out["stringSize"]
    assert out["argBufferSize"] == n
    assert out["echoStringSame"] and out["echoStringSha"] == out["stringSha"]
    assert out["echoBufferIsBytes"] and out["echoBufferSame"]
    assert out["resultStringBytes"] == n and out["resultStringOk"]
    assert out["resultBufferIsBytes"] and out["resultBufferLength"] == n and out["resultBufferOk"]


def test_thrown_error_keeps_name_code_message(cp, cluster, service, worker):
    out = run_caller(cp, cluster, service, "error")
    assert out["threw"] and out["isError"]
    assert out["name"] == "GreetingError"
    assert out["code"] == "E_GREET"
    assert out["message"] == "cannot greet: no reason"
    assert out["stackFirstLine"] == "GreetingError: cannot greet: no reason"


def test_cached_call_runs_the_body_once(cp, cluster, service, worker):
    out = run_caller(cp, cluster, service, "cache")
    key = out["first"]["key"]
    assert out["first"] == {"key": key, "run": 1}
    assert out["second"] == out["third"] == out["first"]  # served from the cache
    assert out["uncached"] == {"key": key, "run": 2}  # no $d.cache: the body runs again
    assert out["executions"] == 2


def test_background_calls_return_an_id_and_the_job_runs(cp, cluster, service, worker):
    out = run_caller(cp, cluster, service, "background")
    expected = {"viaBackground": "Hello, Bob!", "viaClient": 42}
    for field, value in expected.items():
        job_id = out[field]["id"]
        assert isinstance(job_id, str) and job_id and set(out[field]) == {"id"}
        # The caller exited without waiting; the job still runs and its result is kept.
        job = wait_until(lambda job_id=job_id: (j := get_job(cp, cluster, job_id, ttl_ms=5000))["status"] == "success" and j,
                         timeout=40, what=f"background job {job_id} to succeed")
        assert job["id"] == job_id and job["resultType"] == "resolution" and job["service"] == service
        assert msgpack.unpackb(base64.b64decode(job["result"])) == value


def test_five_hundred_concurrent_calls(cp, cluster, service, worker):
    out = run_caller(cp, cluster, service, "concurrent", timeout=150, CALLS=500)
    print(f"\n500 concurrent calls through one worker: {out['ms']} ms")
    assert out["received"] == 500
    assert out["wrongCount"] == 0, out["wrong"]


def test_call_latency_while_worker_long_polls(cp, cluster, service, worker):
    """Measured, not asserted (the issue's target is < 50 ms)."""
    time.sleep(2.5)  # the worker's first poll has gone out and is being held
    # 1) Through the published SDK: includes its 100 ms results-poller sleep and force-poll delay.
    out = run_caller(cp, cluster, service, "latency", timeout=90, SAMPLES=5)
    assert all(s["ok"] for s in out["samples"])
    sdk_ms = [s["ms"] for s in out["samples"]]
    # 2) Raw HTTP from Python: POST /jobs then a long-polling GET /jobs/:id, so only the
    #    control-plane and the worker's held poll are measured.
    headers = {"Authorization": f"Basic {cluster['apiSecret']}", "x-machine-id": "latency-probe"}
    args = base64.b64encode(msgpack.packb([20, 22])).decode()
    raw_ms = []
    with httpx.Client(base_url=cp.url, headers=headers, timeout=30) as http:
        for _ in range(5):
            time.sleep(2.6)  # past the worker's 2 s throttle: it is long-polling again
            t = time.perf_counter()
            job_id = http.post("/jobs", json={"service": service, "targetFn": "add", "targetArgs": args,
                                              "callConfig": {}}).json()["id"]
            job = http.get(f"/jobs/{job_id}", params={"ttl": 20000}).json()
            raw_ms.append((time.perf_counter() - t) * 1000)
            assert job["status"] == "success" and msgpack.unpackb(base64.b64decode(job["result"])) == 42
    print(f"\nLATENCY sdk call (ms): {[round(x, 1) for x in sdk_ms]} median {statistics.median(sdk_ms):.1f}")
    print(f"LATENCY raw POST /jobs + GET /jobs/:id (ms): {[round(x, 1) for x in raw_ms]} "
          f"median {statistics.median(raw_ms):.1f}")


@pytest.fixture
def fast_stall_cp(make_pg_database, node_sdk):
    """A control-plane that declares a silent machine stalled after 3 s, checking twice a second."""
    server = ControlPlane(database_url=make_pg_database("stall"),
                          env={"MACHINE_TIMEOUT_SECONDS": "3", "SWEEP_INTERVAL_SECONDS": "0.5"}).start()
    yield server
    server.stop()


# kill_after: 0 kills A during its 2 s throttle sleep; 3 kills it while its next long poll is held
# on the server (the orphaned poll must not keep the dead machine looking alive).
@pytest.mark.parametrize("kill_after", [0, 3])
def test_sigkilled_worker_job_is_finished_by_a_second_worker(fast_stall_cp, service, workers, kill_after):
    cp = fast_stall_cp
    cluster = cp.create_cluster("stall")
    mgmt = cp.management_headers
    worker_a = workers(cp, cluster, service, name="A").ready()
    caller = start_caller(cp, cluster, service, "stalled", TAG="job-1")
    try:
        # The job's id, from the management view of the cluster, then wait until A runs it.
        def running_job():
            jobs = httpx.get(f"{cp.url}/clusters/{cluster['id']}", headers=mgmt, timeout=10).json()["jobs"]
            return next((j for j in jobs if j["targetFn"] == "block" and j["status"] == "running"), None)

        job_id = wait_until(running_job, timeout=30, what="the block job to be running")["id"]
        assert get_job(cp, cluster, job_id)["status"] == "running"
        worker_a.wait_for(lambda e: e.get("started") == "block", timeout=10, what="A to start the function")

        time.sleep(kill_after)
        worker_a.kill()  # SIGKILL: no result, no goodbye; only its silence tells
        killed_at = time.monotonic()
        assert worker_a.proc.returncode == -9
        workers(cp, cluster, service, name="B").ready()

        caller.wait(timeout=60)
        # MACHINE_TIMEOUT_SECONDS=3 + sweeps + B's start: well under the 20 s a held poll lasts.
        recovered_in = time.monotonic() - killed_at
        print(f"\nkill_after={kill_after}: job finished by B {recovered_in:.1f}s after SIGKILL of A")
        assert recovered_in < 12
        log_text = Path(caller.log_path).read_text()
        lines = [x for x in json_lines(log_text) if x.get("scenario") == "stalled"]
        assert caller.returncode == 0 and lines, log_text[-3000:]
        assert lines[-1]["result"] == "done by B: job-1"
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait(timeout=10)

    # The activity log is written in batches every 0.5 s by each server process (the sweeper and
    # the claims and the result may be in different ones): read it until the stall, the result and
    # both claims are in.
    def activity():
        events = httpx.get(f"{cp.url}/clusters/{cluster['id']}/activity", params={"jobId": job_id},
                           headers=mgmt, timeout=10).json()["events"]
        types = [e["type"] for e in events]
        done = {"jobStalled", "jobResulted"} <= set(types) and types.count("jobReceived") >= 2
        return events if done else None

    try:
        events = wait_until(activity, timeout=10, what="jobStalled, jobResulted and two jobReceived in the activity log")
    except AssertionError:
        events = httpx.get(f"{cp.url}/clusters/{cluster['id']}/activity", params={"jobId": job_id},
                           headers=mgmt, timeout=10).json()["events"]
        raise AssertionError(f"activity log of {job_id}: {[e['type'] for e in events]}") from None
    types = [e["type"] for e in events]
    stalled = [e for e in events if e["type"] == "jobStalled"]
    assert len(stalled) == 1, types
    assert stalled[0]["meta"]["reason"] == "machine stalled" and stalled[0]["meta"]["attempt"] == 1
    assert "jobRecovered" in types and types.count("jobReceived") == 2, types
    assert len({e["machineId"] for e in events if e["type"] == "jobReceived"}) == 2  # A, then B

    job = next(j for j in httpx.get(f"{cp.url}/clusters/{cluster['id']}", headers=mgmt, timeout=10).json()["jobs"]
               if j["id"] == job_id)
    assert job["status"] == "success" and job["resultType"] == "resolution"
    assert job["attempt"] == 2 and job["attemptsAllowed"] == 4  # retryCountOnStall 3 (SDK default) + 1


def test_worker_idle_in_a_long_poll_longer_than_machine_timeout_is_not_stalled(fast_stall_cp, service, workers):
    """A worker parked in its 20 s long poll is not silent: a job it claims there must not be
    declared stalled just because its last poll began more than MACHINE_TIMEOUT_SECONDS ago."""
    cp = fast_stall_cp
    cluster = cp.create_cluster("idle")
    workers(cp, cluster, service).ready()
    time.sleep(5)  # the worker's poll has been held > 3 s; the sweeper ran ~10 times meanwhile
    out = run_caller(cp, cluster, service, "slow", timeout=60, SLOW_MS=1500)
    assert out["result"] == 1 and out["executions"] == 1
    jobs = httpx.get(f"{cp.url}/clusters/{cluster['id']}", headers=cp.management_headers, timeout=10).json()["jobs"]
    slow = [j for j in jobs if j["targetFn"] == "slow"]
    assert len(slow) == 1 and slow[0]["attempt"] == 1, slow
