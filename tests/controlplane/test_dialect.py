"""One suite over both dialects (River's riverdrivertest): the bound dialect, and every transition
of statements.py run through it, on SQLite and on PostgreSQL (the `backend` fixture)."""
from __future__ import annotations

import datetime as dt

import pytest

from app import db
from app.engine import statements
from app.engine.maintenance import Maintainer
from app.engine.states import JobStatus, ResultType
from app.models import utcnow

# What differs, per database: the whole list of the dialect's answers.
EXPECTED = {
    "postgres": {"batch_in_one_statement": True, "skip_locked": " FOR UPDATE SKIP LOCKED",
                 "refreshes_statistics": True, "translated": "SELECT %s"},
    "sqlite": {"batch_in_one_statement": False, "skip_locked": "", "refreshes_statistics": False,
               "translated": "SELECT ?"},
}


def new_job(job_id: str, attempts_allowed: int = 2, timeout_seconds: int = 60) -> statements.NewJob:
    return statements.NewJob(cluster_id="c1", job_id=job_id, service="svc", target_fn="f", target_args="kQ==",
                             cache_key=None, attempts_allowed=attempts_allowed, timeout_seconds=timeout_seconds,
                             created_at=utcnow(), deployment_id=None, predictive_retries=False)


def run(fn, transaction=True):
    return db.unit_of_work(fn, transaction=transaction)


def statuses(*ids):
    return {row[0]: row[1] for row in run(lambda: statements.read_statuses("c1", list(ids)))}


def claim(machine_id, limit=10, now_ms=None):
    now = utcnow()
    return run(lambda: statements.claim_jobs(cluster_id="c1", service="svc", machine_id=machine_id, limit=limit,
                                             claimed_at=now, now_ms=now_ms or 0), transaction=False)


def test_bind_picks_the_engine_dialect_of_the_configured_database(app, backend):
    dialect = db.dialect
    assert dialect.name == backend
    assert type(dialect) is statements.DIALECTS[backend]
    expected = EXPECTED[backend]
    assert (dialect.batch_in_one_statement, dialect.skip_locked, dialect.refreshes_statistics) == (
        expected["batch_in_one_statement"], expected["skip_locked"], expected["refreshes_statistics"])
    assert dialect.translate("SELECT %s") == expected["translated"]


def test_statistics_are_refreshed_only_where_the_dialect_says_so(app, backend):
    names = [t.name for t in Maintainer.for_settings(interval=1, machine_timeout=90, retention_days=7).tasks]
    assert ("refresh_statistics" in names) == (backend == "postgres")


def test_lock_key_and_notify_run_inside_a_transaction(app):
    def tx():
        db.dialect.lock_key("c1/svc/f/key")
        db.dialect.lock_key("c1/svc/f/key")  # re-entrant within one transaction
        db.dialect.notify("differential", ["q/c1/svc"])
        return db.execute("SELECT 1").fetchall()

    assert run(tx) == [(1,)]


def test_insert_is_idempotent_per_cluster_and_id(app):
    assert run(lambda: statements.insert_jobs([new_job("a"), new_job("b")])) == [True, True]
    assert run(lambda: statements.insert_jobs([new_job("a"), new_job("c")])) == [False, True]
    assert statuses("a", "b", "c", "missing") == {"a": JobStatus.PENDING, "b": JobStatus.PENDING,
                                                  "c": JobStatus.PENDING}


def test_claim_then_store_results_fenced_by_the_holder(app):
    run(lambda: statements.insert_jobs([new_job("a"), new_job("b"), new_job("c")]))
    claimed = claim("m1", limit=2, now_ms=1000)
    assert [(row[1], row[4]) for row in claimed] == [("a", 1), ("b", 1)]  # oldest first, attempt counted
    assert claim("m2", limit=10)[0][1] == "c"
    assert claim("m2") == []

    def result(job_id, machine_id):
        return statements.Result(cluster_id="c1", job_id=job_id, machine_id=machine_id, result="oA==",
                                 result_type=ResultType.RESOLUTION, execution_time_ms=None, resulted_at=utcnow())

    stored = run(lambda: statements.store_results([result("a", "m1"), result("b", "intruder"), result("c", "m2")]),
                 transaction=not db.dialect.batch_in_one_statement)
    assert stored == [True, False, True]
    assert statuses("a", "b", "c") == {"a": JobStatus.SUCCESS, "b": JobStatus.RUNNING, "c": JobStatus.SUCCESS}
    assert run(lambda: statements.store_results([result("a", "m1")])) == [False]  # finished is final


def test_stalled_jobs_are_found_then_requeued_or_failed_only_while_running(app):
    run(lambda: statements.insert_jobs([new_job("again", attempts_allowed=2, timeout_seconds=1),
                                        new_job("spent", attempts_allowed=1, timeout_seconds=1),
                                        new_job("fresh", attempts_allowed=1, timeout_seconds=60)]))
    claim("m1", now_ms=1_000_000)  # deadlines: 1,001,000 and 1,060,000
    assert [j.id for j in run(lambda: statements.find_stalled(1_000_500, 10))] == []
    stalled = run(lambda: statements.find_stalled(1_002_000, 10))
    assert [(j.id, j.attempt, j.attempts_allowed, j.machine_id) for j in stalled] == [
        ("again", 1, 2, "m1"), ("spent", 1, 1, "m1")]
    by_id = {j.id: j.seq for j in stalled}
    when = dt.datetime(2026, 12, 1, 12, 0, 0)
    assert run(lambda: statements.requeue_stalled([by_id["again"]])) == 1
    assert run(lambda: statements.fail_stalled([by_id["spent"]], resulted_at=when)) == 1
    assert statuses("again", "spent", "fresh") == {"again": JobStatus.PENDING, "spent": JobStatus.FAILURE,
                                                   "fresh": JobStatus.RUNNING}
    # The fence: a row that is no longer running is left alone.
    assert run(lambda: statements.requeue_stalled([by_id["again"], by_id["spent"]])) == 0
    assert run(lambda: statements.fail_stalled([by_id["again"]], resulted_at=when)) == 0
    assert run(lambda: statements.requeue_stalled([])) == 0


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_stalled_row_locked_by_one_sweep_is_skipped_by_another(app):
    """FOR UPDATE SKIP LOCKED: two transactions reading stalled jobs never take the same row."""
    import threading

    run(lambda: statements.insert_jobs([new_job("a", timeout_seconds=1), new_job("b", timeout_seconds=1)]))
    claim("m1", now_ms=0)
    holding, release, seen = threading.Event(), threading.Event(), {}

    def first():
        def tx():
            seen["first"] = [j.id for j in statements.find_stalled(10_000, 1)]
            holding.set()
            release.wait(10)

        run(tx)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert holding.wait(10)
        seen["second"] = [j.id for j in run(lambda: statements.find_stalled(10_000, 10))]
    finally:
        release.set()
        thread.join(10)
    assert seen == {"first": ["a"], "second": ["b"]}
