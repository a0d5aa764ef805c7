"""Schedules across two control-plane replicas on one PostgreSQL: every tick fires exactly once
although the maintenance leader is SIGKILLed in the middle of firing (the other takes over and
goes on where it stopped: no tick lost, none doubled), and after a restart the ticks missed
meanwhile are caught up as each schedule's policy says.

Ticks are minutes, so the test makes its backlog by moving schedules' next tick back in time
(what a control-plane finds after the same downtime), rather than waiting for minutes to pass.
"""
from __future__ import annotations

import datetime as dt
import time

import httpx
import psycopg2
import pytest

from faultkit import holder_pid, lease_row, wait_until
from support.server import ControlPlane

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(180)]

ENV = {"WEB_CONCURRENCY": "1", "SWEEP_INTERVAL_SECONDS": "0.3"}
MINUTE = 60_000
SCHEDULES = 10
BACKLOG = 250  # missed ticks each: three maintenance runs of at most 100 per schedule


def tick_id(name: str, ms: int) -> str:
    """The executionId of a tick's call (engine/schedules.py: execution_id)."""
    at = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return f"schedule:{name}:{at.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def sql(url: str, query: str, params=()) -> list[tuple]:
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def db_now_ms(url: str) -> int:
    return sql(url, "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint")[0][0]


def job_ids(url: str, cluster_id: str) -> list[str]:
    return [r[0] for r in sql(url, "SELECT id FROM jobs WHERE cluster_id = %s", (cluster_id,))]


def create(http: httpx.Client, cluster_id: str, name: str, catch_up: str) -> None:
    r = http.post(f"/clusters/{cluster_id}/schedules",
                  json={"name": name, "service": "svc", "function": "fn", "arguments": [name],
                        "cron": "* * * * *", "catchUp": catch_up})
    assert r.status_code == 201, r.text


def move_back(url: str, cluster_id: str, names: list[str], due_ms: int) -> None:
    sql(url, "UPDATE schedules SET next_fire_ms = %s WHERE cluster_id = %s AND name = ANY(%s)",
        (due_ms, cluster_id, names))


def test_each_tick_fires_once_across_replicas_and_a_killed_leader(fresh_pg_url):
    a = ControlPlane(fresh_pg_url, env=ENV)
    b = ControlPlane(fresh_pg_url, management_secret=a.management_secret, env=ENV)
    http = None
    try:
        a.start()
        b.start()
        holder = wait_until(lambda: (row := lease_row(fresh_pg_url)) and row[0], 10, what="a maintenance leader")
        leader, survivor = (a, b) if holder_pid(holder) in _pids(a) else (b, a)
        cluster = survivor.create_cluster()
        http = httpx.Client(base_url=survivor.url, headers=survivor.management_headers, timeout=30)
        names = [f"s{i:02d}" for i in range(SCHEDULES)]
        for name in names:
            create(http, cluster["id"], name, "all")

        first = (db_now_ms(fresh_pg_url) // MINUTE - BACKLOG) * MINUTE
        move_back(fresh_pg_url, cluster["id"], names, first)
        total = SCHEDULES * (BACKLOG + 1)  # the backlog and the tick of the current minute
        # Kill the leader while it is firing: some calls made, not all.
        made_at_kill = wait_until(lambda: len(job_ids(fresh_pg_url, cluster["id"])), 30, interval=0.01,
                                  what="the leader to start firing")
        leader.kill()
        assert made_at_kill < total, "the leader finished before it was killed; make BACKLOG bigger"

        new_holder = wait_until(lambda: (row := lease_row(fresh_pg_url)) and row[0] != holder and row[0], 15,
                                what="the survivor to take the maintenance lease")
        assert holder_pid(new_holder) in _pids(survivor)

        def caught_up():
            rows = sql(fresh_pg_url, "SELECT name, next_fire_ms, last_fired_ms FROM schedules WHERE cluster_id = %s",
                       (cluster["id"],))
            now = db_now_ms(fresh_pg_url)
            return rows if all(nxt > now for _, nxt, _ in rows) else None

        rows = wait_until(caught_up, 90, interval=0.2, what="the survivor to fire every missed tick")
        ids = job_ids(fresh_pg_url, cluster["id"])
        assert len(ids) == len(set(ids))
        expected = set()
        for name, next_ms, last_ms in rows:
            assert next_ms == last_ms + MINUTE
            expected.update(tick_id(name, t) for t in range(first, last_ms + 1, MINUTE))
        assert set(ids) == expected, (f"lost: {sorted(expected - set(ids))[:5]}, "
                                      f"extra: {sorted(set(ids) - expected)[:5]}")
        assert len(ids) >= total
        print(f"\n{len(ids)} ticks fired once each; {made_at_kill} of them before the leader was killed")
    finally:
        if http is not None:
            http.close()
        for cp in (a, b):
            cp.kill()


def test_catch_up_after_a_restart_follows_each_policy(fresh_pg_url):
    cp = ControlPlane(fresh_pg_url, env=ENV)
    http = None
    try:
        cp.start()
        cluster = cp.create_cluster()
        http = httpx.Client(base_url=cp.url, headers=cp.management_headers, timeout=30)
        for policy in ("latest", "none", "all"):
            create(http, cluster["id"], policy, policy)
        cp.kill()

        # Down for half an hour (as the schedules see it: their next tick is 30 minutes back).
        now = db_now_ms(fresh_pg_url)
        if now % MINUTE > MINUTE - 25_000:  # so that the restart lands in the same minute
            time.sleep((MINUTE - now % MINUTE) / 1000 + 0.5)  # ms to s
            now = db_now_ms(fresh_pg_url)
        first = (now // MINUTE - 30) * MINUTE
        move_back(fresh_pg_url, cluster["id"], ["latest", "none", "all"], first)
        cp.start()

        def fired():
            rows = sql(fresh_pg_url, "SELECT name, next_fire_ms FROM schedules WHERE cluster_id = %s",
                       (cluster["id"],))
            return rows if all(nxt > db_now_ms(fresh_pg_url) for _, nxt in rows) else None

        wait_until(fired, 30, interval=0.2, what="the restarted control-plane to catch up")
        current = (db_now_ms(fresh_pg_url) // MINUTE) * MINUTE
        ids = set(job_ids(fresh_pg_url, cluster["id"]))
        by_policy = {p: sorted(i for i in ids if i.startswith(f"schedule:{p}:")) for p in ("latest", "none", "all")}
        # latest: only the newest tick; none: only a tick that was on time (this minute's), not
        # one of the missed ones; all: every tick from the first missed one on.
        assert by_policy["latest"] == [tick_id("latest", current)]
        assert by_policy["none"] == [tick_id("none", current)]
        assert by_policy["all"] == sorted(tick_id("all", t) for t in range(first, current + 1, MINUTE))
        assert len(by_policy["all"]) == 31
    finally:
        if http is not None:
            http.close()
        cp.kill()


def _pids(cp: ControlPlane) -> set[int]:
    import psutil

    master = psutil.Process(cp.pid)
    return {cp.pid, *(p.pid for p in master.children(recursive=True))}
