"""Faults: the control-plane restarted mid-call, a worker killed mid-job, graceful stop, a busy
worker that must not be declared stalled. Each uses its own control-plane process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from differential import Differential
from support import postgres
from support.server import ControlPlane

from sdk_helpers import subprocess_env
from support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _jobs(cp, cluster):
    r = httpx.get(f"{cp.url}/clusters/{cluster['id']}", headers=cp.management_headers, timeout=10)
    r.raise_for_status()
    return {j["id"]: j for j in r.json()["jobs"]}


@pytest.fixture(scope="module")
def fast_cp(pg_admin_url):
    """Machines are declared stalled after 3 s of silence, so stall recovery is quick to observe."""
    db = postgres.create_database("sdkfast")
    cp = ControlPlane(database_url=db, env={"MACHINE_TIMEOUT_SECONDS": "3", "SWEEP_INTERVAL_SECONDS": "0.5"})
    cp.start()
    yield cp
    cp.stop()
    try:
        postgres.drop_database(db)
    except Exception:
        pass


class Call(threading.Thread):
    """A blocking SDK call on a thread, keeping its result or exception."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.result, self.error = fn, args, None, None

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:  # noqa: B902
            self.error = e


def test_control_plane_restart_while_worker_and_caller_are_mid_call(fresh_pg_url):
    cp = ControlPlane(database_url=fresh_pg_url, env={"SWEEP_INTERVAL_SECONDS": "0.5"}).start()
    try:
        cluster = cp.create_cluster("restart")
        d = Differential(cluster["apiSecret"], endpoint=cp.url)
        svc = d.service("restarty", poll_ttl_ms=5000)
        started, proceed = threading.Event(), threading.Event()

        @svc.function
        def double(x: int) -> int:
            started.set()
            proceed.wait(60)
            return 2 * x

        svc.start()
        call = Call(d.client("restarty", timeout=120).double, 21)
        call.start()
        assert started.wait(30), "the job never started"

        cp.kill()  # a crash: connections reset, nothing answers
        time.sleep(1.0)
        proceed.set()  # the function finishes while the control-plane is down: the report must retry
        time.sleep(2.0)
        assert call.is_alive(), "the caller gave up while the control-plane was down"
        cp.start()

        call.join(60)
        assert not call.is_alive() and call.error is None, call.error
        assert call.result == 42
        assert svc.stats["poll_errors"] >= 1  # it saw the outage and backed off instead of dying
        # Both sides keep working after the restart.
        assert d.client("restarty", timeout=30).double(5) == 10
        assert svc.running

        # A call made while the control-plane is down waits (creation retries) and completes.
        cp.kill()
        late = Call(d.client("restarty", timeout=60).double, 8)
        late.start()
        time.sleep(1.5)
        assert late.is_alive()
        cp.start()
        late.join(60)
        assert not late.is_alive() and late.error is None, late.error
        assert late.result == 16
        assert svc.stop(timeout=10)
        d.close()
    finally:
        cp.stop()


WORKER_A = textwrap.dedent("""
    import os, sys, time
    from differential import Differential
    d = Differential()
    svc = d.service(os.environ["SERVICE"], poll_ttl_ms=5000)

    @svc.function
    def work(x):
        open(os.environ["MARKER"], "w").write("started")
        time.sleep(120)
        return ["A", x]

    svc.run()
""")


