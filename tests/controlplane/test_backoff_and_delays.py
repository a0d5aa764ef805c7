"""Delayed calls and retries on rejection with back-off (issue 14), on both databases.

Time is the database's: a delay starts at its clock, a back-off is computed in the statement that
stores the rejection, and PromoteDueJobs is driven by Maintainer ticks with an injected `now`, so
these tests move time forward instead of sleeping (except the loop's own precision test)."""
from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from app import db
from app.engine import controls, maintenance, queue, signals, statements
from app.engine.maintenance import Maintainer, PromoteDueJobs
from app.engine.states import EventType, JobStatus, ResultType
from app.models import Job
from cp_helpers import Api, settle_listener
from support.waiting import wait_until


def row(job_id: str) -> Job:
    return db.unit_of_work(lambda: Job.get(Job.id == job_id), transaction=False)


def db_now() -> dt.datetime:
    return statements.database_now()


def ms_to_dt(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)


def maintainer() -> Maintainer:
    return Maintainer.for_settings(interval=2, machine_timeout=3600, retention_days=7)


def events_of(api: Api, cluster: dict, job_id: str, kind: str) -> list[dict]:
    return [e for e in reversed(api.activity(cluster)) if e["jobId"] == job_id and e["type"] == kind]


def rfc3339(when: dt.datetime) -> str:
    return when.replace(tzinfo=dt.timezone.utc).isoformat().replace("+00:00", "Z")


@pytest.fixture(autouse=True)
def _fresh_function_defaults():
    controls.function_defaults.clear()
    yield
    controls.function_defaults.clear()


# --- delayed calls --------------------------------------------------------------------------------

def test_a_delayed_call_is_not_claimed_before_it_is_due_and_is_after(api):
    cluster = api.new_cluster()
    before = db_now()
    job_id = api.call(cluster, delaySeconds=30)
    job = row(job_id)
    assert job.status == JobStatus.SCHEDULED
    assert 30_000 <= job.run_at_ms - maintenance.epoch_ms(before) < 40_000  # on the database's clock
    assert api.status(cluster, job_id)["status"] == "pending"  # the original's word for it
    assert api.status(cluster, job_id)["state"] == JobStatus.SCHEDULED
    assert api.claim(cluster) == []

    m = maintainer()
    assert m.tick(ms_to_dt(job.run_at_ms - 1))["promote_due_jobs"] == {"promoted": 0}
    assert api.claim(cluster) == []  # one millisecond early is still early
    assert m.tick(ms_to_dt(job.run_at_ms))["promote_due_jobs"] == {"promoted": 1}
    assert [j["id"] for j in api.claim(cluster)] == [job_id]
    assert row(job_id).run_at_ms is None
    assert events_of(api, cluster, job_id, EventType.JOB_DUE)


def test_run_at_in_the_future_waits_and_in_the_past_runs_at_once(api):
    cluster = api.new_cluster()
    now = db_now()
    later = api.call(cluster, runAt=rfc3339(now + dt.timedelta(seconds=60)))
    past = api.call(cluster, runAt=rfc3339(now - dt.timedelta(seconds=60)))
    offset = api.call(cluster, runAt=(now + dt.timedelta(hours=1, minutes=1)).replace(
        tzinfo=dt.timezone(dt.timedelta(hours=1))).isoformat())  # +01:00: one minute ahead in UTC
    assert row(past).status == JobStatus.PENDING and row(past).run_at_ms is None
    assert row(later).status == JobStatus.SCHEDULED
    assert abs(row(later).run_at_ms - maintenance.epoch_ms(now + dt.timedelta(seconds=60))) <= 1
    assert abs(row(offset).run_at_ms - row(later).run_at_ms) <= 1
    assert [j["id"] for j in api.claim(cluster)] == [past]
    assert maintainer().tick(now + dt.timedelta(seconds=61))["promote_due_jobs"] == {"promoted": 2}
    assert {j["id"] for j in api.claim(cluster)} == {later, offset}


def test_a_zero_delay_is_a_plain_call(api):
    cluster = api.new_cluster()
    job_id = api.call(cluster, delaySeconds=0)
    assert row(job_id).status == JobStatus.PENDING
    assert [j["id"] for j in api.claim(cluster)] == [job_id]


