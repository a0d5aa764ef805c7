"""A call to a service nobody serves is told so within seconds (SDK warning, CLI stderr), and the
`differential jobs list/show/rerun` and cluster-view commands, against a real control-plane."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import pytest

from differential import AsyncDifferential, CallTimeoutError, Differential, JobFailedError

from test_sdk_cli import cli

pytestmark = pytest.mark.postgres


def unserved_warnings(caplog):
    return [r for r in caplog.records if r.name == "differential.client" and r.levelno == logging.WARNING
            and "no machine is polling service" in r.getMessage()]


def test_a_call_to_a_service_nobody_serves_warns_within_seconds(d, service_name, caplog):
    caplog.set_level(logging.WARNING, logger="differential.client")
    started = time.monotonic()
    seen = []

    def watch():
        while time.monotonic() - started < 8 and not unserved_warnings(caplog):
            time.sleep(0.05)
        seen.append(time.monotonic() - started)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with pytest.raises(CallTimeoutError):
        d.call(service_name, "anything", timeout=6)
    watcher.join()
    [warning] = unserved_warnings(caplog)
    assert service_name in warning.getMessage() and "never been polled" in warning.getMessage()
    assert 1.5 <= seen[0] < 5, seen  # after ~2 s of waiting, not at once and not at the timeout


def test_a_served_service_is_not_warned_about_and_a_quick_call_asks_nothing(d, service_name, caplog):
    caplog.set_level(logging.DEBUG, logger="differential.client")
    svc = d.service(service_name)

    @svc.function
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    svc.start()
    try:
        assert d.call(service_name, "slow", 0, timeout=10) == "done"  # warms up the poller
        _, poller = d._background()
        asked = []
        real = poller.transport.request

        async def spy(method, path, *args, **kwargs):
            asked.append(path)
            return await real(method, path, *args, **kwargs)

        poller.transport.request = spy
        assert d.call(service_name, "slow", 0.1, timeout=10) == "done"
        assert not [p for p in asked if p.startswith("/services/")]  # finished within 2 s: no question
        assert d.call(service_name, "slow", 3.5, timeout=15) == "done"  # waits past 2 s on a live worker
        assert [p for p in asked if p.startswith("/services/")] == [f"/services/{service_name}"]
        assert unserved_warnings(caplog) == []
    finally:
        assert svc.stop(timeout=10)


def test_the_asyncio_caller_warns_too(sdk_control_plane, cluster, service_name, caplog):
    caplog.set_level(logging.WARNING, logger="differential.client")

    async def main():
        async with AsyncDifferential(cluster["apiSecret"], endpoint=sdk_control_plane.url,
                                     warn_unserved_after=0.5) as d:
            with pytest.raises(CallTimeoutError):
                await d.call(service_name, "anything", timeout=3)

    asyncio.run(main())
    [warning] = unserved_warnings(caplog)
    assert service_name in warning.getMessage()


def test_the_warning_can_be_turned_off(sdk_control_plane, cluster, service_name, caplog):
    caplog.set_level(logging.WARNING, logger="differential.client")
    with Differential(cluster["apiSecret"], endpoint=sdk_control_plane.url, warn_unserved_after=None) as quiet:
        with pytest.raises(CallTimeoutError):
            quiet.call(service_name, "anything", timeout=3)
    assert unserved_warnings(caplog) == []


def test_cli_call_prints_the_warning_to_stderr(sdk_control_plane, cluster, service_name):
    env = {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url, "DIFFERENTIAL_API_SECRET": cluster["apiSecret"]}
    r = cli("call", service_name, "fn", "--timeout", "4", env=env)
    assert r.returncode == 6, r.stderr
    assert f"differential: warning: no machine is polling service '{service_name}'" in r.stderr


def test_cli_jobs_list_show_rerun_and_the_cluster_view(sdk_control_plane, cluster, d, service_name):
    mgmt = {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url,
            "DIFFERENTIAL_MANAGEMENT_SECRET": sdk_control_plane.management_secret}
    runs = []
    svc = d.service(service_name)

    @svc.function
    def flaky() -> str:
        runs.append(time.monotonic())
        if len(runs) == 1:
            time.sleep(3)  # past its 1 s attempt: the control-plane gives up on it (no retries)
        return "second time lucky"

    svc.start()
    try:
        job_id = d.create_job(service_name, "flaky", options=d.client(service_name)._options.merged(
            timeout=1, retry_count_on_stall=0))
        with pytest.raises(JobFailedError):
            d.result(job_id, timeout=15)

        r = cli("jobs", "list", "--cluster", cluster["id"], "--status", "failure", env=mgmt)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0].split()[:4] == ["ID", "SERVICE", "FUNCTION", "STATUS"]
        assert job_id in r.stdout and "failure" in r.stdout
        r = cli("jobs", "list", "--cluster", cluster["id"], "--status", "pending", "--json", env=mgmt)
        assert json.loads(r.stdout) == {"jobs": [], "next": None}

        r = cli("jobs", "show", job_id, "--cluster", cluster["id"], "--json", env=mgmt)
        shown = json.loads(r.stdout)
        assert r.returncode == 0 and shown["status"] == "failure" and shown["attempt"] == 1
        assert "jobReceived" in [e["type"] for e in shown["activity"]["events"]]
        r = cli("jobs", "show", job_id, "--cluster", cluster["id"], env=mgmt)
        assert "status:           failure" in r.stdout and "jobReceived" in r.stdout

        r = cli("jobs", "rerun", job_id, "--cluster", cluster["id"], env=mgmt)
        assert r.returncode == 0, r.stderr
        assert f"Re-running job {job_id}: pending" in r.stdout
        assert d.result(job_id, timeout=15) == "second time lucky"
        assert len(runs) == 2
        r = cli("jobs", "rerun", job_id, "--cluster", cluster["id"], env=mgmt)
        assert r.returncode == 7 and "is success" in r.stderr  # 409: only failed or cancelled jobs

        assert d.call(service_name, "flaky", timeout=10) == "second time lucky"  # two jobs now
        r = cli("jobs", "list", "--cluster", cluster["id"], "--limit", "1", env=mgmt)
        token = r.stdout.split("More: add --cursor ")[1].strip()
        r = cli("jobs", "list", "--cluster", cluster["id"], "--limit", "1", "--cursor", token, "--json", env=mgmt)
        assert [j["id"] for j in json.loads(r.stdout)["jobs"]] == [job_id]
        r = cli("jobs", "list", "--cluster", cluster["id"], "--status", "done", env=mgmt)
        assert r.returncode == 7 and "status" in r.stderr

        r = cli("clusters", "show", cluster["id"], env=mgmt)
        assert "Live workers per service (1):" in r.stdout
        assert any(line.split()[:2] == [service_name, "1"] for line in r.stdout.splitlines())
    finally:
        assert svc.stop(timeout=10)
