"""Concurrency limits (issue 14): the claim never hands out more running jobs than a poll's limit.

Many machines claim at once while a sampler reads the running count from the database; the
limits of functions and of the service; the poll at a full limit that claims as soon as a running
job finishes; bad input. Both backends in-process, then PostgreSQL behind two gunicorn workers.
"""
from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from app import db
from cp_helpers import Api
from support.server import ControlPlane


def poll(api: Api, cluster, machine="m1", *, limit=10, ttl=0, functions=None, concurrency=None, service="svc"):
    body = {"service": service, "limit": limit, "ttl": ttl,
            "functions": functions if functions is not None else [{"name": "fn"}]}
    if concurrency is not None:
        body["concurrency"] = concurrency
    r = api.client.post("/jobs-request", headers=api.headers(cluster, machine), json=body)
    assert r.status_code == 200, r.json
    return r.json


def running_count(cluster_id: str, service: str = "svc") -> int:
    return db.unit_of_work(lambda: db.execute(
        "SELECT count(*) FROM jobs WHERE cluster_id = %s AND service = %s AND status = 'running'",
        (cluster_id, service)).fetchone()[0], transaction=False)


class Sampler(threading.Thread):
    """Reads the running count in a loop until stopped; `most` is the highest it saw."""

    def __init__(self, read):
        super().__init__(daemon=True)
        self.read, self.most, self.samples = read, 0, 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.most = max(self.most, self.read())
            self.samples += 1

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.join(10)


def _work(api: Api, cluster, machine: str, body: dict, total: int, done: list, lock, errors: list) -> None:
    """One machine: poll with `body`, hold each job a moment, report it; until `total` are done."""
    rng = random.Random(machine)
    try:
        while True:
            with lock:
                if len(done) >= total:
                    return
            r = api.client.post("/jobs-request", headers=api.headers(cluster, machine), json=body)
            assert r.status_code == 200, r.json
            for job in r.json:
                time.sleep(rng.uniform(0, 0.01))
                api.result(cluster, job["id"], machine=machine, value=job["id"])
                with lock:
                    done.append(job["id"])
    except BaseException as exc:  # surfaced by the test
        errors.append(exc)


