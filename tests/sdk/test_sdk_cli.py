"""The `differential` command line: argument handling offline, then every command against a live
control-plane, checking output and exit codes (run as a real subprocess)."""
from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sdk_helpers import subprocess_env


# Run from a folder with no .differential/ above it, so a local server's secret (say, from
# `make run` in this checkout) is never found by accident.
_NEUTRAL_CWD = tempfile.mkdtemp(prefix="differential-cli-")
atexit.register(shutil.rmtree, _NEUTRAL_CWD, True)


def cli(*args, env=None, timeout=60):
    base = subprocess_env()
    for name in ("DIFFERENTIAL_ENDPOINT", "DIFFERENTIAL_API_SECRET", "DIFFERENTIAL_MANAGEMENT_SECRET",
                 "DIFFERENTIAL_MANAGEMENT_SECRET_FILE", "DIFFERENTIAL_DATA_DIR"):
        base.pop(name, None)
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "differential.cli", *args], env=base, capture_output=True,
                          text=True, timeout=timeout, cwd=_NEUTRAL_CWD)


# -- offline ------------------------------------------------------------------------------------

def test_console_script_is_declared():
    text = (Path(__file__).resolve().parents[2] / "sdk" / "pyproject.toml").read_text()
    assert 'differential = "differential.cli:main"' in text


def test_help_documents_the_exit_codes():
    r = cli("--help")
    assert r.returncode == 0
    for line in ("0  success", "3  authentication failed", "6  timed out"):
        assert line in r.stdout


@pytest.mark.parametrize("args", [[], ["clusters"], ["clusters", "explode"], ["call", "svc"], ["jobs", "show"],
                                  ["call", "s", "f", "--timeout", "soon"]])
def test_usage_errors_exit_2(args):
    r = cli(*args)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_missing_secrets_exit_2():
    r = cli("call", "svc", "fn", "--endpoint", "http://127.0.0.1:9")
    assert r.returncode == 2 and "DIFFERENTIAL_API_SECRET" in r.stderr
    r = cli("clusters", "list", "--endpoint", "http://127.0.0.1:9")
    assert r.returncode == 2 and "DIFFERENTIAL_MANAGEMENT_SECRET" in r.stderr


def test_argument_that_is_not_json_exits_2_before_any_request():
    r = cli("call", "svc", "fn", "Ada", "--api-secret", "sk_x", "--endpoint", "http://127.0.0.1:9")
    assert r.returncode == 2 and "not JSON" in r.stderr and "'\"Ada\"'" in r.stderr


def test_unreachable_control_plane_exits_5():
    r = cli("jobs", "show", "x", "--api-secret", "sk_x", "--endpoint", "http://127.0.0.1:9")
    assert r.returncode == 5 and "cannot reach the control-plane" in r.stderr
    t0 = time.monotonic()
    r = cli("call", "svc", "fn", "1", "--api-secret", "sk_x", "--endpoint", "http://127.0.0.1:9")
    assert r.returncode == 5 and "cannot reach the control-plane" in r.stderr
    assert time.monotonic() - t0 < 20  # retried for a few seconds, then gave up


# -- against a live control-plane ----------------------------------------------------------------

@pytest.fixture
def mgmt_env(sdk_control_plane):
    return {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url,
            "DIFFERENTIAL_MANAGEMENT_SECRET": sdk_control_plane.management_secret}


