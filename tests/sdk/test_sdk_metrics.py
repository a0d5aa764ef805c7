"""`differential metrics` against a real control-plane: a Python SDK worker's mix of resolutions
and rejections reads back as its summary (the tail of jobs finished seconds ago included)."""
from __future__ import annotations

import json

import pytest

from differential import Differential, RemoteError

from test_sdk_cli import cli

pytestmark = pytest.mark.postgres


def test_cli_metrics_summary_table_and_json(sdk_control_plane, cluster, d: Differential, service_name):
    mgmt = {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url,
            "DIFFERENTIAL_MANAGEMENT_SECRET": sdk_control_plane.management_secret}
    svc = d.service(service_name)

    @svc.function
    def double(x: int) -> int:
        return 2 * x

    @svc.function
    def refuse(x: int) -> int:
        raise ValueError(f"no {x}")

    svc.start()
    try:
        assert [d.call(service_name, "double", i, timeout=15) for i in range(4)] == [0, 2, 4, 6]
        for i in range(3):
            with pytest.raises(RemoteError):
                d.call(service_name, "refuse", i, timeout=15)
    finally:
        assert svc.stop(timeout=10)

    r = cli("metrics", "--cluster", cluster["id"], "--since", "15m", "--bucket", "5m", "--json", env=mgmt)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["bucketSeconds"] == 300
    got = {f["function"]: f["summary"]["calls"] for f in answer["functions"]}
    assert got == {"double": {"resolution": 4, "rejection": 0, "failure": 0, "cancelled": 0, "total": 4},
                   "refuse": {"resolution": 0, "rejection": 3, "failure": 0, "cancelled": 0, "total": 3}}
    for f in answer["functions"]:
        assert f["summary"]["executionMs"]["count"] == f["summary"]["calls"]["total"]
        assert sum(b["calls"]["total"] for b in f["timeseries"]) == f["summary"]["calls"]["total"]

    r = cli("metrics", "--cluster", cluster["id"], "--service", service_name, env=mgmt)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split()[:7] == ["SERVICE", "FUNCTION", "CALLS", "OK", "REJECTED", "FAILED", "CANCELLED"]
    rows = {line.split()[1]: line.split()[2:7] for line in lines[2:4]}
    assert rows == {"double": ["4", "4", "0", "0", "0"], "refuse": ["3", "0", "3", "0", "0"]}


def test_cli_metrics_bad_input(sdk_control_plane, cluster):
    mgmt = {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url,
            "DIFFERENTIAL_MANAGEMENT_SECRET": sdk_control_plane.management_secret}
    r = cli("metrics", "--cluster", cluster["id"], "--since", "soon", env=mgmt)
    assert r.returncode == 2 and "--since" in r.stderr
    r = cli("metrics", "--cluster", cluster["id"], "--bucket", "90s", env=mgmt)
    assert r.returncode == 7 and "bucketSeconds" in r.stderr  # the server's 400, naming the field
    r = cli("metrics", "--cluster", "no-such-cluster", env=mgmt)
    assert r.returncode == 4 and "not found" in r.stderr