def test_promotion_is_bounded_per_run_and_soonest_first(api):
    cluster = api.new_cluster()
    ids = [api.call(cluster, delaySeconds=10 + i) for i in range(5)]
    task = PromoteDueJobs(batch=2)
    far = db_now() + dt.timedelta(seconds=60)
    assert task.run_once(far) == {"promoted": 2}
    assert [j["id"] for j in api.claim(cluster)] == ids[:2]
    assert task.seconds_until_due() == 0.0  # more were due: the loop comes back at once
    assert task.run_once(far) == {"promoted": 2}
    assert task.run_once(far) == {"promoted": 1}
    assert task.run_once(far) == {"promoted": 0} and task.next_due_ms is None


def test_the_promoter_reports_the_earliest_due_time_still_ahead(api):
    cluster = api.new_cluster()
    api.call(cluster, delaySeconds=40)
    soon = api.call(cluster, delaySeconds=20)
    task = PromoteDueJobs()
    task.run_once(db_now())
    assert task.next_due_ms == row(soon).run_at_ms
    assert 15 < task.seconds_until_due() <= 20


def test_the_loop_promotes_a_short_delay_well_before_its_next_tick(make_app, backend):
    """SWEEP_INTERVAL_SECONDS is 5 here: the due hint and the promoter's report wake the lease
    holder for a 0.5 s delay, so the job is claimable about 0.5 s after the call, not 5 s."""
    app = make_app(sweeper_enabled=True, sweep_interval_seconds=5.0)
    api = Api(app)
    cluster = api.new_cluster()
    wait_until(lambda: app.extensions["differential"].maintainer._holding, timeout=15, what="the lease")
    started = time.monotonic()
    job_id = api.call(cluster, delaySeconds=0.5)
    claimed = wait_until(lambda: api.claim(cluster), timeout=10, interval=0.02, what="the delayed job")
    took = time.monotonic() - started
    assert [j["id"] for j in claimed] == [job_id]
    assert 0.45 <= took < 2.5, took  # generous for a shared machine; the tick alone would take 5 s


# --- retries on rejection -------------------------------------------------------------------------

POLICY = {"attempts": 4, "initialDelaySeconds": 0.3, "factor": 2, "maxDelaySeconds": 1.0, "jitter": 0}


def reject_and_promote(api, cluster, job_id, m, value="oQ=="):
    """Claim the job, reject it, and promote it at its due time; the back-off's delay in ms."""
    assert [j["id"] for j in api.claim(cluster)] == [job_id]
    api.result(cluster, job_id, value=value, kind=ResultType.REJECTION)
    job = row(job_id)
    if job.status != JobStatus.SCHEDULED:
        return None
    assert api.claim(cluster) == []  # not before its back-off
    assert m.tick(ms_to_dt(job.run_at_ms))["promote_due_jobs"] == {"promoted": 1}
    return events_of(api, cluster, job_id, EventType.JOB_RETRY_SCHEDULED)[-1]["meta"]["delayMs"]


def test_rejections_are_retried_after_the_policys_delays_and_the_last_one_is_the_answer(api):
    cluster = api.new_cluster()
    job_id = api.call(cluster, retryOnRejection=POLICY)
    m = maintainer()
    delays = [reject_and_promote(api, cluster, job_id, m, value=f"o{i}==") for i in range(3)]
    # min(max, initial * factor^(attempt - 1)): 300, 600, then capped at 1000 ms.
    assert delays == [300, 600, 1000]
    status = api.status(cluster, job_id)
    assert status["state"] == JobStatus.PENDING and status["result"] is None  # a retried rejection is no answer
    assert reject_and_promote(api, cluster, job_id, m, value="last==") is None  # the 4th attempt was the last
    status = api.status(cluster, job_id)
    assert (status["status"], status["state"], status["resultType"], status["result"]) == (
        "success", JobStatus.SUCCESS, ResultType.REJECTION, "last==")
    assert row(job_id).attempt == 4
    received = events_of(api, cluster, job_id, EventType.JOB_RECEIVED)
    assert [e["meta"]["attempt"] for e in received] == [1, 2, 3, 4]


