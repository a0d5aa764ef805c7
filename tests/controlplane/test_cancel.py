"""Cancel (issue 14): a call in flight ends `cancelled` at once, with a reason and a packed
rejection; a finished one is left alone; waiting callers learn it at once; on both databases."""
from __future__ import annotations

import threading
import time

import base64

import msgpack

import pytest

from app import db
from app.models import Job
from cp_helpers import Api


def unpack(result: str):
    return msgpack.unpackb(base64.b64decode(result))


def cancel(api: Api, cluster, job_id, reason=None, expect=200):
    body = {} if reason is None else {"reason": reason}
    r = api.client.post(f"/jobs/{job_id}/cancel", headers=api.headers(cluster), json=body)
    assert r.status_code == expect, r.json
    return r.json


def operator_cancel(api: Api, cluster_id, job_id, reason=None, expect=200):
    body = {} if reason is None else {"reason": reason}
    r = api.client.post(f"/clusters/{cluster_id}/jobs/{job_id}/cancel", headers=api.mgmt, json=body)
    assert r.status_code == expect, r.json
    return r.json


def test_a_pending_job_is_cancelled_at_once_with_its_reason_and_never_claimed(api):
    c = api.new_cluster()
    job = api.call(c, fn="slow")
    row = cancel(api, c, job, reason="user pressed stop")
    assert row["state"] == "cancelled"
    assert row["reason"] == "cancelled by the caller: user pressed stop"
    # What the published SDK sees: success + a rejection it throws with this message.
    assert row["status"] == "success" and row["resultType"] == "rejection"
    error = unpack(row["result"])
    assert error["name"] == "DifferentialCancelledError" and error["code"] == "CANCELLED"
    assert job in error["message"] and "svc.slow" in error["message"] and "user pressed stop" in error["message"]
    assert api.status(c, job) == row
    assert api.claim(c) == []
    events = [e for e in api.activity(c) if e["jobId"] == job and e["type"] == "jobCancelled"]
    assert len(events) == 1 and events[0]["meta"]["reason"] == row["reason"]


def test_a_running_job_is_cancelled_and_its_late_result_is_fenced(api):
    c = api.new_cluster()
    job = api.call(c)
    assert [j["id"] for j in api.claim(c, machine="m1")] == [job]
    row = cancel(api, c, job)
    assert row["state"] == "cancelled" and row["reason"] == "cancelled by the caller"
    api.result(c, job, machine="m1", value="oA==")  # still 204 for the published SDK's worker
    after = api.status(c, job)
    assert after["state"] == "cancelled" and after["result"] == row["result"]
    fenced = [e for e in api.activity(c) if e["jobId"] == job and e["type"] == "jobResultedButNotPersisted"]
    assert fenced and fenced[0]["meta"]["reason"] == "job is cancelled"


def test_cancelling_a_finished_job_is_a_409_naming_its_status_and_changes_nothing(api):
    c = api.new_cluster()
    job = api.call(c)
    api.claim(c)
    api.result(c, job, value="oA==")
    r = api.client.post(f"/jobs/{job}/cancel", headers=api.headers(c), json={})
    assert r.status_code == 409
    assert r.json["error"]["code"] == "job_finished" and "success" in r.json["error"]["message"]
    assert r.json["error"]["details"] == {"jobId": job, "status": "success"}
    row = api.status(c, job)
    assert row["state"] == "success" and row["resultType"] == "resolution" and row["reason"] is None


def test_cancelling_twice_is_idempotent(api):
    c = api.new_cluster()
    job = api.call(c)
    first = cancel(api, c, job, reason="first")
    assert cancel(api, c, job, reason="second") == first  # the first reason stays
    assert len([e for e in api.activity(c) if e["type"] == "jobCancelled"]) == 1


