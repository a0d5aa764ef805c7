"""Cancel and deadlines through our SDK (issue 14): d.cancel, the errors a caller gets, the
worker abandoning a cancelled job (the cooperative flag, an async task cancelled), the caller's
wait apart from the attempt timeout; against a real control-plane on PostgreSQL."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from differential import (
    AsyncDifferential, CallOptions, CallTimeoutError, ControlPlaneError, DeadlineExceededError, Differential,
    JobCancelledError, current_job,
)
from support.waiting import wait_until

pytestmark = pytest.mark.postgres


def activity(cp, cluster, job_id):
    r = httpx.get(f"{cp.url}/clusters/{cluster['id']}/activity", params={"jobId": job_id, "limit": 100},
                  headers=cp.management_headers, timeout=10)
    assert r.status_code == 200, r.text
    return [e["type"] for e in r.json()["events"]]


def test_cancel_a_pending_call_and_its_caller_gets_job_cancelled_error(d, service_name):
    job_id = d.client(service_name, background=True).anything(1)
    st = d.cancel(job_id, reason="changed my mind")
    assert st.state == "cancelled" and st.reason == "cancelled by the caller: changed my mind"
    with pytest.raises(JobCancelledError) as info:
        d.result(job_id, timeout=10)
    assert info.value.job_id == job_id and info.value.reason == st.reason
    assert f"{service_name}.anything" in str(info.value) and "changed my mind" in str(info.value)
    assert d.cancel(job_id).state == "cancelled"  # again: idempotent


def test_cancelling_a_finished_call_is_a_409(d, service_name):
    svc = d.service(service_name)

    @svc.function
    def quick():
        return 1

    with svc:
        job_id = d.client(service_name, background=True).quick()
        assert d.result(job_id, timeout=30) == 1
        with pytest.raises(ControlPlaneError) as info:
            d.cancel(job_id)
    assert info.value.status == 409 and info.value.code == "job_finished"


def test_a_waiting_caller_learns_at_once(sdk_control_plane, cluster, d, service_name):
    job_id = d.client(service_name, background=True).unserved()
    got = {}

    def wait():
        started = time.monotonic()
        try:
            d.result(job_id, timeout=30)
        except JobCancelledError as e:
            got["error"], got["seconds"] = e, time.monotonic() - started

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(1.0)
    with Differential(cluster["apiSecret"], endpoint=sdk_control_plane.url) as other:
        other.cancel(job_id)
    thread.join(15)
    assert got["error"].job_id == job_id and got["seconds"] < 6  # far inside the 20 s poll


def test_the_worker_stops_a_cancelled_sync_job_and_the_function_sees_the_flag(sdk_control_plane, cluster, d,
                                                                               service_name):
    svc = d.service(service_name, cancel_check_interval=0.5)
    started, seen = threading.Event(), {}

    @svc.function
    def long_loop():
        job = current_job()
        seen["job_id"] = job.job_id
        started.set()
        for _ in range(300):
            if job.wait(0.1):
                seen["cancelled"], seen["reason"] = True, job.reason
                return "too late"  # returned after the cancel: never posted
        return "done"

    with svc:
        job_id = d.client(service_name, background=True).long_loop()
        assert started.wait(20)
        cancelled_at = time.monotonic()
        d.cancel(job_id, reason="stop")
        wait_until(lambda: seen.get("cancelled"), timeout=10, what="the function to see the flag")
        assert time.monotonic() - cancelled_at < 5
        assert seen["job_id"] == job_id and seen["reason"] == "cancelled by the caller: stop"
        wait_until(lambda: svc.stats.get("cancelled") == 1, timeout=10, what="the worker to count it")
        assert svc.stats["reported"] == 0
    assert d.job(job_id).state == "cancelled"
    types = activity(sdk_control_plane, cluster, job_id)
    assert "jobCancelled" in types and "jobResulted" not in types and "jobResultedButNotPersisted" not in types


def test_the_worker_cancels_an_async_functions_task(d, service_name):
    svc = d.service(service_name, cancel_check_interval=0.5)
    started, interrupted = threading.Event(), threading.Event()

    @svc.function
    async def sleeper():
        assert current_job() is not None
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.set()
            raise
        return "slept"

    with svc:
        job_id = d.client(service_name, background=True).sleeper()
        assert started.wait(20)
        d.cancel(job_id)
        assert interrupted.wait(10)
        wait_until(lambda: svc.stats.get("cancelled") == 1, timeout=10, what="the worker to count it")
        assert svc.stats["reported"] == 0


def test_a_caller_that_stops_waiting_does_not_make_the_function_run_again(d, service_name):
    svc = d.service(service_name)
    runs = []

    @svc.function
    def nap(seconds: float) -> float:
        runs.append(time.monotonic())
        time.sleep(seconds)
        return seconds

    with svc:
        with pytest.raises(CallTimeoutError) as info:
            d.client(service_name, wait=1).nap(3)
        # The attempt timeout stays the default: it finishes, once, and can be fetched.
        assert d.result(info.value.job_id, timeout=30) == 3
        time.sleep(1.5)
        assert len(runs) == 1


def test_cancel_on_timeout_cancels_the_call_when_the_caller_gives_up(d, service_name):
    svc = d.service(service_name, cancel_check_interval=0.5)
    runs, stopped = [], threading.Event()

    @svc.function
    def slow():
        runs.append(1)
        if current_job().wait(30):
            stopped.set()
        return "late"

    with svc:
        with pytest.raises(CallTimeoutError) as info:
            d.client(service_name, wait=1, cancel_on_timeout=True).slow()
        st = d.job(info.value.job_id)
        assert st.state == "cancelled" and st.reason == "cancelled by the caller: the caller stopped waiting after 1 s"
        assert stopped.wait(10)
    assert runs == [1]


def test_a_queue_deadline_ends_an_unserved_call_with_its_reason(d, service_name):
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as info:
        d.client(service_name, queue_deadline=1).anything()
    assert time.monotonic() - started < 8  # the maintenance sweep runs every 0.5 s here
    assert info.value.kind == "QUEUE_DEADLINE"
    assert info.value.reason == f"no machine of service {service_name!r} claimed this call within its 1 s queue deadline"
    assert isinstance(info.value, TimeoutError)


def test_a_call_deadline_ends_a_running_call_and_the_worker_abandons_it(d, service_name):
    svc = d.service(service_name, cancel_check_interval=0.5)
    runs = []

    @svc.function
    def forever():
        runs.append(1)
        current_job().wait(30)
        return "never seen"

    with svc:
        with pytest.raises(DeadlineExceededError) as info:
            d.client(service_name, call_deadline=1.5, retry_count_on_stall=5).forever()
        assert info.value.kind == "CALL_DEADLINE"
        wait_until(lambda: svc.stats.get("cancelled") == 1, timeout=10, what="the worker to abandon it")
        time.sleep(1)
        assert runs == [1] and svc.stats["reported"] == 0


def test_the_async_client_cancels(sdk_control_plane, cluster, service_name):
    async def main():
        async with AsyncDifferential(cluster["apiSecret"], endpoint=sdk_control_plane.url) as ad:
            job_id = await ad.client(service_name, background=True).unserved()
            st = await ad.cancel(job_id, reason="async")
            assert st.state == "cancelled"
            with pytest.raises(JobCancelledError):
                await ad.result(job_id, timeout=10)

    asyncio.run(main())


@pytest.mark.parametrize("option", ["wait", "attempt_timeout", "queue_deadline", "call_deadline", "timeout"])
@pytest.mark.parametrize("value", [0, -1, "5", True, float("inf")])
def test_bad_time_options_are_refused(option, value):
    with pytest.raises(ValueError, match=option):
        CallOptions(**{option: value})


def test_the_wire_fields_of_the_new_options():
    cfg = CallOptions(wait=5, attempt_timeout=2.5, queue_deadline=10, call_deadline=60).call_config()
    assert cfg["timeoutSeconds"] == 3 and cfg["queueDeadlineSeconds"] == 10 and cfg["callDeadlineSeconds"] == 60
    legacy = CallOptions(timeout=7).call_config()  # as before: the attempt timeout, and no deadline
    assert legacy["timeoutSeconds"] == 7 and "callDeadlineSeconds" not in legacy
    assert CallOptions(timeout=7).caller_wait == 7 and CallOptions(timeout=7, wait=2).caller_wait == 2
    assert "queueDeadlineSeconds" not in CallOptions().call_config()


def test_the_status_answer_decides_the_error():
    from differential import JobFailedError, RemoteError
    from differential.client import JobStatus
    from differential.serialize import pack

    def status(state, reason, error):
        return JobStatus(id="j1", status="success" if error else "failure", result=error and pack(error),
                         result_type="rejection" if error else None, state=state, reason=reason)

    with pytest.raises(JobCancelledError, match="was cancelled by an operator"):
        status("cancelled", "cancelled by an operator", {"name": "DifferentialCancelledError", "code": "CANCELLED",
                                                         "message": "call j1 of s.f was cancelled by an operator"}
               ).outcome()
    with pytest.raises(DeadlineExceededError) as info:
        status("failure", "late", {"name": "DifferentialDeadlineError", "code": "CALL_DEADLINE",
                                   "message": "call j1: late"}).outcome()
    assert info.value.kind == "CALL_DEADLINE" and str(info.value) == "call j1: late"
    # A stall failure (no result) stays JobFailedError; another packed failure is its RemoteError.
    with pytest.raises(JobFailedError) as failed:
        status("failure", None, None).outcome()
    assert not isinstance(failed.value, DeadlineExceededError)
    with pytest.raises(RemoteError, match="other"):
        status("failure", "why", {"name": "Other", "code": "X", "message": "other"}).outcome()