def _run_machines(api: Api, cluster, body: dict, total: int, machines: int = 8) -> list:
    done, lock, errors = [], threading.Lock(), []
    threads = [threading.Thread(target=_work, args=(Api(api.app), cluster, f"m{i}", body, total, done, lock, errors))
               for i in range(machines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors[0]
    assert not any(t.is_alive() for t in threads), "the machines did not finish"
    return done


def test_a_function_limit_holds_with_many_machines_claiming_at_once(api):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(60)]
    body = {"service": "svc", "limit": 10, "ttl": 300, "functions": [{"name": "fn", "concurrency": 3}]}
    with Sampler(lambda: running_count(c["id"])) as sampler:
        done = _run_machines(api, c, body, total=60)
    assert sorted(done) == sorted(ids), "every job ran once"
    assert sampler.samples > 10
    assert sampler.most <= 3, f"{sampler.most} jobs of a function limited to 3 ran at once"
    assert all(api.status(c, i)["status"] == "success" for i in ids)


def test_a_service_limit_holds_across_its_functions(api):
    c = api.new_cluster()
    ids = [api.call(c, fn=fn) for _ in range(15) for fn in ("a", "b", "c")]
    body = {"service": "svc", "limit": 10, "ttl": 300, "concurrency": 4,
            "functions": [{"name": "a"}, {"name": "b", "concurrency": 2}, {"name": "c"}]}
    sample_b = lambda: db.unit_of_work(lambda: db.execute(  # noqa: E731
        "SELECT count(*) FROM jobs WHERE cluster_id = %s AND target_fn = 'b' AND status = 'running'",
        (c["id"],)).fetchone()[0], transaction=False)
    with Sampler(lambda: running_count(c["id"])) as service_sampler, Sampler(sample_b) as b_sampler:
        done = _run_machines(api, c, body, total=len(ids))
    assert sorted(done) == sorted(ids)
    assert service_sampler.most <= 4, f"{service_sampler.most} jobs of a service limited to 4 ran at once"
    assert b_sampler.most <= 2, f"{b_sampler.most} jobs of a function limited to 2 ran at once"


def test_other_functions_are_claimed_while_a_limited_one_is_full(api):
    c = api.new_cluster()
    a = [api.call(c, fn="a") for _ in range(3)]  # older than b's
    b = [api.call(c, fn="b") for _ in range(3)]
    functions = [{"name": "a", "concurrency": 1}, {"name": "b"}]
    first = poll(api, c, "m1", limit=3, functions=functions)
    assert [j["id"] for j in first] == [a[0], b[0], b[1]], "a's younger jobs were passed over for b's"
    second = poll(api, c, "m2", limit=10, functions=functions)
    assert [j["id"] for j in second] == [b[2]], "a is full (on another machine): only b is claimed"
    assert poll(api, c, "m3", limit=10, functions=functions) == []
    api.result(c, a[0], machine="m1")
    assert [j["id"] for j in poll(api, c, "m3", limit=10, functions=functions)] == [a[1]]


def test_a_full_service_claims_nothing_and_each_poll_is_judged_by_its_own_limits(api):
    c = api.new_cluster()
    ids = [api.call(c, fn=fn) for fn in ("a", "b", "a", "b")]
    functions = [{"name": "a"}, {"name": "b"}]
    assert len(poll(api, c, "m1", limit=10, functions=functions, concurrency=2)) == 2
    assert poll(api, c, "m2", limit=10, functions=functions, concurrency=2) == []
    # A machine that declares a larger limit claims up to its own; one that declares none, as ever.
    assert [j["id"] for j in poll(api, c, "m3", limit=10, functions=functions, concurrency=3)] == [ids[2]]
    assert [j["id"] for j in poll(api, c, "m4", limit=10, functions=functions)] == [ids[3]]


def test_a_poll_whose_every_function_is_full_does_not_read_the_queue(api, monkeypatch):
    # A backlog of a full function would otherwise be read through on every wake-up of every
    # parked poll (there is no per-function pending index), to find nothing.
    from app.engine import statements

    c = api.new_cluster()
    ids = [api.call(c) for _ in range(3)]
    functions = [{"name": "fn", "concurrency": 1}]
    assert [j["id"] for j in poll(api, c, "m1", functions=functions)] == ids[:1]
    reads = []
    claim_jobs_limited = statements.claim_jobs_limited
    monkeypatch.setattr(statements, "claim_jobs_limited", lambda **kw: reads.append(kw) or claim_jobs_limited(**kw))
    assert poll(api, c, "m2", functions=functions) == []
    assert reads == []
    # With another function to serve, the poll reads past the full one's jobs.
    assert poll(api, c, "m2", functions=functions + [{"name": "other"}]) == []
    assert [r["exclude"] for r in reads] == [["fn"]]


def test_a_service_limit_without_a_function_list_still_claims(api):
    c = api.new_cluster()
    ids = [api.call(c, fn=fn) for fn in ("a", "b", "c")]
    assert [j["id"] for j in poll(api, c, "m1", functions=[], concurrency=2)] == ids[:2]
    assert poll(api, c, "m2", functions=[], concurrency=2) == []


def _full_poll(api: Api, cluster, functions) -> tuple[list, threading.Event, threading.Thread]:
    """A poll of machine m2 at a full limit, in a thread of its own, checked to be waiting a second
    later: (the jobs it got, set once it answered, its thread)."""
    got, answered = [], threading.Event()

    def park():
        got.extend(poll(Api(api.app), cluster, "m2", functions=functions, ttl=15000))
        answered.set()

    thread = threading.Thread(target=park)
    thread.start()
    time.sleep(1.0)
    assert not answered.is_set(), "the full poll waits"
    return got, answered, thread


def test_a_poll_at_a_full_limit_claims_as_soon_as_a_running_job_finishes(api):
    c = api.new_cluster()
    first, second = api.call(c), api.call(c)
    functions = [{"name": "fn", "concurrency": 1}]
    assert [j["id"] for j in poll(api, c, "m1", functions=functions)] == [first]
    got, answered, t = _full_poll(api, c, functions)
    try:
        finished = time.monotonic()
        api.result(c, first, machine="m1")
        # Woken by the result itself, not the fallback timer nor the end of the poll.
        assert answered.wait(3.0), "the parked poll did not claim when the running job finished"
        assert time.monotonic() - finished < 3.0
        assert [j["id"] for j in got] == [second]
    finally:
        t.join(20)


def test_a_full_poll_that_cannot_watch_every_holder_re_checks_before_its_ttl(api, monkeypatch):
    """Past the holders a poll watches, a holder's finishing wakes nobody: the poll re-checks on its
    own (every few seconds) instead of waiting for its ttl (the fallback timer, while the
    listener is connected, is the longest poll)."""
    from app.engine import limits, statements
    monkeypatch.setattr(limits, "_MAX_WATCHED", 1)
    monkeypatch.setattr(limits, "_UNWATCHED_RECHECK_SECONDS", 0.5)
    c = api.new_cluster()
    holders = [api.call(c), api.call(c)]
    waiting = api.call(c)
    functions = [{"name": "fn", "concurrency": 2}]
    assert sorted(j["id"] for j in poll(api, c, "m1", functions=functions, limit=2)) == sorted(holders)
    got, answered, t = _full_poll(api, c, functions)
    try:
        watched = db.unit_of_work(lambda: statements.running_ids(c["id"], "svc", ["fn"], 1), transaction=False)
        unwatched = next(job_id for job_id in holders if job_id not in watched)
        api.result(c, unwatched, machine="m1")
        assert answered.wait(5.0), "the poll waited for its ttl after a holder it did not watch finished"
        assert [j["id"] for j in got] == [waiting]
    finally:
        t.join(20)


def test_the_cluster_view_shows_the_declared_limits(api):
    c = api.new_cluster()
    poll(api, c, functions=[{"name": "fn", "concurrency": 2}, {"name": "other"}], concurrency=5)
    r = api.client.get(f"/clusters/{c['id']}/service/svc", headers=api.mgmt)
    assert r.status_code == 200, r.json
    definition = r.json["definition"]
    assert definition["concurrency"] == 5
    assert {f["name"]: f.get("concurrency") for f in definition["functions"]} == {"fn": 2, "other": None}


def test_polls_waiting_for_the_limits_lock_leave_the_pool_to_other_requests(fresh_pg_url, tmp_path):
    import psycopg2

    from app import create_app, settings
    from cp_helpers import MANAGEMENT_SECRET

    app = create_app(settings.load({"MANAGEMENT_SECRET": MANAGEMENT_SECRET, "DATABASE_URL": fresh_pg_url,
                                    "DIFFERENTIAL_DATA_DIR": str(tmp_path), "SWEEPER_ENABLED": "false"},
                                   database_pool_size=3))
    api = Api(app)
    c = api.new_cluster()
    job = api.call(c, service="other")
    holder = psycopg2.connect(fresh_pg_url)  # holds the service's limits lock, as a slow claim would
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"limits/{c['id']}/svc",))
    polls = [threading.Thread(target=poll, args=(Api(api.app), c, f"m{i}"),
                              kwargs={"functions": [{"name": "fn", "concurrency": 1}]}) for i in range(6)]
    try:
        for t in polls:
            t.start()
        time.sleep(0.5)  # they queue for the lock
        started = time.monotonic()
        assert api.status(c, job)["state"] == "pending"
        assert time.monotonic() - started < 1.5, "a status read waited for a pooled connection"
    finally:
        holder.rollback()
        holder.close()
        for t in polls:
            t.join(30)
        app.extensions["differential"].close()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, None, 10**12, 2**70])
