"""`differential clusters rotate-secret|delete` and `differential services schema put|show`, run as
real subprocesses against a live control-plane: output, exit codes, and what the server then does."""
from __future__ import annotations

import json

import httpx
import pytest

from test_sdk_cli import cli

pytestmark = pytest.mark.postgres


@pytest.fixture
def env(sdk_control_plane):
    return {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url,
            "DIFFERENTIAL_MANAGEMENT_SECRET": sdk_control_plane.management_secret}


def authenticates(cp, secret: str) -> bool:
    r = httpx.get(cp.url + "/jobs/none?ttl=0", headers={"Authorization": f"Basic {secret}"}, timeout=10)
    assert r.status_code in (401, 404), r.text
    return r.status_code == 404


def test_rotate_secret_prints_the_new_secret_once_and_honours_the_grace(sdk_control_plane, cluster, env):
    cp = sdk_control_plane
    r = cli("clusters", "rotate-secret", cluster["id"], "--grace", "10m", env=env)
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("New API secret: ")]
    new = line.split(": ", 1)[1]
    assert r.stdout.count(new) == 1 and cluster["apiSecret"] not in r.stdout
    assert "keeps working until" in r.stdout
    assert authenticates(cp, cluster["apiSecret"]) and authenticates(cp, new)
    r = cli("clusters", "rotate-secret", cluster["id"], "--grace", "0", "--json", env=env)
    assert r.returncode == 0, r.stderr
    newest = json.loads(r.stdout)
    assert newest["graceSeconds"] == 0
    assert not authenticates(cp, new) and not authenticates(cp, cluster["apiSecret"])
    assert authenticates(cp, newest["apiSecret"])


@pytest.mark.parametrize("grace", ["soon", "-5", "1.5s"])
def test_rotate_secret_refuses_a_bad_grace_as_a_usage_error(grace, env):
    r = cli("clusters", "rotate-secret", "cluster-x", "--grace", grace, env=env)
    assert r.returncode == 2 and "--grace" in r.stderr


def test_a_grace_over_the_maximum_is_refused_by_the_server(cluster, env):
    r = cli("clusters", "rotate-secret", cluster["id"], "--grace", "8d", env=env)
    assert r.returncode == 7 and "graceSeconds" in r.stderr


def test_delete_asks_for_confirmation_unless_yes(sdk_control_plane, cluster, env):
    cp = sdk_control_plane
    r = cli("clusters", "delete", cluster["id"], env=env)  # stdin is not a terminal: no silent deletion
    assert r.returncode == 2 and "--yes" in r.stderr
    assert authenticates(cp, cluster["apiSecret"])
    r = cli("clusters", "delete", cluster["id"], "--yes", env=env)
    assert r.returncode == 0 and f"Deleted cluster {cluster['id']}" in r.stdout, r.stderr
    assert not authenticates(cp, cluster["apiSecret"])
    r = cli("clusters", "delete", cluster["id"], "--yes", env=env)
    assert r.returncode == 4


def test_services_schema_put_and_show(cluster, env, tmp_path):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    r = cli("services", "schema", "put", "--cluster", cluster["id"], "billing", json.dumps(schema), env=env)
    assert r.returncode == 0 and "billing" in r.stdout, r.stderr
    r = cli("services", "schema", "show", "--cluster", cluster["id"], "billing", env=env)
    assert r.returncode == 0 and json.loads(r.stdout) == schema
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "string"}))
    assert cli("services", "schema", "put", "--cluster", cluster["id"], "billing", "--file", str(path),
               env=env).returncode == 0
    r = cli("services", "schema", "show", "--cluster", cluster["id"], "billing", "--json", env=env)
    assert json.loads(r.stdout) == {"service": "billing", "schema": {"type": "string"}}
    r = cli("services", "schema", "put", "--cluster", cluster["id"], "billing", "{nope", env=env)
    assert r.returncode == 7 and "schema" in r.stderr
    r = cli("services", "schema", "put", "--cluster", cluster["id"], "billing", env=env)
    assert r.returncode == 2
    r = cli("services", "schema", "show", "--cluster", cluster["id"], "nobody", env=env)
    assert r.returncode == 4
