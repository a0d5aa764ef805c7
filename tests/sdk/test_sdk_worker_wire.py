"""The worker's requests, seen by a recording stand-in control-plane on 127.0.0.1: exactly one
long poll outstanding, limit = free slots, schemas sent, constant headers, results POSTed with
retries, and no death on 500/401/connection errors."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from differential import Differential
from differential.serialize import pack, unpack

from support.waiting import wait_until


class FakeControlPlane:
    """Hands out queued jobs to /jobs-request (holding empty polls up to 0.3 s); can be told to
    fail requests with a status."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # (path, headers, body, started, ended)
        self.jobs = []
        self.results = {}
        self.fail_status = {}  # path prefix -> remaining failures as (status, count)
        self.open_polls = 0
        self.max_open_polls = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                started = time.monotonic()
                body = json.loads(self.rfile.read(int(self.headers["content-length"])) or b"{}")
                status, answer = fake.handle(self.path, body)
                data = b"" if answer is None else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the worker cancelled this poll (stop): nobody is listening
                    pass
                with fake.lock:
                    fake.requests.append((self.path, dict(self.headers), body, started, time.monotonic()))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, path, body):
        with self.lock:
            for prefix, (status, count) in list(self.fail_status.items()):
                if path.startswith(prefix) and count > 0:
                    self.fail_status[prefix] = (status, count - 1)
                    return status, {"error": {"code": "x", "message": "injected", "details": None}}
        if path == "/jobs-request":
            with self.lock:
                self.open_polls += 1
                self.max_open_polls = max(self.max_open_polls, self.open_polls)
            try:
                deadline = time.monotonic() + 0.3
                while time.monotonic() < deadline:
                    with self.lock:
                        if self.jobs and body["limit"] > 0:
                            taken, self.jobs = self.jobs[: body["limit"]], self.jobs[body["limit"]:]
                            return 200, taken
                    time.sleep(0.01)
                return 200, []
            finally:
                with self.lock:
                    self.open_polls -= 1
        if path.startswith("/jobs/") and path.endswith("/result"):
            with self.lock:
                self.results[path.split("/")[2]] = body
            return 204, None
        if path == "/metrics":
            return 204, None
        return 404, {"error": {"code": "not_found", "message": path, "details": None}}

    def add_job(self, job_id, fn, *args):
        with self.lock:
            self.jobs.append({"id": job_id, "targetFn": fn, "targetArgs": pack(list(args))})

    def polls(self):
        with self.lock:
            return [r for r in self.requests if r[0] == "/jobs-request"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = FakeControlPlane()
    yield f
    f.close()


def test_one_poll_outstanding_limit_is_free_slots_and_headers_are_constant(fake, monkeypatch):
    monkeypatch.setenv("DIFFERENTIAL_DEPLOYMENT_ID", "dep-9")
    d = Differential("sk_test_secret", endpoint=fake.url)
    svc = d.service("wire", concurrency=3, poll_ttl_ms=5000)
    release = threading.Event()

    @svc.function
    def slow(i: int) -> int:
        release.wait(10)
        return i

    svc.start()
    try:
        fake.add_job("j1", "slow", 1)
        fake.add_job("j2", "slow", 2)
        wait_until(lambda: any(p[2]["limit"] == 1 for p in fake.polls()), timeout=10,
                   what="a poll asking only for the one free slot")
        fake.add_job("j3", "slow", 3)
        wait_until(lambda: len(svc._worker.in_flight) == 3, timeout=10, what="three jobs in flight")
        n_polls = len(fake.polls())
        time.sleep(1.0)
        assert len(fake.polls()) <= n_polls + 1  # pool full: no claim polls while busy
        release.set()
        wait_until(lambda: len(fake.results) == 3, timeout=10, what="three results")
        wait_until(lambda: any(p[2]["limit"] == 3 for p in fake.polls()[n_polls:]), timeout=10,
                   what="polling for three slots again")
        time.sleep(1.0)  # idle: a few empty 0.3 s polls
    finally:
        release.set()
        assert svc.stop(timeout=5)
        d.close()

    polls = fake.polls()
    assert fake.max_open_polls == 1  # never two long polls at once
    first = polls[0][2]
    assert first["limit"] == 3 and first["ttl"] == 5000 and first["service"] == "wire"
    assert [f["name"] for f in first["functions"]] == ["slow"]
    assert json.loads(first["functions"][0]["schema"])["properties"] == {"i": {"type": "integer"}}
    machine_ids = {r[1]["x-machine-id"] for r in fake.requests}
    assert len(machine_ids) == 1 and machine_ids == {svc.machine_id}
    assert {r[1]["authorization"] for r in fake.requests} == {"Basic sk_test_secret"}
    assert {r[1]["x-deployment-id"] for r in fake.requests} == {"dep-9"}
    # Back-to-back polls: the next one starts right after the previous one ended (no sleeps).
    tail = polls[-4:-1]  # (the last one may have been cut short by stop)
    assert all(p[2]["limit"] == 3 for p in tail)
    gaps = [b[3] - a[4] for a, b in zip(tail, tail[1:], strict=False)]
    assert gaps and max(gaps) < 0.25, gaps
    r = fake.results["j2"]
    assert r["resultType"] == "resolution" and unpack(r["result"]) == 2
    assert isinstance(r["functionExecutionTime"], int)


def test_worker_survives_500s_401s_and_retries_result_posts(fake):
    d = Differential("sk_test_secret", endpoint=fake.url)
    svc = d.service("sturdy", poll_ttl_ms=5000)
    svc.register(lambda x: x * 2, name="double")
    fake.fail_status["/jobs-request"] = (500, 4)
    fake.fail_status["/jobs/"] = (503, 3)
    svc.start()
    try:
        fake.add_job("k1", "double", 21)
        wait_until(lambda: "k1" in fake.results, timeout=20, what="the result after injected failures")
        assert unpack(fake.results["k1"]["result"]) == 42
        assert svc.stats["poll_errors"] == 4
        fake.fail_status["/jobs-request"] = (401, 2)
        fake.add_job("k2", "double", 5)
        wait_until(lambda: "k2" in fake.results, timeout=30, what="the result after 401s")
        assert svc.running
    finally:
        assert svc.stop(timeout=5)
        d.close()


def test_worker_survives_an_unreachable_control_plane():
    d = Differential("sk_test_secret", endpoint="http://127.0.0.1:9")
    svc = d.service("lonely")
    svc.register(lambda: None, name="noop")
    svc.start()
    try:
        wait_until(lambda: svc.stats.get("poll_errors", 0) >= 3, timeout=10, what="a few failed polls")
        assert svc.running
    finally:
        t0 = time.monotonic()
        assert svc.stop(timeout=5)
        assert time.monotonic() - t0 < 2  # stop interrupts the back-off sleep
        d.close()