@pytest.mark.parametrize("where", ["function", "service"])
def test_bad_limits_answer_400(api, where, bad):
    c = api.new_cluster()
    body = {"service": "svc", "ttl": 0, "functions": [{"name": "fn"}]}
    if where == "function":
        body["functions"][0]["concurrency"] = bad
    else:
        body["concurrency"] = bad
    r = api.client.post("/jobs-request", headers=api.headers(c), json=body)
    assert r.status_code == 400, r.json
    assert r.json["error"]["details"], r.json
    assert "concurrency" in str(r.json["error"]["details"])


# --- PostgreSQL behind two gunicorn workers: claims race across processes and connections ------

CLAIMER = textwrap.dedent("""
    import json, random, sys, time, httpx
    url, secret, machine, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    headers = {"Authorization": "Basic " + secret, "x-machine-id": machine}
    body = {"service": "svc", "limit": 10, "ttl": 500, "functions": [{"name": "fn", "concurrency": 3}]}
    claimed = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = http.get("/jobs/last?ttl=0")
            if done.status_code == 200 and done.json()["status"] == "success":
                break
            r = http.post("/jobs-request", json=body)
            r.raise_for_status()
            for job in r.json():
                claimed.append(job["id"])
                time.sleep(random.uniform(0, 0.01))
                res = http.post(f"/jobs/{job['id']}/result", json={"result": "oA==", "resultType": "resolution"})
                assert res.status_code == 204, res.text
    print(json.dumps(claimed))
""")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_limit_holds_across_processes_through_gunicorn(backend, request):
    url = request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None
    with ControlPlane(url, env={"WEB_CONCURRENCY": "2"}) as cp:
        cluster = cp.create_cluster()
        headers = {"Authorization": f"Basic {cluster['apiSecret']}"}
        with httpx.Client(base_url=cp.url, headers=headers, timeout=30) as http:
            ids = []
            for i in range(60):
                body = {"service": "svc", "targetFn": "fn", "targetArgs": "kA=="}
                if i == 59:
                    body["callConfig"] = {"executionId": "last"}  # the newest: claimed after every other
                r = http.post("/jobs", json=body)
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
        if url:
            import psycopg2

            conn = psycopg2.connect(url)
            conn.autocommit = True
        else:
            conn = sqlite3.connect(f"file:{cp.data_dir / 'differential.db'}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)

        def read():
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM jobs WHERE status = 'running'")
            return cur.fetchone()[0]

        with Sampler(read) as sampler:
            procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, cp.url, cluster["apiSecret"], f"p{i}", "60"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
            outs = [p.communicate(timeout=180) for p in procs]
        conn.close()
        for p, (_out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        claimed = [job for out, _ in outs for job in json.loads(out)]
        assert sorted(claimed) == sorted(ids), "every job claimed once"
        assert sampler.samples > 10
        assert sampler.most <= 3, f"{sampler.most} jobs of a function limited to 3 ran at once"


def test_a_parked_poll_wakes_on_a_result_that_another_process_stored(fresh_pg_url):
    # Two gunicorn workers: the parked poll and the result often land in different processes,
    # where only the result's NOTIFY (its job topic) can wake the poll before the fallback timer.
    with ControlPlane(fresh_pg_url, env={"WEB_CONCURRENCY": "2"}) as cp:
        cluster = cp.create_cluster()

        def client(machine):
            return httpx.Client(base_url=cp.url, timeout=30,
                                headers={"Authorization": f"Basic {cluster['apiSecret']}", "x-machine-id": machine})

        body = {"service": "svc", "limit": 5, "ttl": 15000, "functions": [{"name": "fn", "concurrency": 1}]}
        with client("m1") as m1:
            for round_ in range(4):
                ids = [m1.post("/jobs", json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="}).json()["id"]
                       for _ in range(2)]
                assert [j["id"] for j in m1.post("/jobs-request", json={**body, "ttl": 0}).json()] == ids[:1]
                got = []

                def park(machine, got):
                    with client(machine) as m2:
                        got.extend(m2.post("/jobs-request", json=body).json())

                t = threading.Thread(target=park, args=(f"parked{round_}", got))
                t.start()
                time.sleep(0.5)
                finished = time.monotonic()
                r = m1.post(f"/jobs/{ids[0]}/result", json={"result": "oA==", "resultType": "resolution"})
                assert r.status_code == 204
                t.join(20)
                assert [j["id"] for j in got] == ids[1:], f"round {round_}"
                assert time.monotonic() - finished < 3.0, f"round {round_}: woken only by the fallback timer"
                m2_result = httpx.post(f"{cp.url}/jobs/{ids[1]}/result", json={"result": "oA==", "resultType": "resolution"},
                                       headers={"Authorization": f"Basic {cluster['apiSecret']}",
                                                "x-machine-id": f"parked{round_}"})
                assert m2_result.status_code == 204
