"""The PostgreSQL connection pool's check-out (app/db.py `_Pool._is_closed`): a live idle
connection is handed out without a round trip, a dead one is replaced before anyone uses it."""
from __future__ import annotations

import time

import psycopg2
import pytest

from app import db

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend():
    return "postgres"


def _backend_pid() -> int:
    return db.unit_of_work(lambda: db.execute("SELECT pg_backend_pid()").fetchone()[0], transaction=False)


def _last_query(admin_url: str, pid: int) -> str:
    conn = psycopg2.connect(admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_a_live_idle_connection_is_reused_without_asking_the_server(app, fresh_pg_url):
    pid = _backend_pid()
    with db.connection():  # checked out and back, nothing run on it
        pass
    assert _backend_pid() == pid  # the pooled connection came back
    with db.connection():
        pass
    assert _last_query(fresh_pg_url, pid) == "SELECT pg_backend_pid()", "check-out sent a query of its own"


def test_a_connection_the_server_ended_while_idle_is_replaced_at_check_out(app, fresh_pg_url):
    pid = _backend_pid()
    admin = psycopg2.connect(fresh_pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()
    time.sleep(0.2)  # the FATAL and the close reach our socket
    # An autocommit statement that is not idempotent is never retried (db.unit_of_work): it runs
    # only if check-out found the dead connection first.
    assert _backend_pid() != pid
