"""`differential call` with the caller's wait apart from the attempt timeout, deadlines and
cancel-on-timeout, and `differential jobs cancel` (issue 14), as real subprocesses."""
from __future__ import annotations

import json
import threading
import time

import pytest

from differential import current_job
from test_sdk_cli import cli


@pytest.mark.parametrize("args", [["call", "s", "f", "--wait", "soon"], ["call", "s", "f", "--queue-deadline", "x"],
                                  ["jobs", "cancel"]])
def test_usage_errors_exit_2(args):
    r = cli(*args)
    assert r.returncode == 2 and "usage:" in r.stderr


@pytest.mark.parametrize("args, field", [(["--wait", "0"], "wait"), (["--call-deadline", "-1"], "call_deadline"),
                                         (["--cancel-on-timeout"], "--cancel-on-timeout needs --wait")])
def test_bad_values_exit_2_naming_the_option(args, field):
    r = cli("call", "svc", "fn", *args, env={"DIFFERENTIAL_API_SECRET": "sk_x", "DIFFERENTIAL_ENDPOINT": "http://127.0.0.1:9"})
    assert r.returncode == 2 and field in r.stderr, r.stderr


@pytest.mark.postgres
def test_timeout_is_the_wait_and_never_makes_the_function_run_again(sdk_control_plane, cluster, d, service_name):
    # The new user: `--timeout 1` on a five-second function ran it three times.
    svc = d.service(service_name)
    runs = []

    @svc.function
    def five() -> str:
        runs.append(time.monotonic())
        time.sleep(5)
        return "done"

    env = {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url, "DIFFERENTIAL_API_SECRET": cluster["apiSecret"]}
    with svc:
        r = cli("call", service_name, "five", "--timeout", "1", env=env)
        assert r.returncode == 6 and "did not finish within" in r.stderr
        job_id = r.stderr.split("job ", 1)[1].split()[0]
        assert d.result(job_id, timeout=30) == "done"
        time.sleep(2)
    assert len(runs) == 1


@pytest.mark.postgres
def test_cancel_on_timeout_and_jobs_cancel(sdk_control_plane, cluster, d, service_name):
    svc = d.service(service_name, cancel_check_interval=0.5)
    stopped = threading.Event()

    @svc.function
    def slow() -> str:
        if current_job().wait(30):
            stopped.set()
        return "late"

    env = {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url, "DIFFERENTIAL_API_SECRET": cluster["apiSecret"]}
    with svc:
        r = cli("call", service_name, "slow", "--wait", "1", "--cancel-on-timeout", env=env)
        assert r.returncode == 6 and "cancelled job" in r.stderr, r.stderr
        assert stopped.wait(10)

        job_id = d.client(service_name, background=True).slow()
        r = cli("jobs", "cancel", job_id, "--reason", "from the shell", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"id": job_id, "service": service_name, "state": "cancelled",
                                        "reason": "cancelled by the caller: from the shell"}
        r = cli("jobs", "cancel", job_id, env=env)  # again: fine
        assert r.returncode == 0 and "cancelled by the caller: from the shell" in r.stdout
        r = cli("jobs", "cancel", "no-such-job", env=env)
        assert r.returncode == 4


@pytest.mark.postgres
def test_a_queue_deadline_fails_an_unserved_call_with_its_reason(sdk_control_plane, cluster, service_name):
    env = {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url, "DIFFERENTIAL_API_SECRET": cluster["apiSecret"]}
    r = cli("call", service_name, "anything", "--queue-deadline", "1", env=env, timeout=30)
    assert r.returncode == 1, r.stderr
    assert f"no machine of service '{service_name}' claimed this call within its 1 s queue deadline" in r.stderr
