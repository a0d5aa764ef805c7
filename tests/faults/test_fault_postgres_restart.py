"""PostgreSQL restarted during load: the control-plane reconnects by itself (connection pool and
LISTEN), calls resume within seconds without restarting it, and long polls are woken by
notifications again (not by the fallback poll) soon after.
"""
from __future__ import annotations

import collections
import threading
import time

import httpx
import psycopg2
import pytest

from faultkit import Wire, b64, wait_until
from support import postgres
from support.server import ControlPlane

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(120)]

RESUME_BOUND = 15.0  # seconds from "PostgreSQL accepts connections again" to calls working
WAKE_BOUND = 1.5  # a long poll woken by NOTIFY; the fallback poll while listening is 5 s
CALLERS = 4
LISTENERS = 3  # control-plane A runs 2 gunicorn workers, B runs 1: one LISTEN connection each


def _listen_backends(database_url: str) -> int:
    """Sessions of this database whose last statement is the hub's LISTEN (it issues nothing else
    while notifications keep coming, and only a SELECT 1 after 10 idle seconds)."""
    dbname = database_url.rsplit("/", 1)[1]
    conn = psycopg2.connect(postgres.ensure_server(), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query = 'LISTEN differential'",
                        (dbname,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def _warm_listeners(wire: Wire, times: int = 12) -> None:
    """Start the lazily started listener in every worker: concurrent long polls reach each worker."""
    threads = [threading.Thread(target=wire.claim, args=(f"warm-{i}",), kwargs={"service": "warm", "ttl": 300})
               for i in range(times)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)


def _wake_latency(poller: Wire, creator: Wire, service: str) -> float:
    """Park a claim long poll on one control-plane, create a job on the other; seconds until claimed."""
    got: list = []
    t = threading.Thread(target=lambda: got.append((poller.claim("probe-machine", service=service, ttl=20000),
                                                    time.monotonic())), daemon=True)
    t.start()
    time.sleep(0.6)  # the poll is parked (its first claim found nothing)
    t0 = time.monotonic()
    job_id = creator.call(service=service)
    t.join(timeout=25)
    assert got, "the long poll did not return"
    jobs, t1 = got[0]
    assert [j["id"] for j in jobs] == [job_id], "the parked poll must get the new job"
    poller.result(job_id, "probe-machine", b64("ok"))
    return t1 - t0


@pytest.mark.parametrize("outage", [0.0, 3.0], ids=["restart", "down-3s"])
def test_postgres_restart_during_load(fresh_pg_url, outage):
    if not postgres.owns_server():
        pytest.skip("TEST_DATABASE_URL names an external server; this test restarts the one it started")
    a = ControlPlane(fresh_pg_url, env={"WEB_CONCURRENCY": "2", "SWEEP_INTERVAL_SECONDS": "0.5"})
    b = ControlPlane(fresh_pg_url, management_secret=a.management_secret, env={"WEB_CONCURRENCY": "1"})
    stop = threading.Event()
    log: list[tuple[float, str, object]] = []  # (time, kind, status code or exception name)
    log_lock = threading.Lock()
    threads: list[threading.Thread] = []
    wa = wb = None
    try:
        a.start()
        b.start()
        cluster = a.create_cluster()
        wa = Wire(a.url, cluster, a.management_secret)
        wb = Wire(b.url, cluster, b.management_secret)
        secret = {"Authorization": f"Basic {cluster['apiSecret']}"}

        # Before: every worker listens, and a cross-process wake is prompt.
        wait_until(lambda: (_warm_listeners(wa), _warm_listeners(wb), _listen_backends(fresh_pg_url))[2] == LISTENERS,
                   20, what=f"{LISTENERS} LISTEN connections")
        before = [_wake_latency(wb, wa, "probe"), _wake_latency(wa, wb, "probe")]
        assert max(before) < WAKE_BOUND, before

        def note(kind: str, outcome) -> None:
            with log_lock:
                log.append((time.monotonic(), kind, outcome))

        def caller(n: int) -> None:
            with httpx.Client(base_url=a.url, headers=secret, timeout=30) as http:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        r = http.post("/jobs", json={"service": "svc", "targetFn": "fn", "targetArgs": b64([n, i])})
                        note("create", r.status_code)
                        ok = r.status_code == 201
                    except httpx.HTTPError as exc:
                        note("create", type(exc).__name__)
                        ok = False
                    if not ok:
                        time.sleep(0.05)

        def worker() -> None:
            with httpx.Client(base_url=a.url, headers={**secret, "x-machine-id": "load-worker"}, timeout=30) as http:
                while not stop.is_set():
                    try:
                        r = http.post("/jobs-request", json={"service": "svc", "limit": 20, "ttl": 500})
                        note("claim", r.status_code)
                        if r.status_code != 200:
                            time.sleep(0.05)
                            continue
                        for job in r.json():
                            res = http.post(f"/jobs/{job['id']}/result",
                                            json={"result": job["targetArgs"], "resultType": "resolution"})
                            note("result", res.status_code)
                    except httpx.HTTPError as exc:
                        note("claim", type(exc).__name__)
                        time.sleep(0.05)

        threads = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(CALLERS)]
        threads.append(threading.Thread(target=worker, daemon=True))
        for t in threads:
            t.start()
        time.sleep(1.5)
        assert sum(1 for _, k, s in log if k == "create" and s == 201) > 10, "load is flowing"

        t_down = time.monotonic()
        if outage:  # down long enough for reconnect attempts to fail and back off
            postgres.stop_server()
            time.sleep(outage)
            postgres.start_server()
        else:
            postgres.restart_server()  # fast shutdown: every connection breaks; then start again
        t_up = time.monotonic()

        # Calls resume: a create answered 201 after PostgreSQL is back, without touching the control-plane.
        first_ok = wait_until(lambda: next((t for t, k, s in list(log) if t > t_up and k == "create" and s == 201),
                                           None), RESUME_BOUND + 5, interval=0.05, what="a call to succeed again")
        resumed_after = first_ok - t_up
        assert resumed_after < RESUME_BOUND, f"calls resumed {resumed_after:.1f}s after PostgreSQL came back"

        # LISTEN came back in every worker (each holds one LISTEN session again).
        wait_until(lambda: _listen_backends(fresh_pg_url) == LISTENERS, 8, interval=0.2,
                   what=f"{LISTENERS} LISTEN connections after the restart")
        listen_back = time.monotonic() - t_up

        # 5 s after the restart, long polls are woken by notifications across processes again.
        time.sleep(max(0.0, t_up + 5 - time.monotonic()))
        after = [_wake_latency(wb, wa, "probe"), _wake_latency(wa, wb, "probe"), _wake_latency(wb, wa, "probe")]
        assert max(after) < WAKE_BOUND, f"cross-process wakes after the restart took {after}s"
        assert _listen_backends(fresh_pg_url) == LISTENERS

        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=35)

        # Outcomes: during the outage only 503 (database unavailable) or a clean error; never a 500;
        # once calls resumed, every request succeeded (no dead pooled connection left behind).
        statuses = collections.Counter((k, s) for _, k, s in log)
        assert not [e for e in log if e[2] == 500], f"500s: {statuses}"
        settled = first_ok + 1.0
        late_errors = [(round(t - t_up, 2), k, s) for t, k, s in log
                       if t > settled and s not in (200, 201, 204)]
        assert not late_errors, f"errors after calls had resumed: {late_errors[:10]}"
        outage = [(round(t - t_down, 2), k, s) for t, k, s in log if t_down <= t <= settled and s not in (200, 201, 204)]
        assert all(s == 503 or isinstance(s, str) for _, _, s in outage), outage[:10]

        # Nothing accepted was lost: the worker drains every created job to success.
        conn = psycopg2.connect(fresh_pg_url, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT status, count(*) FROM jobs WHERE service = 'svc' GROUP BY status")
                by_status = dict(cur.fetchall())
        finally:
            conn.close()
        accepted = statuses[("create", 201)]
        assert by_status.get("success", 0) + by_status.get("pending", 0) + by_status.get("running", 0) == accepted
        print(f"\nPostgreSQL down for {t_up - t_down:.2f}s; calls resumed {resumed_after:.2f}s after it was back; "
              f"LISTEN back in all {LISTENERS} workers within {listen_back:.2f}s; wakes before {before}, after {after}; "
              f"{dict(statuses)}")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for w in (wa, wb):
            if w is not None:
                w.close()
        for cp in (a, b):
            cp.kill()
        postgres.start_server()  # whatever happened, leave the server up for the next tests
