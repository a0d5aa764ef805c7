"""Deadlines (issue 14): a queue deadline ends a call nobody claimed, a call deadline ends the whole
call across attempts; both with a reason and a packed rejection, on both databases. Maintenance
runs with an injected `now` (no sleeps)."""
from __future__ import annotations

import base64
import datetime as dt
import threading
import time

import msgpack
import pytest

from app import db
from app.engine import jobs as engine_jobs, statements
from app.engine.maintenance import ExpireDeadlines, Maintainer, RecoverStalledJobs, epoch_ms
from app.models import Job
from cp_helpers import Api


def unpack(result: str):
    return msgpack.unpackb(base64.b64decode(result))


def row(job_id):
    return db.unit_of_work(lambda: Job.get(Job.id == job_id))


def later(seconds: float) -> dt.datetime:
    """The database's clock, this far ahead: the deadlines are stamped on it."""
    return statements.database_now() + dt.timedelta(seconds=seconds)


def test_deadlines_are_stored_as_epoch_ms_on_the_database_clock(api):
    c = api.new_cluster()
    before = epoch_ms(statements.database_now())
    queue_only = api.call(c, queueDeadlineSeconds=30)
    both = api.call(c, queueDeadlineSeconds=30, callDeadlineSeconds=10.5)
    call_only = api.call(c, callDeadlineSeconds=60)
    plain = api.call(c)
    after = epoch_ms(statements.database_now())
    r = row(queue_only)
    assert before + 30_000 <= r.queue_deadline_ms <= after + 30_000 and r.call_deadline_ms is None
    r = row(both)  # the queue deadline is the earlier of the two
    assert before + 10_500 <= r.call_deadline_ms <= after + 10_500 and r.queue_deadline_ms == r.call_deadline_ms
    r = row(call_only)
    assert r.queue_deadline_ms == r.call_deadline_ms and before + 60_000 <= r.call_deadline_ms <= after + 60_000
    r = row(plain)
    assert r.queue_deadline_ms is None and r.call_deadline_ms is None


def test_plain_calls_still_go_through_the_group_commit_and_deadline_calls_do_not(api, monkeypatch):
    submitted = []
    real = engine_jobs._creates.submit
    monkeypatch.setattr(engine_jobs._creates, "submit", lambda job: submitted.append(job.job_id) or real(job))
    c = api.new_cluster()
    plain = api.call(c)
    api.call(c, queueDeadlineSeconds=5)
    assert submitted == [plain]


def test_a_queue_deadline_ends_an_unserved_call_with_its_reason(api):
    c = api.new_cluster()
    job = api.call(c, service="nobody-serves-this", queueDeadlineSeconds=30)
    task = ExpireDeadlines()
    assert task.run_once(later(29)) == {"expired": 0}
    assert api.status(c, job)["state"] == "pending"
    assert task.run_once(later(31)) == {"expired": 1}
    answer = api.status(c, job)
    reason = "no machine of service 'nobody-serves-this' claimed this call within its 30 s queue deadline"
    assert answer["state"] == "failure" and answer["reason"] == reason
    assert answer["status"] == "success" and answer["resultType"] == "rejection"  # the published SDK throws it
    error = unpack(answer["result"])
    assert error["name"] == "DifferentialDeadlineError" and error["code"] == "QUEUE_DEADLINE"
    assert reason in error["message"] and job in error["message"]
    # It never runs: a machine that shows up afterwards gets nothing.
    assert api.claim(c, service="nobody-serves-this") == []
    assert task.run_once(later(60)) == {"expired": 0}
    events = [e for e in api.activity(c) if e["type"] == "jobDeadlineExceeded"]
    assert [(e["jobId"], e["meta"]["code"], e["meta"]["reason"]) for e in events] == [(job, "QUEUE_DEADLINE", reason)]


def test_a_claimed_call_is_past_its_queue_deadline(api):
    c = api.new_cluster()
    job = api.call(c, queueDeadlineSeconds=1)
    api.claim(c)
    assert ExpireDeadlines().run_once(later(30)) == {"expired": 0}
    assert row(job).status == "running" and row(job).queue_deadline_ms is None


