"""Two control-plane processes on one database: the sweeper runs in exactly one of them at a time
(the `leases` row names it and does not flap), and it moves to the other when that one dies; a
job whose machine went silent across the failover is still recovered, and so is one after it.
"""
from __future__ import annotations

import time

import psutil
import pytest

from faultkit import Wire, b64, holder_pid, lease_row, wait_until
from support.server import ControlPlane

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(120)]

ENV = {"WEB_CONCURRENCY": "1", "SWEEP_INTERVAL_SECONDS": "0.3", "MACHINE_TIMEOUT_SECONDS": "2"}
LEASE_SECONDS = 3.0  # max(3 * interval, 3.0) in app/engine/maintenance.py (Maintainer.for_settings)


def _pids(cp: ControlPlane) -> set[int]:
    """The gunicorn master and its workers (the lease names a worker: each worker builds the app)."""
    master = psutil.Process(cp.pid)
    return {cp.pid, *(p.pid for p in master.children(recursive=True))}


def _owner(database_url: str, planes: list[ControlPlane]) -> tuple[ControlPlane | None, str | None]:
    row = lease_row(database_url)
    if not row or not row[0]:
        return None, None
    pid = holder_pid(row[0])
    owners = [cp for cp in planes if pid in _pids(cp)]
    assert len(owners) <= 1, f"lease pid {pid} belongs to {len(owners)} control-planes"
    return (owners[0] if owners else None), row[0]


def test_sweeper_runs_in_one_process_and_fails_over(fresh_pg_url):
    a = ControlPlane(fresh_pg_url, env=ENV)
    b = ControlPlane(fresh_pg_url, management_secret=a.management_secret, env=ENV)
    wire = None
    try:
        a.start()
        b.start()
        planes = [a, b]
        # Both sweep loops are running; the lease names exactly one live worker of one of them.
        holder_cp, holder = wait_until(lambda: (o := _owner(fresh_pg_url, planes))[0] and o, 10,
                                       what="a control-plane to hold the sweeper lease")

        # It stays there (renewed every tick, never flapping to the other process).
        expiries = []
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            row = lease_row(fresh_pg_url)
            assert row[0] == holder, f"lease moved from {holder} to {row[0]} while both were alive"
            expiries.append(row[1])
            time.sleep(0.05)
        assert expiries[-1] > expiries[0], "the holder renews its lease"

        survivor = b if holder_cp is a else a
        cluster = survivor.create_cluster()
        wire = Wire(survivor.url, cluster, survivor.management_secret)
        # A job whose machine goes silent right before the holder dies: it can only be recovered
        # by the survivor (the machine is not silent long enough before the kill).
        before = wire.call(retryCountOnStall=1, timeoutSeconds=600)
        assert [j["id"] for j in wire.claim("machine-before")] == [before]

        t_kill = time.monotonic()
        holder_cp.kill()  # SIGKILL master and workers: no graceful release of the lease
        dead_pid = holder_pid(holder)

        def gone():
            try:
                return psutil.Process(dead_pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_until(gone, 5, interval=0.02, what=f"the lease holder's worker {dead_pid} to die")

        new_cp, new_holder = wait_until(lambda: (o := _owner(fresh_pg_url, [survivor]))[0] and o,
                                        LEASE_SECONDS + 5, interval=0.05,
                                        what="the survivor to take the sweeper lease")
        failover = time.monotonic() - t_kill
        assert new_cp is survivor and new_holder != holder
        assert failover < LEASE_SECONDS + 3, f"failover took {failover:.2f}s"

        # The job stalled across the failover is recovered by the new holder and completes.
        retried = wait_until(lambda: wire.claim("machine-after", ttl=1000), 15,
                             what="the job of the silent machine to be re-queued")
        assert [j["id"] for j in retried] == [before]
        wire.result(before, "machine-after", b64("after"))
        assert wire.status(before)["status"] == "success"
        assert (wire.job_summary(before)["attempt"], wire.job_summary(before)["attemptsAllowed"]) == (2, 2)
        stalled = wait_until(lambda: wire.events_of(before, "jobStalled"), 10, what="jobStalled")
        assert stalled[0]["meta"]["reason"] == "machine stalled"

        # And a job stalled after the failover, wholly under the new holder, is recovered too.
        later = wire.call(retryCountOnStall=1, timeoutSeconds=600)
        assert [j["id"] for j in wire.claim("machine-later")] == [later]
        t_stall = time.monotonic()
        again = wait_until(lambda: wire.claim("machine-rescue", ttl=1000), 15, what="the later job to be re-queued")
        assert [j["id"] for j in again] == [later]
        recovery = time.monotonic() - t_stall
        wire.result(later, "machine-rescue", b64("rescued"))
        assert wire.status(later)["result"] == b64("rescued")
        assert lease_row(fresh_pg_url)[0] == new_holder, "the lease stays with the survivor"
        print(f"\nsweeper failover {failover:.2f}s; recovery of a silent machine's job {recovery:.2f}s")
    finally:
        if wire is not None:
            wire.close()
        for cp in (a, b):
            cp.kill()
