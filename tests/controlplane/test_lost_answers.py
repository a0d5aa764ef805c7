"""A connection lost after the database committed but before it answered (audit L6): a statement
that may have committed runs again only if running it twice is harmless. A claim is never run
again (it would take a second batch that nobody receives); a create run again finds its own row
and counts it as created (not a 500)."""
from __future__ import annotations

from contextlib import contextmanager

import peewee
import pytest

from app import db
from app.engine import jobs, statements
from app.models import Job, utcnow

LOST = "server closed the connection unexpectedly"


class _AnswerLost:
    """Wraps a function: the first call does its work, then the connection is 'lost'."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        result = self.fn(*args, **kwargs)
        if self.calls == 1:
            raise peewee.OperationalError(LOST)
        return result


def test_an_autocommit_statement_is_run_again_only_if_idempotent(app):
    once = _AnswerLost(lambda: "done")
    with pytest.raises(peewee.OperationalError):
        db.unit_of_work(once, transaction=False)
    assert once.calls == 1
    twice = _AnswerLost(lambda: "done")
    assert db.unit_of_work(twice, transaction=False, idempotent=True) == "done"
    assert twice.calls == 2


def test_a_transaction_that_failed_before_commit_is_retried(app):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) == 1:
            raise peewee.OperationalError(LOST)
        return "done"

    assert db.unit_of_work(fn) == "done" and len(calls) == 2


def test_a_commit_without_answer_is_not_retried_unless_idempotent(app, monkeypatch):
    real = db.dialect.transaction

    @contextmanager
    def commit_lost(database):
        with real(database):
            yield
        raise peewee.OperationalError(LOST)  # committed, then the answer was lost

    monkeypatch.setattr(db.dialect, "transaction", commit_lost)
    calls = []
    with pytest.raises(peewee.OperationalError):
        db.unit_of_work(lambda: calls.append(1))
    assert len(calls) == 1


def test_a_claim_whose_answer_was_lost_is_not_run_again(api, monkeypatch):
    cluster = api.new_cluster()
    first, second = api.call(cluster), api.call(cluster)
    lost = _AnswerLost(statements.claim_jobs)
    monkeypatch.setattr(statements, "claim_jobs", lost)
    r = api.client.post("/jobs-request", headers=api.headers(cluster),
                        json={"service": "svc", "limit": 1, "ttl": 0, "functions": [{"name": "fn"}]})
    assert r.status_code == 503, r.json
    assert lost.calls == 1
    # The second job was not claimed for nobody: the next poll gets it.
    monkeypatch.undo()
    assert [j["id"] for j in api.claim(cluster)] == [second]
    assert api.status(cluster, first)["status"] == "running"  # recovered by its timeout, as any lost claim


def test_a_create_whose_answer_was_lost_counts_as_created(api, monkeypatch):
    cluster = api.new_cluster()
    lost = _AnswerLost(statements.insert_jobs)
    monkeypatch.setattr(statements, "insert_jobs", lost)
    r = api.client.post("/jobs", headers=api.headers(cluster),
                        json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="})
    assert r.status_code == 201, r.json
    assert lost.calls == 2
    monkeypatch.undo()
    assert [j["id"] for j in api.claim(cluster)] == [r.json["id"]]  # one job, the one answered


def test_only_a_row_with_the_same_content_counts_as_written_before(api):
    cluster = api.new_cluster()
    job_id = api.call(cluster, args="kQE=")
    with db.connection():
        row = Job.get((Job.cluster_id == cluster["id"]) & (Job.id == job_id))

    def new(args: str) -> statements.NewJob:
        return statements.NewJob(
            cluster_id=row.cluster_id, job_id=row.id, service=row.service, target_fn=row.target_fn,
            target_args=args, cache_key=row.cache_key, attempts_allowed=row.attempts_allowed,
            timeout_seconds=row.timeout_seconds, created_at=row.created_at, deployment_id=row.deployment_id,
            predictive_retries=row.predictive_retries)

    assert jobs._insert_batch([new("kQE=")]) == [True]
    assert jobs._insert_batch([new("kQI=")]) == [False]  # another call under the same id: not ours
    assert jobs._insert_batch([statements.NewJob(
        cluster_id=row.cluster_id, job_id=row.id, service=row.service, target_fn=row.target_fn, target_args="kQE=",
        cache_key=None, attempts_allowed=row.attempts_allowed, timeout_seconds=row.timeout_seconds,
        created_at=utcnow(), deployment_id=None, predictive_retries=False)]) == [False]
