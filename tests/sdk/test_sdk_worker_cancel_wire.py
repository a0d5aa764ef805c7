"""The worker's cancellation checks, seen by the recording stand-in control-plane: status requests
(ttl 0) only while it runs jobs, a cancelled job abandoned without a result, and the thread of a
sync function that ignores the flag still counted against `concurrency`."""
from __future__ import annotations

import threading
import time

import pytest

from differential import Differential, current_job

from support.waiting import wait_until
from test_sdk_worker_wire import FakeControlPlane


class StatusesControlPlane(FakeControlPlane):
    """Also answers /batch-jobs-status-request from `states` (job id -> state)."""

    def __init__(self):
        self.states = {}
        super().__init__()

    def handle(self, path, body):
        if path == "/batch-jobs-status-request":
            with self.lock:
                return 200, [{"id": i, "status": "running" if s == "running" else "success", "state": s,
                              "reason": None if s == "running" else f"cancelled by the caller: {i}",
                              "result": None, "resultType": None, "service": "wire"}
                             for i, s in self.states.items() if i in body["jobIds"]]
        return super().handle(path, body)

    def status_checks(self):
        with self.lock:
            return [r for r in self.requests if r[0] == "/batch-jobs-status-request"]


@pytest.fixture
def fake():
    f = StatusesControlPlane()
    yield f
    f.close()


def test_status_checks_only_while_running_and_a_cancelled_job_posts_nothing(fake):
    d = Differential("sk_test_secret", endpoint=fake.url)
    svc = d.service("wire", concurrency=2, poll_ttl_ms=5000, cancel_check_interval=0.2)
    seen = {}

    @svc.function
    def loop(tag: str) -> str:
        job = current_job()
        while not job.wait(0.05):
            pass
        seen[tag] = job.reason
        return "after the cancel"

    svc.start()
    try:
        time.sleep(1.0)
        assert fake.status_checks() == []  # idle: no checks
        fake.states["j1"] = "running"
        fake.add_job("j1", "loop", "one")
        wait_until(lambda: len(fake.status_checks()) >= 2, timeout=10, what="status checks while running")
        assert all(r[2] == {"jobIds": ["j1"], "ttl": 0} for r in fake.status_checks())
        fake.states["j1"] = "cancelled"
        wait_until(lambda: "one" in seen, timeout=10, what="the function to see the flag")
        assert seen["one"] == "cancelled by the caller: j1"
        wait_until(lambda: svc.stats["cancelled"] == 1, timeout=10, what="the worker to count it")
        time.sleep(0.5)
        checks = len(fake.status_checks())
        time.sleep(1.0)
        assert len(fake.status_checks()) == checks  # nothing runs: the checks stopped
        assert "j1" not in fake.results and svc.stats["reported"] == 0
    finally:
        svc.stop(timeout=5)
        d.close()


def test_an_abandoned_sync_functions_thread_still_counts_against_concurrency(fake):
    d = Differential("sk_test_secret", endpoint=fake.url)
    svc = d.service("wire", concurrency=1, poll_ttl_ms=5000, cancel_check_interval=0.2)
    release = threading.Event()

    @svc.function
    def stubborn() -> str:
        release.wait(20)  # ignores the flag
        return "done"

    svc.start()
    try:
        fake.states["j1"] = "running"
        fake.add_job("j1", "stubborn")
        wait_until(lambda: len(svc._worker.in_flight) == 1, timeout=10, what="the job to run")
        fake.states["j1"] = "cancelled"
        wait_until(lambda: svc.stats["cancelled"] == 1, timeout=10, what="the job to be abandoned")
        polls = len(fake.polls())
        time.sleep(1.0)
        assert len(fake.polls()) == polls  # its thread is still taken: no slot to claim for
        release.set()
        wait_until(lambda: len(fake.polls()) > polls, timeout=10, what="polling again once the thread is free")
        assert "j1" not in fake.results
    finally:
        release.set()
        svc.stop(timeout=5)
        d.close()
