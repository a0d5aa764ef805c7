"""The control-plane stopped with SIGTERM during load: in-flight requests finish with a response
(never a reset), new ones are refused cleanly, and no accepted call is lost after it restarts.
"""
from __future__ import annotations

import collections
import dataclasses
import signal
import threading
import time

import httpx
import psycopg2
import pytest

from faultkit import Wire, b64, wait_until
from support import postgres
from support.server import ControlPlane

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(120)]

CALLERS = 6
WORKERS = 2
IDLE_POLLS = 4  # worker long polls on a queue that stays empty: in flight at the SIGTERM
PARKED_POLLS = 2  # caller long polls on a job nobody works on before the restart


class Outcomes:
    """Every request's fate, by kind: a response (status), a clean refusal, or a broken exchange."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.broken: list[str] = []
        self.server_errors: list[str] = []
        self.t0 = time.monotonic()  # reset to the moment of the SIGTERM

    def run(self, what: str, send):
        """send() -> httpx.Response; returns the response, or None when it was not answered."""
        try:
            r = send()
        except httpx.ConnectError:  # nobody listening: refused before anything was sent
            with self.lock:
                self.counts[f"{what}:refused"] += 1
            return None
        except httpx.HTTPError as exc:  # sent, then reset/closed/timed out without an answer
            with self.lock:
                self.counts[f"{what}:broken"] += 1
                self.broken.append(f"{what} at {time.monotonic() - self.t0:+.2f}s: {exc!r}")
            return None
        with self.lock:
            self.counts[f"{what}:{r.status_code}"] += 1
            if r.status_code >= 500:
                self.server_errors.append(f"{what} {r.status_code}: {r.text[:300]}")
        return r


def _client(url: str, headers: dict) -> httpx.Client:
    # No keep-alive: a request either connects (and is then in flight) or is refused; a reused idle
    # connection that the server closes in the same instant would blur that line.
    return httpx.Client(base_url=url, headers=headers, timeout=40.0,
                        limits=httpx.Limits(max_keepalive_connections=0))


@dataclasses.dataclass
class Run:
    out: Outcomes
    accepted: list[str]
    done: dict[str, dict]
    claims: collections.Counter
    long_polls: list
    stop_seconds: float
    exit_code: int
    rows_in_db: int
    created_before: int


@pytest.fixture(scope="module")
def sigterm_run(pg_admin_url) -> Run:
    """One load run with a SIGTERM and a restart in the middle; the tests below judge its outcome."""
    database_url = postgres.create_database("sigterm")
    try:
        yield _sigterm_under_load(database_url)
    finally:
        postgres.drop_database(database_url)


def _sigterm_under_load(database_url: str) -> Run:
    cp = ControlPlane(database_url, env={"WEB_CONCURRENCY": "2"})
    cp.start()
    cluster = cp.create_cluster()
    secret = {"Authorization": f"Basic {cluster['apiSecret']}"}
    out = Outcomes()
    accepted: list[str] = []
    claims: collections.Counter = collections.Counter()
    stop_callers = threading.Event()
    stop_workers = threading.Event()
    threads: list[threading.Thread] = []

    def caller(n: int):
        with _client(cp.url, secret) as http:
            i = 0
            while not stop_callers.is_set():
                i += 1
                body = {"service": "svc", "targetFn": "fn", "targetArgs": b64([n, i])}
                r = out.run("create", lambda body=body: http.post("/jobs", json=body))
                if r is not None and r.status_code == 201:
                    with out.lock:
                        accepted.append(r.json()["id"])
                elif r is None:
                    time.sleep(0.05)

    def worker(n: int):
        machine = f"worker-{n}"
        with _client(cp.url, {**secret, "x-machine-id": machine}) as http:
            while not stop_workers.is_set():
                r = out.run("claim", lambda: http.post("/jobs-request", json={"service": "svc", "limit": 10,
                                                                              "ttl": 1000}))
                if r is None or r.status_code != 200:
                    time.sleep(0.05)
                    continue
                for job in r.json():
                    with out.lock:
                        claims[job["id"]] += 1
                    # A result must get through: retry while the server is away (refused).
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        res = out.run("result", lambda job=job: http.post(
                            f"/jobs/{job['id']}/result", json={"result": job["targetArgs"], "resultType": "resolution"}))
                        if res is not None and res.status_code == 204:
                            break
                        time.sleep(0.05)

    long_polls: list[tuple[str, float, object]] = []  # (kind, seconds after SIGTERM, status or error)
    t_term = [0.0]

    def long_poll(kind: str, send):
        r = out.run(kind, send)
        with out.lock:
            long_polls.append((kind, time.monotonic() - t_term[0], None if r is None else r.status_code))

    try:
        wire = Wire(cp.url, cluster, cp.management_secret)
        parked = wire.call(service="parked")
        wire.close()

        for n in range(CALLERS):
            threads.append(threading.Thread(target=caller, args=(n,), daemon=True))
        for n in range(WORKERS):
            threads.append(threading.Thread(target=worker, args=(n,), daemon=True))
        for t in threads:
            t.start()
        time.sleep(2.0)  # load is flowing
        idle_http = _client(cp.url, {**secret, "x-machine-id": "idle"})
        parked_http = _client(cp.url, secret)
        polls = [threading.Thread(target=long_poll, args=("idle-claim", lambda: idle_http.post(
                     "/jobs-request", json={"service": "idle", "ttl": 20000})), daemon=True)
                 for _ in range(IDLE_POLLS)]
        polls += [threading.Thread(target=long_poll, args=("parked-status", lambda: parked_http.get(
                      f"/jobs/{parked}", params={"ttl": 20000})), daemon=True)
                  for _ in range(PARKED_POLLS)]
        for t in polls:
            t.start()
        time.sleep(0.5)  # the long polls are parked in the server
        created_before = len(accepted)
        assert created_before > 20, f"load did not flow: {out.counts}"

        t_term[0] = out.t0 = time.monotonic()
        cp.proc.send_signal(signal.SIGTERM)
        try:
            code = cp.proc.wait(timeout=40)
        except Exception:
            pytest.fail(f"gunicorn did not stop within 40 s of SIGTERM; log:\n{cp.log_tail()}")
        stop_seconds = time.monotonic() - t_term[0]
        assert code == 0, f"graceful stop exited {code}; log:\n{cp.log_tail()}"
        for t in polls:
            t.join(timeout=30)
        idle_http.close()
        parked_http.close()

        cp.start()  # same port, database and secret
        time.sleep(2.0)
        stop_callers.set()
        for t in threads[:CALLERS]:
            t.join(timeout=30)

        # Every accepted call ends success, with its own arguments as result (workers echo them).
        check = Wire(cp.url, cluster, cp.management_secret)

        def all_done():
            r = check.http.post("/batch-jobs-status-request", json={"jobIds": accepted, "ttl": 0}, headers=check.auth)
            assert r.status_code == 200, r.text
            done = {row["id"]: row for row in r.json() if row["status"] in ("success", "failure")}
            return done if len(done) == len(set(accepted)) else None

        done = wait_until(all_done, 40, interval=0.5, what="every accepted call to finish")
        stop_workers.set()
        for t in threads[CALLERS:]:
            t.join(timeout=30)
        check.close()

        conn = psycopg2.connect(database_url, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM jobs WHERE cluster_id = %s AND service = 'svc'", (cluster["id"],))
                rows_in_db = cur.fetchone()[0]
        finally:
            conn.close()
        return Run(out, accepted, done, claims, long_polls, stop_seconds, code, rows_in_db, created_before)
    finally:
        stop_callers.set()
        stop_workers.set()
        cp.kill()


def test_sigterm_loses_no_accepted_call_and_answers_what_it_took(sigterm_run):
    run = sigterm_run
    out = run.out
    print(f"\naccepted {len(run.accepted)} calls ({run.created_before} before SIGTERM); graceful stop "
          f"{run.stop_seconds:.2f}s; long polls answered after {sorted(round(s, 2) for _, s, _ in run.long_polls)}; "
          f"{dict(out.counts)}; cut off: {out.broken}")
    assert run.exit_code == 0, "gunicorn exits 0 after a graceful stop"
    assert run.stop_seconds < 10, f"graceful stop took {run.stop_seconds:.1f}s"
    assert len(set(run.accepted)) == len(run.accepted), "an id was handed out twice"
    failed = [row for row in run.done.values() if row["status"] != "success"]
    assert not failed, f"{len(failed)} accepted calls did not succeed: {failed[:5]}"
    assert all(row["resultType"] == "resolution" for row in run.done.values())
    twice = {job: n for job, n in run.claims.items() if n > 1}
    assert not twice, f"jobs claimed more than once (a claim answer was lost?): {twice}"
    assert set(run.claims) >= set(run.accepted)
    # Every call the server took was answered: no job exists whose 201 the caller never saw.
    assert run.rows_in_db == len(run.accepted), (
        f"{run.rows_in_db - len(run.accepted)} jobs were created but their answer was lost")
    assert not out.server_errors, out.server_errors[:10]
    # Long polls in flight at the SIGTERM answer at once (200 with what they have), not at their ttl.
    kinds = sorted(k for k, _, _ in run.long_polls)
    assert kinds == ["idle-claim"] * IDLE_POLLS + ["parked-status"] * PARKED_POLLS
    assert all(status == 200 for _, _, status in run.long_polls), run.long_polls
    slowest = max(s for _, s, _ in run.long_polls)
    assert slowest < 5, f"long polls should end at once on SIGTERM, the slowest took {slowest:.1f}s"
    assert out.counts["create:refused"] > 0, "callers should have seen the server away (test exercised nothing)"


@pytest.mark.xfail(strict=False, reason=(
    "gunicorn's gthread worker stops accepting on SIGTERM but keeps its listening socket open until "
    "it exits; a connection that lands in the kernel backlog in that window (~50 ms now that long "
    "polls end at once; ~20 s before) is reset when the worker exits instead of being refused. "
    "The requests were never read (the no-lost-call test proves it), but the client sees a reset."))
def test_sigterm_no_connection_is_reset(sigterm_run):
    assert not sigterm_run.out.broken, (
        f"requests cut off without an answer: {sigterm_run.out.broken[:10]}; counts {dict(sigterm_run.out.counts)}")
