"""A worker process SIGKILLed mid-job: the job is retried after stall detection, completed exactly
once by another worker, its attempts are counted right, and the killed attempt's late result is
fenced off (answered 204, not stored, recorded as jobResultedButNotPersisted).
"""
from __future__ import annotations

import signal
import time

import pytest

from faultkit import Wire, WorkerProcess, b64, wait_until
from support.server import ControlPlane

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(120)]

# A silent machine is stalled after 2 s; the sweeper looks every 0.3 s.
FAST_SWEEP = {"MACHINE_TIMEOUT_SECONDS": "2", "SWEEP_INTERVAL_SECONDS": "0.3", "WEB_CONCURRENCY": "2"}


def test_killed_worker_job_is_retried_once_and_late_result_fenced(fresh_pg_url):
    with ControlPlane(fresh_pg_url, env=FAST_SWEEP) as cp:
        cluster = cp.create_cluster()
        wire = Wire(cp.url, cluster, cp.management_secret)
        doomed = healthy = None
        try:
            # retryCountOnStall=2 -> 3 attempts; a long per-attempt timeout, so only the machine's
            # silence (not the attempt deadline) can stall it.
            job_id = wire.call(service="svc", retryCountOnStall=2, timeoutSeconds=600)

            doomed = WorkerProcess(cp.url, cluster["apiSecret"], "machine-doomed", "svc", mode="hang")
            wait_until(lambda: doomed.claimed(), 20, what="the doomed worker to claim the job")
            assert doomed.claimed() == [job_id]
            summary = wire.job_summary(job_id)
            assert (summary["status"], summary["attempt"], summary["machineId"]) == ("running", 1, "machine-doomed")

            t_kill = time.monotonic()
            doomed.kill(signal.SIGKILL)
            assert doomed.proc.returncode == -signal.SIGKILL

            healthy = WorkerProcess(cp.url, cluster["apiSecret"], "machine-healthy", "svc", mode="work")
            final = wait_until(lambda: (s := wire.status(job_id, ttl=2000))["status"] in ("success", "failure") and s,
                               30, what="the job to finish after the kill")
            recovered_after = time.monotonic() - t_kill
            assert final["status"] == "success", final
            assert final["resultType"] == "resolution"
            assert final["result"] == b64("machine-healthy"), "the retry's result is the one stored"

            # Exactly once: the healthy worker ran it once (and was told 204), nobody else did.
            wait_until(lambda: healthy.resulted(), 10, what="the healthy worker's result line")
            assert healthy.claimed() == [job_id]
            assert healthy.resulted() == [{"resulted": job_id, "status": 204}]

            summary = wire.job_summary(job_id)
            assert summary["status"] == "success"
            assert summary["attempt"] == 2, "one claim by the killed worker, one by the retry"
            assert summary["attemptsAllowed"] == 3
            assert summary["machineId"] == "machine-healthy"

            # The activity log tells the same story (events are flushed every 0.5 s).
            def story():
                evs = wire.activity(job_id)
                kinds = [e["type"] for e in evs]
                return evs if "jobResulted" in kinds and "jobRecovered" in kinds else None

            evs = wait_until(story, 10, what="the job's events")
            received = sorted((e["meta"].get("attempt"), e["machineId"]) for e in evs if e["type"] == "jobReceived")
            assert received == [(1, "machine-doomed"), (2, "machine-healthy")]
            stalled = [e for e in evs if e["type"] == "jobStalled"]
            assert len(stalled) == 1, stalled
            assert stalled[0]["machineId"] == "machine-doomed"
            assert stalled[0]["meta"]["reason"] == "machine stalled"
            assert stalled[0]["meta"]["attempt"] == 1 and stalled[0]["meta"]["attemptsAllowed"] == 3
            assert len([e for e in evs if e["type"] == "jobRecovered"]) == 1
            resulted = [e for e in evs if e["type"] == "jobResulted"]
            assert [e["machineId"] for e in resulted] == ["machine-healthy"]
            assert not [e for e in evs if e["type"] == "jobStalledTooManyTimes"]

            # The killed attempt's result arrives late (say, from a zombie or a retried request).
            wire.result(job_id, "machine-doomed", b64("machine-doomed"))
            after = wire.status(job_id)
            assert (after["status"], after["result"]) == ("success", b64("machine-healthy")), "late result fenced"
            fenced = wait_until(lambda: wire.events_of(job_id, "jobResultedButNotPersisted"), 10,
                                what="the fenced-result event")
            assert len(fenced) == 1
            assert fenced[0]["machineId"] == "machine-doomed"
            assert fenced[0]["meta"]["reason"] == "job is success"
            assert len(wire.events_of(job_id, "jobResulted")) == 1
            assert wire.job_summary(job_id)["attempt"] == 2
            print(f"\nkill -> retried result stored in {recovered_after:.2f}s")
        finally:
            for w in (doomed, healthy):
                if w is not None:
                    w.stop()
            wire.close()


def test_late_result_while_the_retry_runs_is_fenced(fresh_pg_url):
    """The killed attempt's result arriving while the retry still runs must not steal the job."""
    with ControlPlane(fresh_pg_url, env=FAST_SWEEP) as cp:
        cluster = cp.create_cluster()
        wire = Wire(cp.url, cluster, cp.management_secret)
        doomed = None
        try:
            job_id = wire.call(service="svc", retryCountOnStall=1, timeoutSeconds=600)
            doomed = WorkerProcess(cp.url, cluster["apiSecret"], "machine-doomed", "svc", mode="hang")
            wait_until(lambda: doomed.claimed(), 20, what="the doomed worker to claim the job")
            doomed.kill(signal.SIGKILL)

            # The retry is claimed by a machine of ours, which holds it while the late result arrives.
            retry = wait_until(lambda: wire.claim("machine-retry", ttl=1000), 20, what="the job to be re-queued")
            assert [j["id"] for j in retry] == [job_id]
            wire.result(job_id, "machine-doomed", b64("late"))
            now = wire.status(job_id)
            assert (now["status"], now["result"]) == ("running", None), "a fenced result changes nothing"
            fenced = wait_until(lambda: wire.events_of(job_id, "jobResultedButNotPersisted"), 10,
                                what="the fenced-result event")
            assert fenced[0]["meta"]["reason"] == "attempt is held by another machine (machine-retry)"

            wire.result(job_id, "machine-retry", b64("retry"))
            done = wire.status(job_id)
            assert (done["status"], done["result"]) == ("success", b64("retry"))
            summary = wire.job_summary(job_id)
            assert (summary["attempt"], summary["attemptsAllowed"]) == (2, 2)
        finally:
            if doomed is not None:
                doomed.stop()
            wire.close()