def test_a_retried_rejection_answers_scheduled_not_final(api):
    cluster = api.new_cluster()
    job_id = api.call(cluster, retryOnRejection={"attempts": 2, "initialDelaySeconds": 60})
    api.claim(cluster)
    api.result(cluster, job_id, value="oQ==", kind=ResultType.REJECTION)
    status = api.status(cluster, job_id, ttl=200)  # a long poll does not return it as finished either
    assert (status["status"], status["state"], status["result"], status["resultType"]) == (
        "pending", JobStatus.SCHEDULED, None, None)
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(cluster),
                        json={"jobIds": [job_id], "ttl": 200})
    assert [(s["status"], s["result"], s["resultType"]) for s in r.json] == [("pending", None, None)]
    assert row(job_id).result_type == ResultType.REJECTION  # kept, as the last result, for when attempts run out


def test_a_resolution_ends_the_call_whatever_attempts_are_left(api):
    cluster = api.new_cluster()
    job_id = api.call(cluster, retryOnRejection=POLICY)
    api.claim(cluster)
    api.result(cluster, job_id, value="oA==", kind=ResultType.RESOLUTION)
    assert row(job_id).status == JobStatus.SUCCESS
    assert not events_of(api, cluster, job_id, EventType.JOB_RETRY_SCHEDULED)


def test_without_a_policy_a_rejection_is_final_as_before(api):
    cluster = api.new_cluster()
    job_id = api.call(cluster)
    api.claim(cluster)
    api.result(cluster, job_id, kind=ResultType.REJECTION)
    assert row(job_id).status == JobStatus.SUCCESS and row(job_id).result_type == ResultType.REJECTION


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999999])
def test_jitter_takes_at_most_its_share_off_a_delay(api, monkeypatch, draw):
    monkeypatch.setattr(queue.random, "random", lambda: draw)
    cluster = api.new_cluster()
    job_id = api.call(cluster, retryOnRejection={"attempts": 3, "initialDelaySeconds": 2, "factor": 3,
                                                 "maxDelaySeconds": 100, "jitter": 0.25})
    m = maintainer()
    delays = [reject_and_promote(api, cluster, job_id, m) for _ in range(2)]
    assert delays == [round(2000 * (1 - 0.25 * draw)), round(6000 * (1 - 0.25 * draw))]
    for delay, full in zip(delays, (2000, 6000), strict=True):
        assert full * 0.75 <= delay <= full


def test_jitter_drawn_at_random_stays_within_its_bounds(api):
    cluster = api.new_cluster()
    policy = {"attempts": 2, "initialDelaySeconds": 10, "jitter": 0.5}
    job_ids = [api.call(cluster, retryOnRejection=policy) for _ in range(20)]
    api.claim(cluster, limit=20)
    delays = []
    for job_id in job_ids:
        before = maintenance.epoch_ms(db_now())
        api.result(cluster, job_id, kind=ResultType.REJECTION)
        after = maintenance.epoch_ms(db_now())
        run_at = row(job_id).run_at_ms
        assert before + 5000 <= run_at <= after + 10_000
        delays.append(events_of(api, cluster, job_id, EventType.JOB_RETRY_SCHEDULED)[0]["meta"]["delayMs"])
    assert all(5000 <= d <= 10_000 for d in delays)
    assert len(set(delays)) > 1  # drawn, not fixed


def test_stall_retries_keep_their_own_rules_next_to_a_back_off(api):
    """A stalled attempt is requeued while attempt < attempts_allowed, as before: the back-off
    policy neither adds stall retries nor is spent by them beyond the attempt they count."""
    cluster = api.new_cluster()
    job_id = api.call(cluster, retryCountOnStall=1, timeoutSeconds=1, retryOnRejection=POLICY)
    api.claim(cluster)
    m = maintainer()
    m.tick(db_now() + dt.timedelta(seconds=5))  # attempt 1 timed out: requeued (1 < 2)
    assert row(job_id).status == JobStatus.PENDING
    assert reject_and_promote(api, cluster, job_id, m) == 600  # attempt 2's rejection: the 2nd delay
    api.claim(cluster)
    m.tick(db_now() + dt.timedelta(seconds=5))  # attempt 3 stalled: 3 >= 2 attempts allowed
    assert row(job_id).status == JobStatus.FAILURE


def test_a_late_rejection_of_a_retried_job_is_fenced(api):
    cluster = api.new_cluster()
    job_id = api.call(cluster, retryOnRejection={"attempts": 3, "initialDelaySeconds": 60})
    api.claim(cluster)
    api.result(cluster, job_id, kind=ResultType.REJECTION)
    api.result(cluster, job_id, value="late==", kind=ResultType.REJECTION)  # the same attempt again
    assert row(job_id).status == JobStatus.SCHEDULED and row(job_id).result == "oA=="
    assert len(events_of(api, cluster, job_id, EventType.JOB_RETRY_SCHEDULED)) == 1
    assert events_of(api, cluster, job_id, EventType.JOB_RESULTED_BUT_NOT_PERSISTED)


