"""Memory is bounded before parsing (issue 11 point 2; audit H2, M5, L3 and M1's RecursionError).

Route guards run before a body is read, every route reads at most its own limit (chunked bodies
too), big bodies share a per-process byte budget, a parked poll keeps no raw body, arguments and
results have their own limits, and a status answer carries a bounded total of result bytes. The
last test runs reduced versions of the audit's amplification requests against a real gunicorn
server and bounds the worker's peak RSS (bench/memory.py runs the full ones).
"""
from __future__ import annotations

import io
import json
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.api import routing
from app.engine import statements
from cp_helpers import Api
from tests.support.waiting import wait_until

APP_DIR = Path(routing.__file__).resolve().parents[1]
SNS_TOPIC = "arn:aws:sns:us-east-1:000000000000:t"
CREATE = {"service": "s", "targetFn": "f", "targetArgs": "kA=="}


class Recording(io.BytesIO):
    """A request body that counts the bytes read from it."""

    taken = 0

    def read(self, size=-1):
        data = super().read(size)
        self.taken += len(data)
        return data

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.taken += n
        return n

    def readline(self, size=-1):
        data = super().readline(size)
        self.taken += len(data)
        return data


def post_stream(api, path, data: bytes, headers=None, chunked=False):
    """POST `data` from a Recording stream; `chunked`: with no Content-Length, as a chunked body."""
    stream = Recording(data)
    headers = dict(headers or {})
    overrides = {}
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
        overrides["wsgi.input_terminated"] = True  # what gunicorn sets: it ends the stream itself
    r = api.client.open(path, method="POST", input_stream=stream, headers=headers,
                        content_type="application/json", environ_overrides=overrides)
    return r, stream


def assert_error(r, status, code):
    assert r.status_code == status, (r.status_code, r.data[:300])
    assert r.json["error"]["code"] == code, r.json


