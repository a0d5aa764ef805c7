"""The LISTEN/NOTIFY hub on a real PostgreSQL, including in a process with many open sockets."""
from __future__ import annotations

import os
import resource
import time
from contextlib import closing
from urllib.parse import urlparse

import psycopg2
import pytest

from app.engine.signals import CHANNEL, Hub


def params(url: str) -> dict:
    u = urlparse(url)
    return {"dbname": u.path.lstrip("/"), "user": u.username, "password": u.password, "host": u.hostname,
            "port": u.port}


def test_notifications_wake_waiters_even_when_the_listener_socket_is_numbered_above_1023(fresh_pg_url):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit of open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # as a busy server has sockets
    hub = Hub()
    try:
        hub.configure(params(fresh_pg_url))
        with hub.subscribe(["q/c1/svc"]) as sub:
            deadline = time.monotonic() + 10
            while not hub.listening and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hub.listening, "the listener never connected"
            sub.wait(0)  # the listener wakes everyone once on connecting; consume that
            with psycopg2.connect(fresh_pg_url) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "q/c1/svc\nq/c1/other"))
            started = time.monotonic()
            assert sub.wait(5) == {"q/c1/svc"}
            assert time.monotonic() - started < 2
            time.sleep(1.2)  # a few listener loop turns: it must still be connected, not reconnecting
            assert hub.listening
    finally:
        hub.stop()
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_listener_skips_notifications_from_this_process_and_delivers_the_others(fresh_pg_url, monkeypatch):
    """Our writers wake this process's waiters themselves; the echo of their NOTIFY is skipped."""
    from app import db

    hub = Hub()
    try:
        hub.configure(params(fresh_pg_url))
        # closing(), not `with connection`: that would hold each NOTIFY in an uncommitted transaction
        with hub.subscribe(["q/c1/own", "q/c1/other"]) as sub, \
                closing(psycopg2.connect(fresh_pg_url)) as ours, closing(psycopg2.connect(fresh_pg_url)) as theirs:
            ours.autocommit = theirs.autocommit = True
            deadline = time.monotonic() + 10
            while True:  # once one arrives, the listener listens and its wake-up on connecting is behind us
                with theirs.cursor() as cur:
                    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "q/c1/other"))
                if sub.wait(0.2) == {"q/c1/other"}:
                    break
                assert time.monotonic() < deadline, "the listener never delivered a notification"
            while sub.wait(0.2) is not None:  # drain what the loop sent meanwhile
                pass
            monkeypatch.setattr(db, "_own_pids", frozenset({ours.get_backend_pid()}))
            with ours.cursor() as cur:
                cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "q/c1/own"))
            with theirs.cursor() as cur:  # delivered after ours: when it is here, ours was skipped
                cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "q/c1/other"))
            assert sub.wait(5) == {"q/c1/other"}
    finally:
        hub.stop()


@pytest.mark.parametrize("backend", ["postgres"])
def test_pooled_connections_are_known_as_our_own_backends_until_closed(app):
    from app import db

    def backend_pid():
        return db.execute("SELECT pg_backend_pid()").fetchone()[0]

    pid = db.unit_of_work(backend_pid, transaction=False)
    assert db.is_own_backend(pid)
    db.database.obj.close_all()
    assert not db.is_own_backend(pid)


@pytest.mark.parametrize("backend", ["postgres"])
def test_batched_writes_notify_the_topics_the_waiters_subscribe_to(app, fresh_pg_url):
    """The NOTIFY payloads built in SQL must equal queue_topic/job_topic, or other processes never wake."""
    import datetime as dt

    from app import db
    from app.engine import statements
    from app.engine.signals import job_topic, queue_topic

    with closing(psycopg2.connect(fresh_pg_url)) as listener:
        listener.autocommit = True
        with listener.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        now = dt.datetime.utcnow()
        new = statements.NewJob(cluster_id="c1", job_id="j1", service="svc", target_fn="f", target_args="kQ==",
                                cache_key=None, attempts_allowed=1, timeout_seconds=60, created_at=now,
                                deployment_id=None, predictive_retries=False)
        assert db.unit_of_work(lambda: statements.insert_jobs([new]), transaction=False) == [True]
        db.unit_of_work(lambda: db.execute("UPDATE jobs SET status = 'running', machine_id = 'm1'"),
                        transaction=False)
        stored = db.unit_of_work(lambda: statements.store_results([statements.Result(
            cluster_id="c1", job_id="j1", machine_id="m1", result="kQ==", result_type="resolution",
            execution_time_ms=None, resulted_at=now)]), transaction=False)
        assert stored == [True]
        payloads, deadline = [], time.monotonic() + 5
        while len(payloads) < 2 and time.monotonic() < deadline:
            listener.poll()
            payloads += [n.payload for n in listener.notifies]
            listener.notifies.clear()
            time.sleep(0.05)
        assert payloads == [queue_topic("c1", "svc"), job_topic("c1", "j1")]


def test_topics_are_parsed_in_one_place():
    from app.engine.signals import job_ids_of, job_of, job_topic, queue_topic

    topics = [job_topic("c1", "a"), job_topic("c1", "with/slash"), queue_topic("c1", "svc")]
    assert job_ids_of(topics) == {"a", "with/slash"}
    assert job_of(job_topic("c1", "with/slash")) == ("c1", "with/slash")
    assert job_of(queue_topic("c1", "svc")) is None
