"""The PostgreSQL connection pool (app/db.py): no lock held across a round trip, waiters served in
turn per key, a busy pool answered as "database unavailable", dead idle connections replaced."""
from __future__ import annotations

import threading
import time

import psycopg2
import pytest
from playhouse.pool import MaxConnectionsExceeded

from app import db


@pytest.fixture
def backend():
    return "postgres"  # SQLite has no pool


@pytest.fixture
def pool(make_app):
    make_app(database_pool_size=2)
    return db.database.obj


def _hold(key, entered: threading.Event, leave: threading.Event, order: list, name: str):
    def run():
        db.turn_key.set(key)
        with db.connection():
            order.append(name)
            entered.set()
            leave.wait(10)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _waiting(count: int) -> None:
    deadline = time.monotonic() + 5
    while db._gate.waiting < count:
        assert time.monotonic() < deadline, f"{db._gate.waiting} waiting, expected {count}"
        time.sleep(0.005)


def test_a_key_with_many_waiters_delays_another_keys_waiter_by_one_turn(pool):
    order: list[str] = []
    leave = threading.Event()
    holders = [_hold("a", threading.Event(), leave, order, f"a-held-{i}") for i in range(2)]
    _waiting(0)
    while len(order) < 2:
        time.sleep(0.005)
    steps = [threading.Event() for _ in range(11)]
    waiters = []
    for i in range(10):  # ten of A's wait, in that order, then one of B's
        waiters.append(_hold("a", threading.Event(), steps[i], order, f"a-{i}"))
        _waiting(i + 1)
    waiters.append(_hold("b", threading.Event(), steps[10], order, "b"))
    _waiting(11)
    leave.set()  # both connections come free: the lines take turns, A's first (it waited first), then B's
    deadline = time.monotonic() + 5
    while len(order) < 4:  # the two granted hold their connections until their step is set
        assert time.monotonic() < deadline, order
        time.sleep(0.005)
    assert sorted(order[:2]) == ["a-held-0", "a-held-1"]
    assert sorted(order[2:4]) == ["a-0", "b"], order  # B waited behind one of A's ten, not all of them
    for step in steps:
        step.set()
    for thread in holders + waiters:
        thread.join(10)
    assert len(order) == 13


def _two_idle_connections() -> None:
    order, leave = [], threading.Event()
    holders = [_hold(None, threading.Event(), leave, order, str(i)) for i in range(2)]
    while len(order) < 2:
        time.sleep(0.005)
    leave.set()
    for thread in holders:
        thread.join(5)


def test_a_check_out_and_check_in_do_not_wait_for_another_threads_round_trip(pool, monkeypatch):
    _two_idle_connections()
    monkeypatch.setattr(db, "_IDLE_CHECK_SECONDS", 0.0)  # every idle connection is asked now
    asking, answer = threading.Event(), threading.Event()
    real = type(pool)._is_closed

    def slow_check(self, conn):  # a round trip that lasts as long as the test wants
        asking.set()
        answer.wait(10)
        return real(self, conn)

    monkeypatch.setattr(type(pool), "_is_closed", slow_check)
    checking = threading.Thread(target=lambda: db.unit_of_work(lambda: db.execute("SELECT 1").fetchall(),
                                                               transaction=False), daemon=True)
    checking.start()
    try:
        assert asking.wait(5)
        monkeypatch.setattr(type(pool), "_is_closed", real)  # the next check is a real one
        started = time.monotonic()
        assert db.unit_of_work(lambda: db.execute("SELECT 2").fetchall(), transaction=False) == [(2,)]
        assert time.monotonic() - started < 2, "a check-out or check-in waited for the other thread's round trip"
    finally:
        answer.set()
        checking.join(5)


def test_a_connection_given_back_a_moment_ago_is_not_asked_first_and_an_idle_one_is(pool, monkeypatch):
    asked = []
    real = type(pool)._is_closed
    monkeypatch.setattr(type(pool), "_is_closed", lambda self, conn: asked.append(1) or real(self, conn))
    db.unit_of_work(lambda: db.execute("SELECT 1").fetchall(), transaction=False)
    db.unit_of_work(lambda: db.execute("SELECT 1").fetchall(), transaction=False)
    assert asked == []
    monkeypatch.setattr(db, "_IDLE_CHECK_SECONDS", 0.0)
    db.unit_of_work(lambda: db.execute("SELECT 1").fetchall(), transaction=False)
    assert asked == [1]


def test_an_idle_connection_the_server_ended_is_replaced_at_check_out(pool, monkeypatch):
    pid = db.unit_of_work(lambda: db.execute("SELECT pg_backend_pid()").fetchone()[0], transaction=False)
    other = psycopg2.connect(dbname=pool.database, **pool.connect_params)  # not the pool's: ends its backend
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        other.close()
    time.sleep(0.2)  # the backend is gone
    monkeypatch.setattr(db, "_IDLE_CHECK_SECONDS", 0.0)
    fresh = db.unit_of_work(lambda: db.execute("SELECT pg_backend_pid()").fetchone()[0], transaction=False)
    assert fresh != pid


def test_a_pool_busy_past_the_wait_is_unavailable_not_a_crash(pool, monkeypatch):
    monkeypatch.setattr(db, "_GATE_TIMEOUT_SECONDS", 0.2)
    leave, order = threading.Event(), []
    holders = [_hold("a", threading.Event(), leave, order, str(i)) for i in range(2)]
    while len(order) < 2:
        time.sleep(0.005)
    try:
        with pytest.raises(MaxConnectionsExceeded) as raised:
            db.unit_of_work(lambda: db.execute("SELECT 1").fetchall(), transaction=False)
        assert db.is_unavailable(raised.value)
        assert db._gate.waiting == 0  # the one that gave up left the line
    finally:
        leave.set()
        for thread in holders:
            thread.join(5)
    assert db.unit_of_work(lambda: db.execute("SELECT 3").fetchall(), transaction=False) == [(3,)]
