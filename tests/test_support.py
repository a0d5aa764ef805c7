"""Tests of the test support code itself: PostgreSQL server, Node SDK, control-plane harness."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import psutil
import psycopg2
import pytest

from support import postgres
from support.node import SDK_VERSION, run_node
from support.server import REPO_ROOT, ControlPlane

needs_own_server = pytest.mark.skipif(
    bool(os.environ.get(postgres.ENV_URL)) and not postgres.owns_server(),
    reason="TEST_DATABASE_URL names an external server: it is not ours to stop or restart",
)


def _query(url: str, sql: str):
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


# -- PostgreSQL -----------------------------------------------------------------------------


def test_server_is_postgresql_15_with_test_settings(pg_admin_url):
    assert pg_admin_url.startswith("postgresql://")
    assert _query(pg_admin_url, "SHOW server_version")[0][0].startswith("15.")
    if postgres.owns_server():
        settings = dict(_query(pg_admin_url, "SELECT name, setting FROM pg_settings WHERE name IN "
                                             "('max_connections','fsync','listen_addresses')"))
        assert settings == {"max_connections": "300", "fsync": "off", "listen_addresses": "127.0.0.1"}


def test_dsn_is_exported_for_child_processes(pg_admin_url):
    assert os.environ[postgres.ENV_URL] == pg_admin_url
    code = "from support import postgres; print(postgres.ensure_server()); print(postgres.owns_server())"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT / "tests", capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [pg_admin_url, "False"]  # reused, not a second cluster


@pytest.mark.skipif(os.geteuid() != 0, reason="only as root must the server drop to another user")
def test_as_root_the_server_runs_as_an_ordinary_user(pg_admin_url):
    pid = postgres.server_pid()
    if pid is None:
        pytest.skip("server not started by this process")
    assert psutil.Process(pid).uids().real != 0


def test_create_database_gives_distinct_usable_databases(make_pg_database):
    a, b = make_pg_database("a"), make_pg_database("b")
    assert a != b
    _query(a, "CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (7); SELECT 1")
    assert _query(a, "SELECT x FROM only_in_a") == [(7,)]
    assert _query(b, "SELECT to_regclass('only_in_a') IS NULL") == [(True,)]
    assert _query(a, "SELECT current_database()")[0][0] == a.rsplit("/", 1)[1]


def test_drop_database_removes_it(pg_admin_url):
    url = postgres.create_database("dropme")
    name = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(url)  # an open session must not block the drop
    try:
        postgres.drop_database(url)
    finally:
        conn.close()
    assert _query(pg_admin_url, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == [(0,)]


def test_fresh_pg_url_is_empty(fresh_pg_url):
    assert _query(fresh_pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


@needs_own_server
def test_restart_breaks_old_connections_and_accepts_new_ones(fresh_pg_url):
    before = psycopg2.connect(fresh_pg_url)
    try:
        with before.cursor() as cur:
            cur.execute("CREATE TABLE survives (x int); INSERT INTO survives VALUES (1)")
        before.commit()
        old_pid = postgres.server_pid()
        postgres.restart_server()
        assert postgres.server_pid() != old_pid
        with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
            with before.cursor() as cur:
                cur.execute("SELECT 1")
    finally:
        before.close()
    assert _query(fresh_pg_url, "SELECT x FROM survives") == [(1,)]  # same data dir


@needs_own_server
def test_stop_then_start_keeps_port_and_data(fresh_pg_url):
    postgres.stop_server()
    try:
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(fresh_pg_url, connect_timeout=2)
    finally:
        postgres.start_server()
    assert _query(fresh_pg_url, "SELECT 1") == [(1,)]


# -- Node SDK -------------------------------------------------------------------------------


def test_node_sdk_is_the_pinned_version(node_sdk):
    r = run_node(
        'import { createRequire } from "node:module";\n'
        'const require = createRequire(import.meta.url);\n'
        'const { Differential } = require("@differentialhq/core");\n'
        'console.log(typeof Differential, require("@differentialhq/core/package.json").version);'
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["function", SDK_VERSION]


def test_node_sdk_pack_matches_python_msgpack(node_sdk):
    r = run_node(
        'import { pack, unpack } from "@differentialhq/core/bin/serialize.js";\n'
        'console.log(pack(["Ada", 3]));\n'
        'console.log(JSON.stringify(unpack(process.argv[2])));',
        args=[base64.b64encode(msgpack.packb({"name": "Ada", "n": [1, 2.5, None]})).decode()],
    )
    assert r.returncode == 0, r.stderr
    packed, unpacked = r.stdout.splitlines()
    assert packed == "kqNBZGED"
    assert msgpack.unpackb(base64.b64decode(packed)) == ["Ada", 3]
    assert unpacked == '{"name":"Ada","n":[1,2.5,null]}'


# -- Control-plane harness ------------------------------------------------------------------

_app_missing = not (REPO_ROOT / "app" / "wsgi.py").exists() or not (REPO_ROOT / "gunicorn.conf.py").exists()


@pytest.mark.skipif(_app_missing, reason="app/wsgi.py or gunicorn.conf.py not written yet")
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_control_plane_starts_creates_a_cluster_and_stops(backend, request):
    url = request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None
    with ControlPlane(database_url=url) as cp:
        assert cp.pid and psutil.pid_exists(cp.pid)
        cluster = cp.create_cluster(description="from test_support")
        assert {"id", "apiSecret", "createdAt", "description"} <= set(cluster)
        assert cluster["description"] == "from test_support"
        assert cp.stop() is not None
    assert not Path(cp.workdir).exists()
