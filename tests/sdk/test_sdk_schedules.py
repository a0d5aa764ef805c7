"""Schedules end to end (PostgreSQL): the `differential schedules` commands against a live
control-plane, and a scheduled call reaching a real Python SDK worker with its JSON arguments."""
from __future__ import annotations

import json
import threading

import psycopg2
import pytest

from support.waiting import wait_until
from test_sdk_cli import cli

pytestmark = pytest.mark.postgres

ARGS = [7, "seven", 2.5, None, True, {"nested": {"list": [1, "x", {}]}}, [], 2**40]


@pytest.fixture
def mgmt_env(sdk_control_plane):
    return {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url,
            "DIFFERENTIAL_MANAGEMENT_SECRET": sdk_control_plane.management_secret}


def make_due(database_url: str, cluster_id: str, name: str) -> None:
    """Bring the schedule's next tick to now (as if its minute had come): the server's own
    maintenance loop fires it within a sweep interval."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE schedules SET next_fire_ms = (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint"
                    " - 1000 WHERE cluster_id = %s AND name = %s", (cluster_id, name))
        assert cur.rowcount == 1
    conn.close()


def test_schedules_commands(mgmt_env, cluster):
    c = ["--cluster", cluster["id"]]
    r = cli("schedules", "create", "daily", *c, "--service", "svc", "--function", "report", "--args", '[1, "a"]',
            "--cron", "30 8 * * 1-5", "--timezone", "Europe/Paris", "--catch-up", "none", env=mgmt_env)
    assert r.returncode == 0, r.stderr
    assert "Created schedule daily" in r.stdout and "Target:      svc.report(1, \"a\")" in r.stdout
    assert "Cron:        30 8 * * 1-5 (Europe/Paris)" in r.stdout and "Catch-up:    none" in r.stdout

    r = cli("schedules", "create", "daily", *c, "--service", "svc", "--function", "report", "--cron", "* * * * *",
            env=mgmt_env)
    assert r.returncode == 7 and "already exists" in r.stderr
    r = cli("schedules", "create", "daily", *c, "--service", "svc", "--function", "other", "--cron", "0 * * * *",
            "--replace", "--json", env=mgmt_env)
    assert r.returncode == 0, r.stderr
    replaced = json.loads(r.stdout)
    assert (replaced["function"], replaced["arguments"], replaced["timezone"]) == ("other", [], "UTC")

    r = cli("schedules", "list", *c, env=mgmt_env)
    assert r.returncode == 0
    header, *rows = r.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "TARGET", "CRON", "STATE"]
    assert rows[0].split()[:2] == ["daily", "svc.other"] and "active" in rows[0]

    r = cli("schedules", "pause", "daily", *c, env=mgmt_env)
    assert r.returncode == 0 and "Paused schedule daily" in r.stdout and "Next fire:   -" in r.stdout
    r = cli("schedules", "show", "daily", *c, "--json", env=mgmt_env)
    assert json.loads(r.stdout)["paused"] is True
    r = cli("schedules", "resume", "daily", *c, "--json", env=mgmt_env)
    resumed = json.loads(r.stdout)
    assert resumed["paused"] is False and resumed["nextFireAt"].endswith(":00:00.000Z")
    r = cli("schedules", "list", *c, "--json", env=mgmt_env)
    assert [s["name"] for s in json.loads(r.stdout)] == ["daily"]

    r = cli("schedules", "delete", "daily", *c, env=mgmt_env)
    assert r.returncode == 0 and "Deleted schedule daily" in r.stdout
    r = cli("schedules", "show", "daily", *c, env=mgmt_env)
    assert r.returncode == 4 and "not found" in r.stderr
    r = cli("schedules", "list", *c, env=mgmt_env)
    assert r.returncode == 0 and r.stdout.strip() == "No schedules."


def test_schedules_commands_refuse_bad_input(mgmt_env, cluster):
    c = ["--cluster", cluster["id"]]
    base = ["schedules", "create", "s1", *c, "--service", "svc", "--function", "fn"]
    r = cli(*base, "--cron", "61 * * * *", env=mgmt_env)
    assert r.returncode == 7 and "minute field" in r.stderr
    r = cli(*base, "--cron", "* * * * *", "--timezone", "Nowhere/Land", env=mgmt_env)
    assert r.returncode == 7 and "Nowhere/Land" in r.stderr
    r = cli(*base, "--cron", "* * * * *", "--args", "{\"a\": 1}", env=mgmt_env)
    assert r.returncode == 2 and "JSON array" in r.stderr
    r = cli(*base, "--cron", "* * * * *", "--args", "[1,", env=mgmt_env)
    assert r.returncode == 2 and "not JSON" in r.stderr
    r = cli(*base, "--cron", "* * * * *", "--catch-up", "sometimes", env=mgmt_env)
    assert r.returncode == 2
    r = cli("schedules", "create", "bad name", *c, "--service", "svc", "--function", "fn", "--cron", "* * * * *",
            env=mgmt_env)
    assert r.returncode == 7 and "name" in r.stderr
    r = cli("schedules", "pause", "ghost", *c, env=mgmt_env)
    assert r.returncode == 4
    r = cli("schedules", "list", "--cluster", "cluster-does-not-exist", env=mgmt_env)
    assert r.returncode == 4


def test_a_scheduled_call_reaches_a_python_worker_with_its_arguments(sdk_control_plane, cluster, d, service_name):
    got: list = []
    arrived = threading.Event()
    svc = d.service(service_name)

    @svc.function
    def report(*args):
        got.append(list(args))
        arrived.set()
        return len(args)

    svc.start()
    try:
        import httpx

        r = httpx.post(f"{sdk_control_plane.url}/clusters/{cluster['id']}/schedules",
                       headers=sdk_control_plane.management_headers,
                       json={"name": "every-minute", "service": service_name, "function": "report",
                             "arguments": ARGS, "cron": "* * * * *"}, timeout=10)
        assert r.status_code == 201, r.text
        make_due(sdk_control_plane.database_url, cluster["id"], "every-minute")
        assert arrived.wait(30), "the scheduled call did not reach the worker"
        assert got == [ARGS]
        assert [type(v) for v in got[0]] == [type(v) for v in ARGS]
        shown = httpx.get(f"{sdk_control_plane.url}/clusters/{cluster['id']}/schedules/every-minute",
                          headers=sdk_control_plane.management_headers, timeout=10).json()
        assert shown["lastFiredAt"] is not None
        job = wait_until(lambda: [j for j in httpx.get(f"{sdk_control_plane.url}/clusters/{cluster['id']}",
                                                       headers=sdk_control_plane.management_headers,
                                                       timeout=10).json()["jobs"] if j["status"] == "success"],
                         15, what="the scheduled job to succeed")
        assert job[0]["id"].startswith("schedule:every-minute:")
    finally:
        assert svc.stop(timeout=10)