@pytest.mark.postgres
def test_clusters_create_list_show(mgmt_env, sdk_control_plane, tmp_path):
    r = cli("clusters", "create", "--description", "cli cluster", env=mgmt_env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Created cluster cluster-") and lines[1].startswith("API secret: sk_")
    cluster_id = lines[0].split()[-1]

    r = cli("clusters", "create", "--json", env=mgmt_env)
    created = json.loads(r.stdout)
    assert r.returncode == 0 and set(created) >= {"id", "apiSecret", "createdAt"}

    r = cli("clusters", "list", env=mgmt_env)
    assert r.returncode == 0
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["ID", "CREATED", "DESCRIPTION", "API", "SECRET"]
    assert any(row.startswith(cluster_id) and "cli cluster" in row for row in rows)
    assert created["apiSecret"] not in r.stdout  # secrets are masked in the table...
    r = cli("clusters", "list", "--json", env=mgmt_env)
    assert created["apiSecret"] in {c["apiSecret"] for c in json.loads(r.stdout)}  # ...and complete in JSON

    r = cli("clusters", "show", cluster_id, env=mgmt_env)
    assert r.returncode == 0
    assert f"Cluster:     {cluster_id}" in r.stdout and "Description: cli cluster" in r.stdout
    assert "Services (0):" in r.stdout and "Recent jobs (0):" in r.stdout
    r = cli("clusters", "show", cluster_id, "--json", env=mgmt_env)
    assert json.loads(r.stdout)["id"] == cluster_id

    # The management secret from a file, and the flag before the command.
    secret_file = tmp_path / "management-secret"
    secret_file.write_text(sdk_control_plane.management_secret + "\n")
    r = cli("--management-secret-file", str(secret_file), "--endpoint", sdk_control_plane.url, "clusters", "list")
    assert r.returncode == 0 and cluster_id in r.stdout

    r = cli("clusters", "show", "cluster-does-not-exist", env=mgmt_env)
    assert r.returncode == 4 and "not found" in r.stderr
    r = cli("clusters", "list", env={**mgmt_env, "DIFFERENTIAL_MANAGEMENT_SECRET": "sk_management_wrong" + "x" * 30})
    assert r.returncode == 3 and "authentication failed" in r.stderr


class Declined(Exception):
    code = "E_DECLINED"


@pytest.mark.postgres
def test_call_jobs_and_services_against_a_running_service(sdk_control_plane, cluster, d, service_name, mgmt_env):
    svc = d.service(service_name)

    @svc.function
    def add(a: int, b: int) -> dict:
        return {"sum": a + b, "bytes": b"\x01", "list": [a, b]}

    @svc.function
    def decline(reason: str):
        raise Declined(f"declined: {reason}")

    @svc.function
    def nap(seconds: float) -> str:
        time.sleep(seconds)
        return "rested"

    svc.start()
    env = {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url, "DIFFERENTIAL_API_SECRET": cluster["apiSecret"]}
    try:
        r = cli("call", service_name, "add", "2", "40", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"sum": 42, "bytes": {"$bytes": "AQ=="}, "list": [2, 40]}

        r = cli("call", service_name, "add", "1", "1", "--json", env=env)
        out = json.loads(r.stdout)
        assert r.returncode == 0 and out["resultType"] == "resolution" and out["result"]["sum"] == 2
        job_id = out["jobId"]

        r = cli("call", service_name, "decline", '"too risky"', env=env)
        assert r.returncode == 1 and "Declined: declined: too risky (code E_DECLINED)" in r.stderr
        r = cli("call", service_name, "decline", '"x"', "--json", env=env)
        out = json.loads(r.stdout)
        assert r.returncode == 1 and out["error"]["name"] == "Declined" and out["error"]["code"] == "E_DECLINED"

        r = cli("call", service_name, "nap", "3", "--timeout", "1", env=env)
        assert r.returncode == 6 and "did not finish within" in r.stderr

        r = cli("call", service_name, "nap", "0.1", "--background", env=env)
        assert r.returncode == 0
        bg_id = r.stdout.strip()
        r = cli("jobs", "show", bg_id, "--wait", "10", env=env)
        assert r.returncode == 0
        assert "status:      success" in r.stdout and 'result:      "rested"' in r.stdout

        r = cli("jobs", "show", job_id, "--json", env=env)
        shown = json.loads(r.stdout)
        assert r.returncode == 0 and shown["status"] == "success" and shown["result"]["sum"] == 2
        assert shown["service"] == service_name

        r = cli("call", service_name, "add", "5", "5", "--execution-id", "cli-once", "--json", env=env)
        r2 = cli("call", service_name, "add", "5", "5", "--execution-id", "cli-once", "--json", env=env)
        assert json.loads(r.stdout)["jobId"] == json.loads(r2.stdout)["jobId"] == "cli-once"

        r = cli("jobs", "show", "no-such-job", env=env)
        assert r.returncode == 4
        r = cli("jobs", "show", job_id, env={**env, "DIFFERENTIAL_API_SECRET": "sk_wrong"})
        assert r.returncode == 3
        r = cli("call", "", "add", env=env)  # refused by the control-plane's validation
        assert r.returncode == 7, r.stderr

        r = cli("services", "list", "--cluster", cluster["id"], env=mgmt_env)
        assert r.returncode == 0
        assert r.stdout.splitlines()[0].split() == ["SERVICE", "FUNCTIONS"]
        assert f"{service_name}  add, decline, nap" in r.stdout
        r = cli("services", "list", "--cluster", cluster["id"], "--json", env=mgmt_env)
        defs = json.loads(r.stdout)
        fns = {f["name"] for s in defs if s["name"] == service_name for f in s["functions"]}
        assert fns == {"add", "decline", "nap"}
    finally:
        assert svc.stop(timeout=10)