def dicts_array(size: int) -> bytes:
    return b"[" + b"{}," * ((size - 2) // 3) + b"{}]"


# --- unauthenticated: /events/sns -----------------------------------------------------------------

def test_sns_answers_501_before_reading_the_body_when_cloud_features_are_off(api):
    r, stream = post_stream(api, "/events/sns", dicts_array(200_000))
    assert_error(r, 501, "cloud_not_configured")
    assert stream.taken == 0


def test_sns_reads_at_most_its_own_limit(make_app):
    api = Api(make_app(deployment_sns_topic=SNS_TOPIC, sns_verify_signatures=False))
    body = dicts_array(400_000)  # under MAX_BODY_BYTES, over SNS's 300 KB
    r, stream = post_stream(api, "/events/sns", body)
    assert_error(r, 413, "payload_too_large")
    assert stream.taken == 0  # refused on its Content-Length
    r, stream = post_stream(api, "/events/sns", body, chunked=True)
    assert_error(r, 413, "payload_too_large")
    assert stream.taken <= 300_001 + 64 * 1024
    r, _ = post_stream(api, "/events/sns", dicts_array(290_000))  # under the cap: parsed, then refused
    assert_error(r, 400, "validation_failed")


@pytest.mark.parametrize("deep", [b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000])
def test_deep_nesting_answers_400_naming_the_depth_with_and_without_a_credential(make_app, deep):
    # Past json.loads' recursion limit the validator's depth rule names the field (test_bad_input.py).
    api = Api(make_app(deployment_sns_topic=SNS_TOPIC, sns_verify_signatures=False))
    cluster = api.new_cluster()
    r = api.client.post("/jobs", headers=api.headers(cluster), data=deep, content_type="application/json")
    assert_error(r, 400, "validation_failed")
    assert "deeper than" in json.dumps(r.json)
    r = api.client.post("/events/sns", data=deep, content_type="application/json")
    assert_error(r, 400, "validation_failed")
    assert "deeper than" in json.dumps(r.json)


# --- every route: limits, chunked bodies, guards first -------------------------------------------

def test_a_chunked_body_over_the_limit_answers_413_not_a_truncated_parse(make_app):
    api = Api(make_app(max_body_bytes=64 * 1024))
    cluster = api.new_cluster()
    padded = json.dumps(CREATE).encode() + b" " * (70 * 1024)  # valid JSON if cut at the limit
    r, _ = post_stream(api, "/jobs", padded, headers=api.headers(cluster), chunked=True)
    assert_error(r, 413, "payload_too_large")
    r, _ = post_stream(api, "/jobs", json.dumps(CREATE).encode(), headers=api.headers(cluster), chunked=True)
    assert r.status_code == 201, r.json  # a chunked body within the limit is read whole


def test_a_wrong_credential_is_refused_before_the_body_is_read(api):
    r, stream = post_stream(api, "/jobs", b'{"targetArgs": "' + b"A" * 500_000 + b'"}',
                            headers={"Authorization": "Basic wrong"})
    assert r.status_code == 401
    assert stream.taken == 0


def test_openapi_documents_each_routes_413(api):
    doc = api.client.get("/openapi.json").json
    sns = doc["paths"]["/events/sns"]["post"]["responses"]
    assert "413" in sns and "300000" in sns["413"]["description"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                assert "413" in op["responses"], (method, path)
    assert "MAX_ARGS_BYTES" in doc["paths"]["/jobs"]["post"]["responses"]["413"]["description"]


# --- arguments and results have their own limits ---------------------------------------------------

def test_arguments_over_max_args_bytes_answer_413_naming_the_field(make_app):
    api = Api(make_app(max_args_bytes=1000))
    cluster = api.new_cluster()
    r = api.client.post("/jobs", headers=api.headers(cluster), json={**CREATE, "targetArgs": "A" * 1001})
    assert_error(r, 413, "payload_too_large")
    assert r.json["error"]["details"]["field"] == "targetArgs" and "targetArgs" in r.json["error"]["message"]
    assert api.call(cluster, args="A" * 1000)


def test_a_result_over_max_result_bytes_ends_the_call_as_a_rejection_naming_the_limit(make_app):
    from differential.serialize import deserialize_error, unpack

    api = Api(make_app(max_result_bytes=1000))
    cluster = api.new_cluster()
    job_id = api.call(cluster)
    assert [j["id"] for j in api.claim(cluster)] == [job_id]
    api.result(cluster, job_id, value="A" * 1001)  # asserts the 204 the published SDK's worker needs
    row = api.status(cluster, job_id)
    assert (row["status"], row["resultType"]) == ("success", "rejection")
    error = deserialize_error(unpack(row["result"]), job_id=job_id)
    assert "MAX_RESULT_BYTES" in str(error) and "1001" in str(error)
    assert error.code == "RESULT_TOO_LARGE"
    other = api.call(cluster)
    api.claim(cluster)
    api.result(cluster, other, value="A" * 1000)  # at the limit: stored as sent
    assert api.status(cluster, other)["result"] == "A" * 1000


# --- status answers carry a bounded total of result bytes -----------------------------------------

def finished_jobs(api, cluster, sizes: list[int]) -> list[str]:
    ids = [api.call(cluster) for _ in sizes]
    api.claim(cluster, limit=len(ids))
    for job_id, size in zip(ids, sizes, strict=True):
        api.result(cluster, job_id, value="A" * size)
    return ids


def test_a_batch_status_answer_leaves_out_results_past_the_cap_and_reads_only_those_it_keeps(make_app, monkeypatch):
    api = Api(make_app(max_status_result_bytes=100_000))
    cluster = api.new_cluster()
    ids = finished_jobs(api, cluster, [40_000, 40_000, 40_000, 10_000])
    read = []
    real = statements.read_results
    monkeypatch.setattr(statements, "read_results", lambda cid, job_ids: read.extend(job_ids) or real(cid, job_ids))
    pending = api.call(cluster)
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(cluster), json={"jobIds": ids, "ttl": 0})
    rows = r.json
    assert [row["id"] for row in rows] == [ids[0], ids[1], ids[3]]  # the third would pass 100,000 bytes
    assert sum(len(row["result"]) for row in rows) <= 100_000
    assert sorted(read) == sorted([ids[0], ids[1], ids[3]])  # the left-out result was never read
    # Asked again (as the SDKs do for ids missing from an answer), the rest come.
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(cluster),
                        json={"jobIds": [ids[2], pending], "ttl": 0})
    assert [(row["id"], row["status"], len(row["result"])) for row in r.json] == [(ids[2], "success", 40_000)]