def test_the_waiting_caller_learns_at_once(app):
    api, waiter = Api(app), Api(app)
    c = api.new_cluster()
    job = api.call(c, queueDeadlineSeconds=5)
    out = {}

    def wait():
        started = time.monotonic()
        out["row"] = waiter.status(c, job, ttl=20000)
        out["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()
    ExpireDeadlines().run_once(later(6))
    thread.join(10)
    assert out["row"]["state"] == "failure" and out["seconds"] < 5


def test_a_call_deadline_fails_a_running_call_with_attempts_left_and_fences_its_late_result(api):
    c = api.new_cluster()
    job = api.call(c, callDeadlineSeconds=10, timeoutSeconds=300, retryCountOnStall=5)
    api.claim(c, machine="m1")
    r = row(job)
    assert r.deadline_ms == r.call_deadline_ms  # the claim ended the attempt at the call deadline
    recover = RecoverStalledJobs()
    assert recover.run_once(later(9)) == {"retried": 0, "failed": 0}
    assert recover.run_once(later(11)) == {"retried": 0, "failed": 1}
    answer = api.status(c, job)
    assert answer["state"] == "failure" and answer["reason"] == "the call's deadline passed before it finished"
    assert unpack(answer["result"])["code"] == "CALL_DEADLINE"
    api.result(c, job, machine="m1", value="oA==")
    assert api.status(c, job) == answer
    assert api.claim(c, machine="m2") == []
    fenced = [e for e in api.activity(c) if e["type"] == "jobResultedButNotPersisted"]
    assert fenced and fenced[0]["meta"]["reason"] == "job is failure"


def test_a_call_deadline_ends_a_call_put_back_after_a_stall(api):
    c = api.new_cluster()
    job = api.call(c, callDeadlineSeconds=60, timeoutSeconds=5)
    api.claim(c)
    assert RecoverStalledJobs().run_once(later(6)) == {"retried": 1, "failed": 0}
    assert row(job).status == "pending"
    assert ExpireDeadlines().run_once(later(30)) == {"expired": 0}
    assert ExpireDeadlines().run_once(later(61)) == {"expired": 1}
    answer = api.status(c, job)
    assert answer["reason"] == "the call's deadline passed before it finished"
    assert unpack(answer["result"])["code"] == "CALL_DEADLINE"


def test_stall_failures_without_a_deadline_keep_no_result(api):
    c = api.new_cluster()
    job = api.call(c, timeoutSeconds=5, retryCountOnStall=0)
    api.claim(c)
    assert RecoverStalledJobs().run_once(later(6)) == {"retried": 0, "failed": 1}
    answer = api.status(c, job)
    assert answer["status"] == "failure" and answer["result"] is None and answer["reason"] is None


def test_expire_deadlines_is_a_standard_task(app):
    names = [t.name for t in Maintainer.for_settings(interval=1, machine_timeout=60, retention_days=7).tasks]
    assert "expire_deadlines" in names


@pytest.mark.parametrize("field", ["queueDeadlineSeconds", "callDeadlineSeconds"])
@pytest.mark.parametrize("value", [0, -1, "10", True, None, 30 * 86400 + 1, 1e400])
def test_bad_deadlines_are_400_naming_the_field(api, field, value):
    c = api.new_cluster()
    body = {"service": "svc", "targetFn": "fn", "targetArgs": "kA==", "callConfig": {field: value}}
    r = api.client.post("/jobs", headers=api.headers(c), json=body) if value != 1e400 else api.client.post(
        "/jobs", headers={**api.headers(c), "Content-Type": "application/json"},
        data=f'{{"service": "svc", "targetFn": "fn", "targetArgs": "kA==", "callConfig": {{"{field}": 1e400}}}}')
    assert r.status_code == 400, r.json
    assert field in str(r.json["error"])


def test_the_expiry_read_is_served_by_the_waiting_deadline_index(app, backend):
    if backend != "postgres":
        pytest.skip("the plan is PostgreSQL's")

    def plan():
        db.execute("SET LOCAL enable_seqscan = off")
        rows = db.execute("EXPLAIN " + statements._EXPIRED, (epoch_ms(statements.database_now()), 500)).fetchall()
        return "\n".join(r[0] for r in rows)

    assert "jobs_waiting_deadline" in db.unit_of_work(plan)