def test_worker_killed_mid_job_the_call_completes_on_another_worker(fast_cp, tmp_path):
    cluster = fast_cp.create_cluster("kill")
    marker = tmp_path / "a-started"
    script = tmp_path / "worker_a.py"
    script.write_text(WORKER_A)
    env = subprocess_env(DIFFERENTIAL_API_SECRET=cluster["apiSecret"], DIFFERENTIAL_ENDPOINT=fast_cp.url,
                         SERVICE="killable", MARKER=str(marker))
    with open(tmp_path / "worker_a.log", "wb") as log:  # the child keeps its own copy of the file
        proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=log, stderr=subprocess.STDOUT)
    d = Differential(cluster["apiSecret"], endpoint=fast_cp.url)
    try:
        call = Call(d.client("killable", timeout=90, retry_count_on_stall=2).work, 5)
        call.start()
        wait_until(marker.exists, timeout=30, interval=0.1, what="worker A to start the job")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

        svc = d.service("killable", poll_ttl_ms=5000)

        @svc.function
        def work(x):
            return ["B", x * 10]

        svc.start()
        call.join(60)
        assert not call.is_alive() and call.error is None, call.error
        assert call.result == ["B", 50]
        job = next(iter(_jobs(fast_cp, cluster).values()))
        # Attempt 2, or 3 when the dead worker's last long poll (still open on the server) claimed
        # the re-queued job for the dead machine before the server noticed: recovery then takes one
        # more machine timeout. Either way the result is B's.
        assert job["status"] == "success" and job["attempt"] in (2, 3), job
        assert job["machineId"] == svc.machine_id
        assert svc.stop(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        d.close()


def test_busy_worker_keeps_pinging_so_its_long_job_is_not_rerun(fast_cp):
    cluster = fast_cp.create_cluster("busy")
    # A separate caller instance: its own status polls must not be what keeps the worker alive.
    worker_d = Differential(cluster["apiSecret"], endpoint=fast_cp.url)
    caller = Differential(cluster["apiSecret"], endpoint=fast_cp.url)
    runs = []
    svc = worker_d.service("busy", concurrency=1, ping_interval=0.5, poll_ttl_ms=5000)

    @svc.function
    def long_job(seconds: float) -> str:
        runs.append(time.monotonic())
        time.sleep(seconds)
        return "done"

    svc.start()
    try:
        # 7 s busy with the only slot: twice the 3 s machine timeout.
        assert caller.client("busy", timeout=60).long_job(7) == "done"
        assert len(runs) == 1
        assert svc.stats["pings"] >= 5
        job = next(iter(_jobs(fast_cp, cluster).values()))
        assert job["attempt"] == 1
    finally:
        assert svc.stop(timeout=10)
        worker_d.close()
        caller.close()


def test_graceful_stop_in_flight_jobs_report_and_none_is_left_running(fast_cp):
    cluster = fast_cp.create_cluster("stop")
    d = Differential(cluster["apiSecret"], endpoint=fast_cp.url)
    started = []
    svc = d.service("stoppable", concurrency=4)

    @svc.function
    def slow(i: int) -> int:
        started.append(i)
        time.sleep(1.5)
        return i * 100

    svc.start()
    try:
        bg = d.client("stoppable", background=True)
        ids = [bg.slow(i) for i in range(4)]
        wait_until(lambda: len(started) == 4, timeout=30, what="all four jobs to start")

        t0 = time.monotonic()
        assert svc.stop(timeout=20) is True
        elapsed = time.monotonic() - t0
        assert elapsed < 5, f"stop took {elapsed:.1f}s"  # not the 20 s long poll
        assert not svc.running

        jobs = _jobs(fast_cp, cluster)
        assert all(jobs[i]["status"] == "success" for i in ids), jobs
        assert [d.result(i, timeout=10) for i in ids] == [0, 100, 200, 300]

        # After stop, nothing is claimed any more.
        late = bg.slow(9)
        time.sleep(1.5)
        assert d.job(late).status == "pending"
        assert not any(j["status"] == "running" for j in _jobs(fast_cp, cluster).values())
    finally:
        d.close()


def test_stop_of_an_idle_worker_is_prompt_and_stop_is_bounded_by_its_timeout(fast_cp):
    cluster = fast_cp.create_cluster("stop2")
    d = Differential(cluster["apiSecret"], endpoint=fast_cp.url)
    try:
        idle = d.service("idle")
        idle.register(lambda: None, name="noop")
        idle.start()
        time.sleep(0.5)  # its 20 s long poll is outstanding now
        t0 = time.monotonic()
        assert idle.stop(timeout=10)
        assert time.monotonic() - t0 < 3.0  # the published SDK waits its long poll out (~22 s)

        hung = d.service("hung")
        release, started = threading.Event(), threading.Event()
        hung.register(lambda: (started.set(), release.wait(30))[1], name="hang")
        hung.start()
        d.client("hung", background=True).hang()
        # Wait for the function itself to run: the server says "running" as soon as it hands the
        # job out, before the worker has received it.
        assert started.wait(30), "the job never started on the worker"
        t0 = time.monotonic()
        assert hung.stop(timeout=1) is False  # it could not finish in time, and says so
        assert time.monotonic() - t0 < 3
        release.set()
    finally:
        d.close()