# --- per-function defaults ------------------------------------------------------------------------

def register(api, cluster, functions, machine="worker-1"):
    r = api.client.post("/jobs-request", headers=api.headers(cluster, machine),
                        json={"service": "svc", "limit": 0, "ttl": 0, "functions": functions})
    assert r.status_code == 200, r.json


def test_a_functions_default_policy_applies_and_a_calls_own_overrides_it(api):
    cluster = api.new_cluster()
    register(api, cluster, [{"name": "fn", "retryOnRejection": {"attempts": 3, "initialDelaySeconds": 5}},
                            {"name": "plain"}])
    inherits = api.call(cluster)
    own = api.call(cluster, retryOnRejection={"attempts": 7, "initialDelaySeconds": 0.5, "factor": 1.5})
    plain = api.call(cluster, fn="plain")
    got = {j: (row(j).backoff_attempts, row(j).backoff_initial_ms, row(j).backoff_factor) for j in (inherits, own, plain)}
    assert got == {inherits: (3, 5000, 2.0), own: (7, 500, 1.5), plain: (None, None, None)}
    defaults = row(inherits)
    assert (defaults.backoff_max_ms, defaults.backoff_jitter) == (300_000, 0.0)  # the documented defaults


def test_function_defaults_come_from_the_stored_definition_and_are_cached(api, backend, monkeypatch):
    if backend == "postgres":
        settle_listener()
    cluster = api.new_cluster()
    register(api, cluster, [{"name": "fn", "retryOnRejection": {"attempts": 2}}])
    controls.function_defaults.clear()  # as another replica: only the stored definition knows
    reads = []
    real = controls._read
    monkeypatch.setattr(controls, "_read", lambda *a: reads.append(a) or real(*a))
    first, second = api.call(cluster), api.call(cluster)
    assert row(first).backoff_attempts == row(second).backoff_attempts == 2
    assert len(reads) == 1  # the second create used the cached definition
    # Entries last DEFAULTS_TTL_SECONDS without the listener, LISTENING_CACHE_SECONDS with it (a
    # change elsewhere clears them then: tests/controlplane/test_service_caches.py).
    monkeypatch.setattr(controls, "DEFAULTS_TTL_SECONDS", 0.0)
    monkeypatch.setattr(signals, "LISTENING_CACHE_SECONDS", 0.0)
    api.call(cluster)
    assert len(reads) == 2


def test_function_defaults_are_per_cluster(api):
    a, b = api.new_cluster(), api.new_cluster()
    register(api, a, [{"name": "fn", "retryOnRejection": {"attempts": 5}}])
    register(api, b, [{"name": "fn"}])
    assert row(api.call(a)).backoff_attempts == 5
    assert row(api.call(b)).backoff_attempts is None