def test_an_operator_cancels_through_the_management_api(api):
    c = api.new_cluster()
    job = api.call(c)
    row = operator_cancel(api, c["id"], job, reason="maintenance window")
    assert row["state"] == "cancelled" and row["reason"] == "cancelled by an operator: maintenance window"
    assert operator_cancel(api, "no-such-cluster", job, expect=404)["error"]["code"] == "cluster_not_found"
    assert operator_cancel(api, c["id"], "no-such-job", expect=404)["error"]["code"] == "job_not_found"
    r = api.client.post(f"/clusters/{c['id']}/jobs/{job}/cancel", headers=api.headers(c), json={})
    assert r.status_code == 401  # a cluster secret is not the management secret


def test_a_clusters_secret_cannot_cancel_another_clusters_job(api):
    mine, theirs = api.new_cluster(), api.new_cluster()
    job = api.call(theirs)
    assert cancel(api, mine, job, expect=404)["error"]["code"] == "job_not_found"
    assert api.status(theirs, job)["state"] == "pending"


@pytest.mark.parametrize("body, field", [
    ({"reason": "x" * 501}, "reason"),
    ({"reason": 5}, "reason"),
    ({"why": "typo"}, "why"),
])
def test_bad_cancel_bodies_are_400_naming_the_field(api, body, field):
    c = api.new_cluster()
    job = api.call(c)
    for r in (api.client.post(f"/jobs/{job}/cancel", headers=api.headers(c), json=body),
              api.client.post(f"/clusters/{c['id']}/jobs/{job}/cancel", headers=api.mgmt, json=body)):
        assert r.status_code == 400, r.json
        assert field in str(r.json["error"])
    assert api.status(c, job)["state"] == "pending"


def test_a_body_is_optional(api):
    c = api.new_cluster()
    job = api.call(c)
    r = api.client.post(f"/jobs/{job}/cancel", headers=api.headers(c))
    assert r.status_code == 200 and r.json["state"] == "cancelled"


def _waiting(fn):
    out = {}

    def run():
        started = time.monotonic()
        out["answer"] = fn()
        out["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_every_waiting_caller_learns_at_once(app):
    api = Api(app)
    c = api.new_cluster()
    job = api.call(c)
    api.claim(c)
    # Each waiter on its own client (a test client is not thread-safe), both with a 20 s ttl.
    single = Api(app)
    batch = Api(app)
    one, got_one = _waiting(lambda: single.status(c, job, ttl=20000))
    many, got_many = _waiting(lambda: batch.client.post(
        "/batch-jobs-status-request", headers=batch.headers(c, None), json={"jobIds": [job], "ttl": 20000}).json)
    time.sleep(0.5)  # both are parked
    assert one.is_alive() and many.is_alive()
    cancel(api, c, job)
    one.join(10)
    many.join(10)
    assert got_one["answer"]["state"] == "cancelled" and got_one["seconds"] < 5
    assert [r["state"] for r in got_many["answer"]] == ["cancelled"] and got_many["seconds"] < 5


def test_cancels_racing_results_leave_exactly_one_outcome_each(app):
    # The fence: whichever commits first wins, and the loser changes nothing.
    api = Api(app)
    c = api.new_cluster()
    jobs = [api.call(c) for _ in range(20)]
    assert len(api.claim(c, limit=20)) == 20
    answers = {}

    def results():
        worker = Api(app)
        for job in jobs:
            worker.result(c, job, value="oA==")

    def cancels():
        caller = Api(app)
        for job in reversed(jobs):
            r = caller.client.post(f"/jobs/{job}/cancel", headers=caller.headers(c), json={})
            answers[job] = r.status_code

    threads = [threading.Thread(target=results), threading.Thread(target=cancels)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for job in jobs:
        row = db.unit_of_work(lambda job=job: Job.get(Job.id == job))
        if answers[job] == 200:
            assert row.status == "cancelled" and row.reason == "cancelled by the caller", job
            assert unpack(row.result)["code"] == "CANCELLED"
        else:
            assert answers[job] == 409
            assert row.status == "success" and row.reason is None and row.result == "oA==", job