def test_a_single_status_always_carries_its_result(make_app):
    api = Api(make_app(max_status_result_bytes=10_000))
    cluster = api.new_cluster()
    [job_id, other] = finished_jobs(api, cluster, [40_000, 40_000])
    assert api.status(cluster, job_id)["result"] == "A" * 40_000
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(cluster),
                        json={"jobIds": [job_id, other], "ttl": 0})
    assert [row["id"] for row in r.json] == [job_id]


# --- a parked poll keeps no raw body; the body budget ------------------------------------------------

def _big_poll_body(n_ids=500) -> dict:
    return {"jobIds": [f"missing-{i:05d}-" + "x" * 180 for i in range(n_ids)], "ttl": 1500}


def test_a_parked_batch_poll_keeps_no_raw_body(api):
    cluster = api.new_cluster()
    body = json.dumps(_big_poll_body()).encode()
    assert len(body) > 64 * 1024  # a big body: the admission path, which read it before parsing
    done = []
    poll = threading.Thread(target=lambda: done.append(api.client.post(
        "/batch-jobs-status-request", headers=api.headers(cluster), data=body, content_type="application/json")))
    poll.start()
    try:
        def parked_frames():
            frame = sys._current_frames().get(poll.ident)
            frames = []
            while frame is not None:
                frames.append(frame)
                frame = frame.f_back
            # Waiting in engine/steps.finish: the poll's suspended generators hold its state too.
            waiting = [f for f in frames if f.f_code.co_name == "finish" and "steps" in f.f_locals]
            if not waiting:
                return None
            gen = waiting[0].f_locals["steps"]
            while gen is not None:
                if gen.gi_frame is not None:
                    frames.append(gen.gi_frame)
                gen = gen.gi_yieldfrom
            return frames if any(f.f_code.co_name == "poll_steps" for f in frames) else None

        frames = wait_until(parked_frames, timeout=10)
        server = [f for f in frames if f.f_code.co_filename.startswith(str(APP_DIR))]  # not the test client's
        assert any(f.f_code.co_name == "handler" for f in server)
        held = [(f.f_code.co_name, name) for f in server for name, value in f.f_locals.items()
                if isinstance(value, (bytes, bytearray)) and len(value) >= len(body) // 2]
        assert held == []
    finally:
        poll.join(10)
    assert done and done[0].status_code == 200


def test_body_budget_takes_waits_and_refuses():
    from app.api.body_budget import BodyBudget

    budget = BodyBudget(capacity_bytes=1000, threshold_bytes=100, max_wait_seconds=0.2)
    small = budget.take(99)
    assert small is not None and budget.free_bytes == 1000  # below the threshold: free
    a = budget.take(600)
    assert budget.free_bytes == 400
    started = time.monotonic()
    assert budget.take(500) is None  # waited, then refused
    assert time.monotonic() - started >= 0.15
    threading.Timer(0.05, a.release).start()
    b = budget.take(500)  # waits for a's bytes
    assert b is not None and budget.free_bytes == 500
    a.release()  # twice is harmless
    assert budget.free_bytes == 500
    b.release()
    whole = budget.take(5000)  # larger than the budget: takes it all, runs alone
    assert whole is not None and budget.free_bytes == 0
    whole.release()
    assert budget.free_bytes == 1000


def test_past_the_body_budget_a_big_body_answers_503_with_retry_after(make_app, monkeypatch):
    monkeypatch.setattr(routing, "_BUDGET_WAIT_SECONDS", 0.2, raising=False)
    api = Api(make_app(body_budget_bytes=150_000))
    cluster = api.new_cluster()
    body = json.dumps(_big_poll_body()).encode()  # about 110 KB: the parked poll holds it
    poll = threading.Thread(target=lambda: api.client.post(
        "/batch-jobs-status-request", headers=api.headers(cluster), data=body, content_type="application/json"))
    poll.start()
    try:
        wait_until(lambda: api.app.extensions["differential.body_budget"].free_bytes < 150_000, timeout=10)
        big_create = {**CREATE, "targetArgs": "A" * 100_000}
        r = api.client.post("/jobs", headers=api.headers(cluster), json=big_create)
        assert_error(r, 503, "body_budget_spent")
        assert r.headers["Retry-After"] == "1"
        # The batch route refuses as its admission does: `[]`, which the SDKs poll again after.
        r = api.client.post("/batch-jobs-status-request", headers=api.headers(cluster), data=body,
                            content_type="application/json")
        assert (r.status_code, r.json) == (200, [])
        assert api.call(cluster)  # small bodies take nothing from the budget
    finally:
        poll.join(10)
    r = api.client.post("/jobs", headers=api.headers(cluster), json={**CREATE, "targetArgs": "A" * 100_000})
    assert r.status_code == 201  # the poll's bytes came back


# --- the audit's amplification requests, reduced, against a real gunicorn server -----------------

MIB = 1024 * 1024
# fly.toml's machine: 512 MB for 2 workers. One worker takes every request here; it must stay well
# inside its half (the audit saw 254 to 824 MB).
WORKER_BOUND_MB = 200


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _post_all(url: str, body: bytes, times: int, headers: dict) -> list:
    def one(_):
        try:
            with httpx.Client(timeout=60) as client:
                return client.post(url, content=body, headers={"Content-Type": "application/json", **headers}).status_code
        except httpx.HTTPError as exc:  # answered (501/413) and closed before the body was all sent
            return type(exc).__name__

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(times) as pool:
        return list(pool.map(one, range(times)))


def _chunked_post(port: int, path: str, body: bytes, secret: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {secret}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for start in range(0, len(body), 1 << 20):
                chunk = body[start:start + (1 << 20)]
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # refused mid-body
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_a_512mb_machines_worker_survives_the_amplification_requests():
    import psutil

    from tests.support.server import ControlPlane

    env = {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "256", "MAX_BODY_BYTES": str(8 * MIB),
           "SWEEPER_ENABLED": "false", "LOG_LEVEL": "WARNING",
           "DEPLOYMENT_SNS_TOPIC": SNS_TOPIC, "SNS_VERIFY_SIGNATURES": "false"}
    with ControlPlane(env=env) as cp:
        worker = wait_until(lambda: psutil.Process(cp.pid).children(), timeout=10)[0].pid
        secret = cp.create_cluster()["apiSecret"]
        auth = {"Authorization": f"Basic {secret}"}
        # Unauthenticated: 8 concurrent 8 MiB `[{},...]` (413 before reading), and 8 under the SNS cap.
        codes = _post_all(cp.url + "/events/sns", dicts_array(8 * MIB - 1024), 8, {})
        assert all(c in (413, "WriteError", "RemoteProtocolError", "ReadError") for c in codes), codes
        assert _post_all(cp.url + "/events/sns", dicts_array(290_000), 8, {}) == [400] * 8
        # L3 on the wire: a chunked create padded past MAX_BODY_BYTES.
        padded = json.dumps(CREATE).encode() + b" " * (8 * MIB)
        assert _chunked_post(cp.port, "/jobs", padded, secret) == 413
        # 20 parked 8 MB batch polls (ttl 3 s): the budget lets a few park, the rest answer `[]` or 503.
        ids = [f"{i:08d}" + "x" * 192 for i in range(41_000)]
        polls = json.dumps({"jobIds": ids, "ttl": 1500}).encode()
        codes = _post_all(cp.url + "/batch-jobs-status-request", polls, 20, auth)
        assert set(codes) <= {200, 503}, codes
        # 12 results of ~4 MiB (just under MAX_RESULT_BYTES), then one small status request over them.
        with httpx.Client(base_url=cp.url, headers={**auth, "x-machine-id": "m"}, timeout=60) as client:
            job_ids = [client.post("/jobs", json=CREATE).json()["id"] for _ in range(12)]
            assert len(client.post("/jobs-request", json={"service": "s", "limit": 12, "ttl": 0}).json()) == 12
            result = "A" * (4 * MIB - 64 * 1024)
            for job_id in job_ids:
                r = client.post(f"/jobs/{job_id}/result", json={"result": result, "resultType": "resolution"})
                assert r.status_code == 204
            r = client.post("/batch-jobs-status-request", json={"jobIds": job_ids, "ttl": 0})
            assert r.status_code == 200 and 0 < len(r.json()) < 12  # capped at 16 MiB of results
            assert len(r.content) < 17 * MIB
        assert httpx.get(cp.url + "/live", timeout=10).status_code == 200
        peak = _vm_hwm_mb(worker)
        assert peak < WORKER_BOUND_MB, f"worker peak RSS {peak:.0f} MB"


def test_the_published_sdks_worker_survives_a_result_over_the_limit_and_its_caller_learns_why(node_sdk):
    """@differentialhq/core 3.18.0 kills its process on any answer but 204 to a result."""
    import base64

    import msgpack

    from support.node import NODE_DIR, start_node
    from tests.support.server import ControlPlane

    with ControlPlane(env={"MAX_RESULT_BYTES": "100000", "SWEEPER_ENABLED": "false"}) as cp:
        cluster = cp.create_cluster()
        headers = {"Authorization": f"Basic {cluster['apiSecret']}", "x-machine-id": "pytest"}
        env = {"DIFFERENTIAL_API_SECRET": cluster["apiSecret"], "DIFFERENTIAL_ENDPOINT": cp.url,
               "SERVICE": "memsvc", "WORKER_NAME": "w"}
        worker = start_node(NODE_DIR / "compat_worker.mjs", env=env)
        try:
            wait_until(lambda: b'"ready"' in Path(worker.log_path).read_bytes(), timeout=30, what="worker ready")

            def call(fn, *args):
                packed = base64.b64encode(msgpack.packb(list(args))).decode()
                r = httpx.post(cp.url + "/jobs", headers=headers, timeout=10,
                               json={"service": "memsvc", "targetFn": fn, "targetArgs": packed})
                assert r.status_code == 201, r.text
                job_id = r.json()["id"]

                def finished():
                    row = httpx.get(f"{cp.url}/jobs/{job_id}", params={"ttl": 5000}, headers=headers,
                                    timeout=15).json()
                    return row if row["status"] in ("success", "failure") else None

                return wait_until(finished, timeout=60, what=f"{fn} finished")

            row = call("bigString", 400_000)  # about 530 KB of base64
            assert (row["status"], row["resultType"]) == ("success", "rejection")
            error = msgpack.unpackb(base64.b64decode(row["result"]))
            assert error["code"] == "RESULT_TOO_LARGE" and "MAX_RESULT_BYTES" in error["message"]
            assert worker.poll() is None, Path(worker.log_path).read_text()[-2000:]
            row = call("greet", "Ada")  # the same worker still serves
            assert msgpack.unpackb(base64.b64decode(row["result"])) == "Hello, Ada!"
            assert worker.poll() is None
        finally:
            worker.kill()
            worker.wait(10)