def test_delays_and_back_offs_are_isolated_between_clusters(api):
    a, b = api.new_cluster(), api.new_cluster()
    delayed = api.call(a, delaySeconds=5)
    assert api.claim(b) == [] and api.claim(a) == []
    maintainer().tick(db_now() + dt.timedelta(seconds=6))
    assert api.claim(b) == []
    assert [j["id"] for j in api.claim(a)] == [delayed]
    retried = api.call(a, retryOnRejection={"attempts": 2, "initialDelaySeconds": 1})
    api.claim(a)
    r = api.client.post(f"/jobs/{retried}/result", headers=api.headers(b), json={"result": "oQ==", "resultType": "rejection"})
    assert r.status_code == 204 and row(retried).status == JobStatus.RUNNING  # another cluster's machine is fenced
    r = api.client.get(f"/jobs/{delayed}", headers=api.headers(b))
    assert r.status_code == 404


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("config, field, words", [
    ({"delaySeconds": -1}, "callConfig.delaySeconds", "at least 0"),
    ({"delaySeconds": "soon"}, "callConfig.delaySeconds", "type number"),
    ({"delaySeconds": 10**9}, "callConfig.delaySeconds", "at most"),
    ({"runAt": "tomorrow"}, "callConfig.runAt", "RFC 3339"),
    ({"runAt": "2026-12-01T17:00:00"}, "callConfig.runAt", "with an offset"),
    ({"runAt": "2026-02-30T17:00:00Z"}, "callConfig.runAt", "not a real date"),
    ({"runAt": "2999-01-01T00:00:00Z"}, "callConfig.runAt", "days ahead"),
    ({"runAt": 1_700_000_000_000}, "callConfig.runAt", "type string"),
    ({"runAt": "2026-12-01T17:00:00Z", "delaySeconds": 1}, "callConfig.runAt", "delaySeconds"),
    ({"retryOnRejection": {}}, "callConfig.retryOnRejection.attempts", "required"),
    ({"retryOnRejection": {"attempts": 0}}, "callConfig.retryOnRejection.attempts", "at least 1"),
    ({"retryOnRejection": {"attempts": 101}}, "callConfig.retryOnRejection.attempts", "at most 100"),
    ({"retryOnRejection": {"attempts": 2.5}}, "callConfig.retryOnRejection.attempts", "type integer"),
    ({"retryOnRejection": {"attempts": 2, "factor": 0.5}}, "callConfig.retryOnRejection.factor", "at least 1"),
    ({"retryOnRejection": {"attempts": 2, "jitter": 1.5}}, "callConfig.retryOnRejection.jitter", "at most 1"),
    ({"retryOnRejection": {"attempts": 2, "initialDelaySeconds": -1}},
     "callConfig.retryOnRejection.initialDelaySeconds", "at least 0"),
    ({"retryOnRejection": {"attempts": 2, "maxDelaySeconds": 10**6}},
     "callConfig.retryOnRejection.maxDelaySeconds", "at most"),
    ({"retryOnRejection": {"attempts": 2, "retries": 3}}, "callConfig.retryOnRejection.retries", "not a known field"),
    ({"retryOnRejection": 3}, "callConfig.retryOnRejection", "type object"),
])
def test_bad_delay_and_back_off_fields_are_a_400_naming_the_field(api, config, field, words):
    cluster = api.new_cluster()
    r = api.client.post("/jobs", headers=api.headers(cluster),
                        json={"service": "svc", "targetFn": "fn", "targetArgs": "kA==", "callConfig": config})
    assert r.status_code == 400, r.json
    assert r.json["error"]["details"]["fields"][0]["field"] == field
    assert words in r.json["error"]["message"]
    assert db.unit_of_work(lambda: Job.select().count(), transaction=False) == 0


def test_a_bad_function_policy_is_a_400_naming_the_field(api):
    cluster = api.new_cluster()
    r = api.client.post("/jobs-request", headers=api.headers(cluster),
                        json={"service": "svc", "functions": [{"name": "fn", "retryOnRejection": {"attempts": -1}}]})
    assert r.status_code == 400
    assert r.json["error"]["details"]["fields"][0]["field"] == "functions[0].retryOnRejection.attempts"


# --- the statements, directly ---------------------------------------------------------------------

def test_store_results_answers_true_false_or_the_retry(app):
    def new_job(job_id, backoff):
        return statements.NewJob(cluster_id="c1", job_id=job_id, service="svc", target_fn="f", target_args="kQ==",
                                 cache_key=None, attempts_allowed=1, timeout_seconds=60, created_at=db_now(),
                                 deployment_id=None, predictive_retries=False, backoff=backoff)

    policy = statements.Backoff(attempts=2, initial_ms=1500, factor=2, max_ms=10_000, jitter=0)
    assert db.unit_of_work(lambda: statements.insert_jobs([new_job("plain", None), new_job("retried", policy),
                                                           new_job("also", None)])) == [True, True, True]
    db.unit_of_work(lambda: statements.claim_jobs(cluster_id="c1", service="svc", machine_id="m", limit=3),
                    transaction=False)

    def result(job_id, machine="m"):
        return statements.Result(cluster_id="c1", job_id=job_id, machine_id=machine, result="oQ==",
                                 result_type=ResultType.REJECTION, execution_time_ms=None, resulted_at=db_now())

    stored = db.unit_of_work(lambda: statements.store_results([result("plain"), result("retried"),
                                                               result("also", "intruder")]),
                             transaction=not db.dialect.batch_in_one_statement)
    assert stored[0] is True and stored[2] is False
    assert isinstance(stored[1], statements.RetryScheduled) and stored[1].delay_ms == 1500
    assert row("retried").run_at_ms == stored[1].run_at_ms and row("retried").status == JobStatus.SCHEDULED


