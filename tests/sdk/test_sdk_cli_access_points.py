"""`differential access-points create|list|rotate|delete` and `differential execute`, as a real
subprocess against a live control-plane with a Python service: tokens printed once, rotation and
deletion effective at once, results as JSON, a remote error and a timeout as documented exit codes."""
from __future__ import annotations

import json
import re
import time

import pytest

from test_sdk_cli import cli

pytestmark = pytest.mark.postgres

TOKEN = re.compile(r"sk_ap_[0-9a-f]{64}")


@pytest.fixture
def env(sdk_control_plane):
    return {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url,
            "DIFFERENTIAL_MANAGEMENT_SECRET": sdk_control_plane.management_secret}


@pytest.fixture
def served(d, service_name):
    svc = d.service(service_name, concurrency=4)

    @svc.function
    def greet(name):
        return {"greeting": f"Hello, {name}!", "at": None}

    @svc.function
    def fail(reason):
        raise ValueError(f"cannot: {reason}")

    @svc.function
    def slow(seconds):
        time.sleep(seconds)
        return seconds

    svc.start()
    yield service_name
    assert svc.stop(timeout=10)


def test_create_list_rotate_delete_and_execute(env, cluster, served):
    cid = cluster["id"]
    r = cli("access-points", "create", "ops", "--cluster", cid, "--services", served, env=env)
    assert r.returncode == 0, r.stderr
    token = TOKEN.search(r.stdout).group(0)
    r = cli("access-points", "create", "ops", "--cluster", cid, "--services", served, env=env)
    assert r.returncode == 2 and "rotate" in r.stderr  # an existing name is not silently rotated

    call = {**env, "DIFFERENTIAL_ACCESS_POINT_TOKEN": token}
    r = cli("execute", served, "greet", '"Ada"', "--cluster", cid, env=call)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"greeting": "Hello, Ada!", "at": None}
    r = cli("execute", served, "greet", '"Ada"', "--cluster", cid, "--json", env=call)
    assert json.loads(r.stdout)["outcome"] == "resolution" and json.loads(r.stdout)["jobId"]
    r = cli("execute", served, "fail", '"no"', "--cluster", cid, env=call)
    assert r.returncode == 1 and "ValueError: cannot: no" in r.stderr
    r = cli("execute", "other", "fn", "--cluster", cid, env=call)
    assert r.returncode == 7 and "may not call service 'other'" in r.stderr
    r = cli("execute", served, "slow", "3", "--cluster", cid, "--wait", "1", env=call)
    assert r.returncode == 6 and "still" in r.stderr

    r = cli("access-points", "list", "--cluster", cid, "--json", env=env)
    [listed] = json.loads(r.stdout)
    assert listed["name"] == "ops" and listed["allowedServices"] == [served] and listed["lastUsedAt"]
    assert token not in r.stdout
    assert "ops" in cli("access-points", "list", "--cluster", cid, env=env).stdout

    r = cli("access-points", "rotate", "ops", "--cluster", cid, env=env)
    assert r.returncode == 0, r.stderr
    new = TOKEN.search(r.stdout).group(0)
    assert new != token
    r = cli("execute", served, "greet", '"Bo"', "--cluster", cid, env=call)
    assert r.returncode == 3  # the old token, refused at once
    r = cli("execute", served, "greet", '"Bo"', "--cluster", cid, "--token", new, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["greeting"] == "Hello, Bo!"
    # Rotating keeps the services; the cluster's own API secret calls too.
    assert json.loads(cli("access-points", "list", "--cluster", cid, "--json", env=env).stdout)[0][
        "allowedServices"] == [served]
    r = cli("execute", served, "greet", '"Cy"', "--cluster", cid, env={**env, "DIFFERENTIAL_API_SECRET":
                                                                      cluster["apiSecret"]})
    assert r.returncode == 0, r.stderr

    assert cli("access-points", "delete", "ops", "--cluster", cid, env=env).returncode == 0
    assert cli("execute", served, "greet", '"Di"', "--cluster", cid, "--token", new, env=env).returncode == 3
    assert cli("access-points", "delete", "ops", "--cluster", cid, env=env).returncode == 4
    assert cli("access-points", "rotate", "ops", "--cluster", cid, env=env).returncode == 4


def test_usage_errors(env, cluster):
    r = cli("execute", "svc", "fn", "--cluster", cluster["id"], env=env)
    assert r.returncode == 2 and "DIFFERENTIAL_ACCESS_POINT_TOKEN" in r.stderr
    r = cli("execute", "svc", "fn", "notjson", "--cluster", cluster["id"], "--token", "x", env=env)
    assert r.returncode == 2
    r = cli("access-points", "create", "ops", "--cluster", cluster["id"], env=env)
    assert r.returncode == 2 and "--services" in r.stderr