def test_a_batch_mixing_plain_and_controlled_jobs_answers_each_in_order(app):
    def new_job(job_id, **controls):
        return statements.NewJob(cluster_id="c1", job_id=job_id, service="svc", target_fn="f", target_args="kQ==",
                                 cache_key=None, attempts_allowed=1, timeout_seconds=60, created_at=db_now(),
                                 deployment_id=None, predictive_retries=False, **controls)

    def insert(jobs):
        return db.unit_of_work(lambda: statements.insert_jobs(jobs), transaction=not db.dialect.batch_in_one_statement)

    policy = statements.Backoff(attempts=3, initial_ms=100, factor=2, max_ms=1000, jitter=0.5)
    assert insert([new_job("p1"), new_job("d1", delay_ms=60_000), new_job("p2"), new_job("b1", backoff=policy),
                   new_job("past", run_at_ms=1)]) == [True] * 5
    assert insert([new_job("d1", delay_ms=1), new_job("new"), new_job("p1"), new_job("b1", backoff=policy)]) == [
        False, True, False, False]
    got = {j: (row(j).status, row(j).run_at_ms is not None, row(j).backoff_attempts)
           for j in ("p1", "d1", "p2", "b1", "past", "new")}
    assert got == {"p1": (JobStatus.PENDING, False, None), "d1": (JobStatus.SCHEDULED, True, None),
                   "p2": (JobStatus.PENDING, False, None), "b1": (JobStatus.PENDING, False, 3),
                   "past": (JobStatus.PENDING, False, None), "new": (JobStatus.PENDING, False, None)}
    assert (row("b1").backoff_initial_ms, row("b1").backoff_factor, row("b1").backoff_max_ms,
            row("b1").backoff_jitter) == (100, 2.0, 1000, 0.5)


def test_the_loop_waits_a_tick_after_a_failed_one_and_stops_promptly(app):
    """The early wake-ups must not turn a database outage into a busy loop, nor delay a stop."""

    class Down:
        seconds = 3.0
        calls = 0

        def take(self, now):
            Down.calls += 1
            raise RuntimeError("database down")

        renew = take

        def release(self):
            pass

    m = Maintainer(Down(), [PromoteDueJobs()], interval=0.2)
    m._holding = True  # as if it held the lease when the outage began
    m.start()
    time.sleep(1.1)
    started = time.monotonic()
    m.stop()
    assert time.monotonic() - started < 1.0
    assert 2 <= Down.calls <= 7, Down.calls  # about one a tick (0.2 s), not thousands


def test_short_delays_are_on_time_in_a_real_server_of_two_processes(backend, request):
    """gunicorn with two workers and a 5 s tick: a create in either process hints the lease holder
    (NOTIFY on PostgreSQL; on SQLite the holder re-reads the earliest due time every 0.25 s), so a
    0.5 s delay is claimable about 0.5 s after the call, whichever process took it."""
    from support.server import ControlPlane

    url = request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None
    with ControlPlane(database_url=url, env={"SWEEP_INTERVAL_SECONDS": "5", "WEB_CONCURRENCY": "2"}) as cp:
        cluster = cp.create_cluster("precision")
        headers = {"Authorization": f"Basic {cluster['apiSecret']}", "x-machine-id": "worker"}
        with httpx.Client(base_url=cp.url, headers=headers, timeout=30) as http:
            http.post("/jobs-request", json={"service": "svc", "limit": 0, "ttl": 0})
            time.sleep(6)  # one tick, so a process holds the lease
            took = []
            for _ in range(4):
                started = time.monotonic()
                r = http.post("/jobs", json={"service": "svc", "targetFn": "fn", "targetArgs": "kA==",
                                             "callConfig": {"delaySeconds": 0.5}})
                assert r.status_code == 201, r.text
                while not (claimed := http.post("/jobs-request", json={"service": "svc", "limit": 1, "ttl": 5000}).json()):
                    assert time.monotonic() - started < 10
                assert claimed[0]["id"] == r.json()["id"]
                took.append(time.monotonic() - started)
    assert all(0.45 <= t < 2.5 for t in took), took  # the tick alone would take up to 5 s


# --- next to the other call controls --------------------------------------------------------------

def test_a_delayed_calls_queue_deadline_counts_from_its_due_time(api):
    cluster = api.new_cluster()
    job_id = api.call(cluster, delaySeconds=30, queueDeadlineSeconds=5)
    job = row(job_id)
    assert abs(job.queue_deadline_ms - (job.run_at_ms + 5000)) < 1000  # not from the create
    m = maintainer()
    m.tick(db_now() + dt.timedelta(seconds=10))  # past create + 5 s, before due + 5 s
    assert row(job_id).status == JobStatus.SCHEDULED
    m.tick(ms_to_dt(job.run_at_ms + 6000))  # due, then unclaimed past its queue deadline
    assert row(job_id).status == JobStatus.FAILURE


def test_a_scheduled_retry_can_be_cancelled_and_its_late_rejection_is_fenced(api):
    cluster = api.new_cluster()
    job_id = api.call(cluster, retryOnRejection={"attempts": 3, "initialDelaySeconds": 60})
    api.claim(cluster)
    api.result(cluster, job_id, kind=ResultType.REJECTION)
    r = api.client.post(f"/jobs/{job_id}/cancel", headers=api.headers(cluster), json={})
    assert r.status_code == 200, r.json
    assert row(job_id).status == JobStatus.CANCELLED
    assert maintainer().tick(db_now() + dt.timedelta(seconds=120))["promote_due_jobs"] == {"promoted": 0}
    assert api.claim(cluster) == []


def test_a_schedules_calls_carry_its_back_off_and_delay_and_it_refuses_run_at(api):
    from app.engine.maintenance import FireSchedules

    cluster = api.new_cluster()
    body = {"name": "nightly", "service": "svc", "function": "fn", "arguments": [], "cron": "* * * * *",
            "timezone": "UTC", "callConfig": {"retryOnRejection": {"attempts": 4}, "delaySeconds": 20}}
    r = api.client.post(f"/clusters/{cluster['id']}/schedules", headers=api.mgmt, json=body)
    assert r.status_code == 201, r.json
    r = api.client.post(f"/clusters/{cluster['id']}/schedules", headers=api.mgmt,
                        json={**body, "name": "fixed", "callConfig": {"runAt": "2026-12-01T17:00:00Z"}})
    assert r.status_code == 400 and "runAt" in r.json["error"]["message"]
    from app.models import Schedule

    due = db.unit_of_work(lambda: Schedule.get(Schedule.name == "nightly").next_fire_ms)
    assert FireSchedules().run_once(ms_to_dt(due)) == {"fired": 1, "failed": 0}
    job = db.unit_of_work(lambda: Job.get(Job.cluster_id == cluster["id"]))
    assert (job.status, job.backoff_attempts) == (JobStatus.SCHEDULED, 4)


def test_a_schedules_calls_carry_its_deadlines(api):
    """A schedule's callConfig goes through the one wire-to-CallConfig mapping (call_config.py),
    deadlines included."""
    from app.engine.maintenance import FireSchedules
    from app.models import Schedule

    cluster = api.new_cluster()
    body = {"name": "hourly", "service": "svc", "function": "fn", "arguments": [], "cron": "0 * * * *",
            "timezone": "UTC", "callConfig": {"queueDeadlineSeconds": 30, "callDeadlineSeconds": 60}}
    r = api.client.post(f"/clusters/{cluster['id']}/schedules", headers=api.mgmt, json=body)
    assert r.status_code == 201, r.json
    due = db.unit_of_work(lambda: Schedule.get(Schedule.name == "hourly").next_fire_ms)
    assert FireSchedules().run_once(ms_to_dt(due)) == {"fired": 1, "failed": 0}
    job = db.unit_of_work(lambda: Job.get(Job.cluster_id == cluster["id"]))
    assert job.status == JobStatus.PENDING
    assert job.queue_deadline_ms is not None and job.call_deadline_ms - job.queue_deadline_ms == 30_000


def test_a_policy_number_too_small_for_the_database_is_kept_as_zero(api):
    """The OpenAPI fuzzer's jitter of 1.7e-264 is valid (0..1) but underflows PostgreSQL's REAL: the
    create answered 500. Policies keep six decimals."""
    cluster = api.new_cluster()
    job_id = api.call(cluster, retryOnRejection={"attempts": 2, "jitter": 1.658321389007634e-264, "factor": 1.0000001})
    stored = row(job_id)
    assert (stored.backoff_jitter, stored.backoff_factor) == (0.0, 1.0)
