"""The engine rules (README, "How jobs behave"; docs/state-machine.md), on SQLite and on PostgreSQL."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from app import db
from app.engine import machines
from app.engine.maintenance import Maintainer, Prune, RefreshStatistics
from app.models import Job, Machine, Service, utcnow
from cp_helpers import Api


def maintainer(machine_timeout=60.0):
    return Maintainer.for_settings(interval=0.2, machine_timeout=machine_timeout, retention_days=7)


def later(seconds: float) -> dt.datetime:
    """A `now` for the maintenance tasks, this far ahead of the clock: time passes without a sleep."""
    return utcnow() + dt.timedelta(seconds=seconds)


def went_silent(cluster, machine_id, seconds_ago=10.0):
    """Set up a machine that has said nothing for a while (its last ping that long ago)."""
    db.unit_of_work(lambda: Machine.update(last_ping_at=utcnow() - dt.timedelta(seconds=seconds_ago))
                    .where((Machine.cluster_id == cluster["id"]) & (Machine.id == machine_id)).execute())


def job_row(api, job_id):
    return db.unit_of_work(lambda: Job.get(Job.id == job_id))


def test_create_claim_result_roundtrip(api):
    c = api.new_cluster()
    job_id = api.call(c, args="kqNBZGED")
    claimed = api.claim(c)
    assert claimed == [{"id": job_id, "targetFn": "fn", "targetArgs": "kqNBZGED"}]
    assert api.status(c, job_id)["status"] == "running"
    api.result(c, job_id, value="o2hp")
    assert api.status(c, job_id) == {"id": job_id, "status": "success", "result": "o2hp",
                                     "resultType": "resolution", "service": "svc",
                                     "state": "success", "reason": None}
    assert api.claim(c) == []


def test_claims_are_fifo_and_bounded_by_limit(api):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(5)]
    first = api.claim(c, limit=2)
    second = api.claim(c, limit=10)
    assert [j["id"] for j in first] == ids[:2]
    assert [j["id"] for j in second] == ids[2:]


def test_claims_only_the_named_service(api):
    c = api.new_cluster()
    other = api.call(c, service="other")
    assert api.claim(c, service="svc") == []
    assert [j["id"] for j in api.claim(c, service="other")] == [other]


def test_result_from_another_machine_is_fenced_and_recorded(api):
    c = api.new_cluster()
    job_id = api.call(c)
    api.claim(c, machine="holder")
    api.result(c, job_id, machine="intruder", value="bad")  # still 204
    assert api.status(c, job_id)["status"] == "running"
    api.result(c, job_id, machine="holder", value="good")
    assert api.status(c, job_id)["result"] == "good"
    api.result(c, job_id, machine="holder", value="late duplicate")
    assert api.status(c, job_id)["result"] == "good"
    dropped = [e for e in api.activity(c) if e["type"] == "jobResultedButNotPersisted"]
    assert [e["meta"]["reason"] for e in reversed(dropped)] == [
        "attempt is held by another machine (holder)", "job is success"]


def test_result_for_a_pending_job_is_fenced(api):
    c = api.new_cluster()
    job_id = api.call(c)
    api.result(c, job_id)
    assert api.status(c, job_id)["status"] == "pending"


def test_timed_out_attempt_is_retried_then_fails_when_attempts_are_spent(api):
    c = api.new_cluster()
    job_id = api.call(c, retryCountOnStall=1, timeoutSeconds=1)
    m = maintainer()
    assert [j["id"] for j in api.claim(c, machine="m1")] == [job_id]
    assert m.tick(now=later(0.5)).get("recover_stalled_jobs") == {"retried": 0, "failed": 0}  # not yet
    assert m.tick(now=later(2))["recover_stalled_jobs"]["retried"] == 1
    row = job_row(api, job_id)
    assert (row.status, row.attempt, row.machine_id) == ("pending", 1, None)
    assert [j["id"] for j in api.claim(c, machine="m2")] == [job_id]
    assert job_row(api, job_id).attempt == 2  # counted once per claim, never on recovery
    assert m.tick(now=later(2))["recover_stalled_jobs"]["failed"] == 1
    status = api.status(c, job_id)
    assert (status["status"], status["result"], status["resultType"]) == ("failure", None, None)
    api.result(c, job_id, machine="m2")  # the late result of the last attempt is fenced off
    assert api.status(c, job_id)["status"] == "failure"
    types = [e["type"] for e in api.activity(c)]
    assert types.count("jobStalled") == 2 and "jobRecovered" in types and "jobStalledTooManyTimes" in types


def test_retry_count_zero_means_one_attempt(api):
    c = api.new_cluster()
    job_id = api.call(c, retryCountOnStall=0, timeoutSeconds=1)
    api.claim(c)
    assert maintainer().tick(now=later(2))["recover_stalled_jobs"]["failed"] == 1
    assert api.status(c, job_id)["status"] == "failure"


def test_silent_machine_is_stalled_and_its_job_goes_to_another(make_app):
    api = Api(make_app(machine_timeout_seconds=0.5))
    c = api.new_cluster()
    job_id = api.call(c, retryCountOnStall=2, timeoutSeconds=300)
    api.claim(c, machine="doomed")
    m = maintainer(machine_timeout=0.5)
    api.claim(c, machine="alive")  # keeps "alive" fresh; "doomed" says nothing more
    went_silent(c, "doomed")
    outcome = m.tick(now=utcnow())
    assert outcome["recover_stalled_jobs"]["retried"] == 1
    stalled = {e["machineId"] for e in api.activity(c) if e["type"] == "machineStalled"}
    assert "doomed" in stalled and "alive" not in stalled
    assert [j["id"] for j in api.claim(c, machine="alive")] == [job_id]
    api.result(c, job_id, machine="doomed", value="late")  # fenced: the attempt moved on
    api.result(c, job_id, machine="alive", value="fine")
    assert api.status(c, job_id)["result"] == "fine"
    assert job_row(api, job_id).attempt == 2


def test_any_request_with_a_machine_id_is_a_ping(make_app):
    api = Api(make_app(machine_timeout_seconds=0.6))
    c = api.new_cluster()
    job_id = api.call(c, timeoutSeconds=300)
    api.claim(c, machine="busy")
    m = maintainer(machine_timeout=0.6)
    went_silent(c, "busy")  # its claim was long ago...
    machines._pings.forget((c["id"], "busy"))  # ...so this process's ping throttle has let it go
    # Busy with the job, not polling, but its other requests count.
    api.client.get(f"/jobs/{job_id}?ttl=0", headers=api.headers(c, "busy"))
    m.tick(now=utcnow())
    assert "busy" not in {e["machineId"] for e in api.activity(c) if e["type"] == "machineStalled"}
    assert api.status(c, job_id)["status"] == "running"


def test_cache_returns_fresh_resolution_and_joins_in_flight_calls(api):
    c = api.new_cluster()
    cache = {"key": "k1", "ttlSeconds": 60}
    first = api.call(c, cache=cache)
    assert api.call(c, cache=cache) == first  # joins the pending call
    api.claim(c)
    assert api.call(c, cache=cache) == first  # joins the running call
    api.result(c, first)
    assert api.call(c, cache=cache) == first  # served from cache
    assert api.call(c, cache={"key": "k2", "ttlSeconds": 60}) != first
    assert api.call(c, fn="other", cache=cache) != first
    assert api.call(c) != first  # no cache config, no caching


def test_cache_skips_rejections_and_expired_entries(api):
    c = api.new_cluster()
    rejected = api.call(c, cache={"key": "r", "ttlSeconds": 60})
    api.claim(c)
    api.result(c, rejected, kind="rejection")
    assert api.call(c, cache={"key": "r", "ttlSeconds": 60}) != rejected
    expired = api.call(c, cache={"key": "e", "ttlSeconds": 1})
    api.claim(c)
    api.result(c, expired)
    resolved_long_ago = utcnow() - dt.timedelta(seconds=2)  # more than the ttl ago
    db.unit_of_work(lambda: Job.update(resulted_at=resolved_long_ago).where(Job.id == expired).execute())
    assert api.call(c, cache={"key": "e", "ttlSeconds": 1}) != expired


def test_execution_id_is_idempotent_within_a_cluster_only(api):
    a, b = api.new_cluster(), api.new_cluster()
    assert api.call(a, executionId="order-42") == "order-42"
    assert api.call(a, executionId="order-42") == "order-42"
    assert api.call(b, executionId="order-42") == "order-42"
    assert len(api.claim(a)) == 1 and len(api.claim(b)) == 1
    r = api.client.post("/jobs", headers=api.headers(a), json={
        "service": "svc", "targetFn": "different", "targetArgs": "kA==", "callConfig": {"executionId": "order-42"}})
    assert r.status_code == 409 and r.json["error"]["code"] == "execution_id_conflict"


def test_status_long_poll_wakes_on_result(api):
    c = api.new_cluster()
    job_id = api.call(c)
    api.claim(c)
    timer = threading.Timer(0.3, lambda: api.result(c, job_id))
    timer.start()
    started = time.monotonic()
    status = api.status(c, job_id, ttl=10000)
    elapsed = time.monotonic() - started
    timer.join()
    assert status["status"] == "success"
    assert elapsed < 5, "the poll should wake on the result, not run out its ttl"


def test_status_long_poll_answers_current_status_at_ttl(api):
    c = api.new_cluster()
    job_id = api.call(c)
    started = time.monotonic()
    assert api.status(c, job_id, ttl=300)["status"] == "pending"
    assert 0.25 <= time.monotonic() - started < 5


def test_claim_long_poll_wakes_on_new_job(api):
    c = api.new_cluster()
    created = []
    timer = threading.Timer(0.3, lambda: created.append(api.call(c)))
    timer.start()
    started = time.monotonic()
    claimed = api.claim(c, ttl=10000)
    timer.join()
    assert [j["id"] for j in claimed] == created
    assert time.monotonic() - started < 5


def test_batch_status_returns_finished_jobs_as_soon_as_any_finishes(api):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(3)]
    api.claim(c)
    timer = threading.Timer(0.3, lambda: api.result(c, ids[1]))
    timer.start()
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(c),
                        json={"jobIds": ids + ["unknown-id"], "ttl": 10000})
    timer.join()
    assert r.status_code == 200
    assert [(row["id"], row["status"]) for row in r.json] == [(ids[1], "success")]
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(c),
                        json={"jobIds": [ids[0], ids[2], "unknown-id"], "ttl": 100})
    assert [(row["id"], row["status"]) for row in r.json] == [(ids[0], "running"), (ids[2], "running")]


def test_batch_status_accepts_more_than_a_thousand_ids(api):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(3)]
    wanted = ids + [f"missing-{i}" for i in range(1500)]
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(c), json={"jobIds": wanted, "ttl": 0})
    assert r.status_code == 200 and sorted(row["id"] for row in r.json) == sorted(ids)


def test_service_definition_is_stored_from_worker_polls(api):
    c = api.new_cluster()
    functions = [{"name": "greet", "schema": '{"type":"object"}'}, {"name": "fail"}]
    r = api.client.post("/jobs-request", headers=api.headers(c),
                        json={"service": "greeter", "limit": 1, "ttl": 0, "functions": functions})
    assert r.status_code == 200
    r = api.client.get(f"/clusters/{c['id']}/service/greeter", headers=api.mgmt)
    assert r.status_code == 200 and r.json["definition"] == {"name": "greeter", "functions": functions}
    # A poll without a function list does not wipe what is known.
    api.client.post("/jobs-request", headers=api.headers(c), json={"service": "greeter", "ttl": 0})
    details = api.client.get(f"/clusters/{c['id']}", headers=api.mgmt).json
    assert details["definitions"] == [{"name": "greeter", "functions": functions}]
    assert [m["id"] for m in details["machines"]] == ["machine-a"]


def test_client_metrics_are_stored(api):
    c = api.new_cluster()
    r = api.client.post("/metrics", headers=api.headers(c), json={"events": [
        {"timestamp": "2026-11-27T22:50:46.769Z", "type": "functionInvocation",
         "tags": {"function": "greet", "service": "greeter"}, "intFields": {"roundTripTime": 105}},
        {"type": "machineResourceProbe", "timestamp": "2026-11-27T22:50:52.628Z",
         "intFields": {"cpuPercentage": 99.49, "memPercentage": 6.33, "memUsageByte": 74874880}}]})
    assert r.status_code == 204
    stored = {e["type"]: e for e in api.activity(c)}
    assert stored["functionInvocation"]["service"] == "greeter"
    assert stored["functionInvocation"]["meta"]["roundTripTime"] == 105
    assert stored["machineResourceProbe"]["meta"]["cpuPercentage"] == 99.49
    assert stored["machineResourceProbe"]["machineId"] == "machine-a"


def test_retention_prunes_old_finished_jobs_only(api):
    c = api.new_cluster()
    old, fresh, running = api.call(c), api.call(c), api.call(c)
    api.claim(c)
    api.result(c, old)
    api.result(c, fresh)
    long_ago = dt.datetime(2020, 1, 1)
    db.unit_of_work(lambda: Job.update(resulted_at=long_ago).where(Job.id == old).execute())
    assert Prune(retention_days=7).run_once(now=utcnow())["pruned"] >= 1
    remaining = db.unit_of_work(lambda: sorted(j.id for j in Job.select(Job.id)))
    assert remaining == sorted([fresh, running])


def test_maintenance_lease_is_held_by_one_maintainer_at_a_time(api):
    first, second = maintainer().lease, maintainer().lease
    now = utcnow()
    assert first.take(now) is True
    assert second.take(now) is False
    assert first.take(now) is True  # renewal
    first.release()
    assert second.take(now) is True
    assert first.take(now) is False


def test_a_newer_batch_poll_from_the_same_machine_releases_the_parked_one(api):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(2)]
    answers = {}

    def poll(name, job_ids, machine):
        r = api.client.post("/batch-jobs-status-request", headers=api.headers(c, machine),
                            json={"jobIds": job_ids, "ttl": 10000})
        answers[name] = (r.status_code, r.json, time.monotonic())

    first = threading.Thread(target=poll, args=("first", ids[:1], "caller"))
    other = threading.Thread(target=poll, args=("other", ids[:1], "another-caller"))
    first.start(), other.start()
    time.sleep(0.5)
    started = time.monotonic()
    second = threading.Thread(target=poll, args=("second", ids, "caller"))  # a superset, as the SDK sends
    second.start()
    first.join(timeout=5)
    assert answers["first"][:2] == (200, []) and answers["first"][2] - started < 2
    assert "other" not in answers  # another machine's poll is not affected
    api.claim(c)
    api.result(c, ids[0])
    second.join(timeout=5)
    other.join(timeout=5)
    assert [r["id"] for r in answers["second"][1]] == [ids[0]]
    assert [r["id"] for r in answers["other"][1]] == [ids[0]]


def test_a_big_batch_poll_rereads_what_fired_and_gathers_results_finishing_together(api):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(60)]
    api.claim(c, limit=100)

    def finish_two():
        api.result(c, ids[10])
        api.result(c, ids[50])

    timer = threading.Timer(0.3, finish_two)
    timer.start()
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(c), json={"jobIds": ids, "ttl": 10000})
    timer.join()
    assert r.status_code == 200
    got = {row["id"] for row in r.json}
    assert {ids[10]} <= got <= {ids[10], ids[50]}  # ids[50] too when it finished within the linger
    assert all(row["status"] == "success" for row in r.json)
    rest = api.client.post("/batch-jobs-status-request", headers=api.headers(c),
                           json={"jobIds": [i for i in ids if i not in got], "ttl": 1000}).json
    assert {row["id"] for row in rest if row["status"] == "success"} == {ids[10], ids[50]} - got


def test_a_superseding_poll_inherits_only_what_is_still_unfinished():
    from app.engine.batch_poll import _ParkedPolls
    from app.engine.signals import Hub, job_topic

    hub, parked, key = Hub(), _ParkedPolls(), ("c1", "m1")
    with hub.subscribe_jobs("c1", frozenset({"a", "b"})) as old_sub:
        old = parked.park(key, frozenset({"a", "b"}), old_sub)
        old.unfinished = frozenset({"a", "b"})  # what its read found
        hub.wake([job_topic("c1", "a"), job_topic("c2", "b")])  # a finishes; b of another cluster does not count
        assert old_sub.wait(0) == {job_topic("c1", "a")}  # consumed by the old poll, still remembered
        with hub.subscribe_jobs("c1", frozenset({"a", "b", "c"})) as new_sub:
            new = parked.park(key, frozenset({"a", "b", "c"}), new_sub)
            assert old.superseded.is_set()
            assert new.inherited == {"b"}  # a must be read again; c was never known
            with hub.subscribe_jobs("c1", frozenset({"z"})) as unrelated_sub:
                unrelated = parked.park(key, frozenset({"z"}), unrelated_sub)  # not a superset: no effect
                assert not new.superseded.is_set() and unrelated.inherited == frozenset()
                parked.leave(key, unrelated)
            parked.leave(key, new)
        parked.leave(key, old)


def test_a_poll_without_ids_that_finished_since_still_supersedes_and_disjoint_polls_never_do():
    """The published SDK drops the ids it has seen finish from its next poll; our SDK's concurrent
    polls carry disjoint ids, and must not release each other (they would poll in a loop)."""
    from app.engine.batch_poll import _ParkedPolls
    from app.engine.signals import Hub, job_topic

    hub, parked, key = Hub(), _ParkedPolls(), ("c1", "m1")
    with hub.subscribe_jobs("c1", frozenset({"a", "b"})) as old_sub:
        old = parked.park(key, frozenset({"a", "b"}), old_sub)
        with hub.subscribe_jobs("c1", frozenset({"x"})) as disjoint_sub:
            disjoint = parked.park(key, frozenset({"x"}), disjoint_sub)
            assert not old.superseded.is_set()  # a and b are not known finished: old still waits for them
            old.unfinished = frozenset({"a", "b"})
            hub.wake([job_topic("c1", "a")])  # a finishes; the client sees it and polls b and c
            with hub.subscribe_jobs("c1", frozenset({"b", "c"})) as new_sub:
                new = parked.park(key, frozenset({"b", "c"}), new_sub)
                assert old.superseded.is_set() and new.inherited == {"b"}
                assert not disjoint.superseded.is_set()
                parked.leave(key, new)
            parked.leave(key, disjoint)
        parked.leave(key, old)
    assert parked._polls == {}  # superseded polls left the list when they were superseded


def test_an_unread_parked_poll_is_superseded_only_by_a_superset():
    from app.engine.batch_poll import _ParkedPolls
    from app.engine.signals import Hub, job_topic

    hub, parked, key = Hub(), _ParkedPolls(), ("c1", "m1")
    with hub.subscribe_jobs("c1", frozenset({"a", "b"})) as old_sub:
        old = parked.park(key, frozenset({"a", "b"}), old_sub)  # its first read has not happened
        hub.wake([job_topic("c1", "a")])
        with hub.subscribe_jobs("c1", frozenset({"b"})) as new_sub:
            new = parked.park(key, frozenset({"b"}), new_sub)
            assert not old.superseded.is_set()  # it cannot vouch that a is all it lacks
            parked.leave(key, new)
        parked.leave(key, old)


@pytest.mark.parametrize("backend", ["postgres"])
def test_maintenance_analyzes_a_table_that_grew_so_status_reads_look_ids_up_by_index(api):
    """A fresh jobs table keeps the planner's empty-table estimate until analyzed; the status
    read then filtered every job of the cluster instead of looking its ids up."""
    from app.engine import statements

    c = api.new_cluster()
    now = dt.datetime.utcnow()
    new = [statements.NewJob(cluster_id=c["id"], job_id=f"job-{i:05d}", service="svc", target_fn="f",
                             target_args="kQ==", cache_key=None, attempts_allowed=1, timeout_seconds=60,
                             created_at=now, deployment_id=None, predictive_retries=False) for i in range(3000)]
    assert all(db.unit_of_work(lambda: statements.insert_jobs(new), transaction=False))
    deadline = time.monotonic() + 10  # the statistics counters reach pg_stat_user_tables within a second or so
    analyzed = []
    task = RefreshStatistics()
    while "jobs" not in analyzed and time.monotonic() < deadline:
        analyzed = task.analyze_stale()
        time.sleep(0.2)
    assert "jobs" in analyzed
    assert task.analyze_stale() == []  # nothing changed since
    assert task.run_once(now=utcnow()) == {"analyzed": 0}
    plan = "\n".join(r[0] for r in db.unit_of_work(lambda: db.execute(
        "EXPLAIN " + statements._STATUS + "id = ANY(%s)", (c["id"], ["job-00001", "job-00002"])).fetchall()))
    assert "jobs_cluster_recent" not in plan and "Seq Scan" not in plan, plan


def test_a_poll_for_fewer_ids_than_a_parked_one_from_its_machine_answers_at_once():
    """A stale poll that got its turn after a wider one: the wider one already waits for its ids."""
    from app.engine.batch_poll import _ParkedPolls
    from app.engine.signals import Hub

    hub, parked, key = Hub(), _ParkedPolls(), ("c1", "m1")
    with hub.subscribe_jobs("c1", frozenset({"a", "b"})) as wide_sub:
        wide = parked.park(key, frozenset({"a", "b"}), wide_sub)
        with hub.subscribe_jobs("c1", frozenset({"a"})) as stale_sub:
            stale = parked.park(key, frozenset({"a"}), stale_sub)
            assert stale.superseded.is_set() and not wide.superseded.is_set()
            parked.leave(key, stale)
        with hub.subscribe_jobs("c1", frozenset({"a", "b"})) as same_sub:  # the same ids: the newer one wins
            same = parked.park(key, frozenset({"a", "b"}), same_sub)
            assert wide.superseded.is_set() and not same.superseded.is_set()
            parked.leave(key, same)
        parked.leave(key, wide)
    assert parked._polls == {}


def test_polls_without_a_machine_id_never_release_each_other(api):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(2)]
    answers = {}

    def poll(name, job_ids):
        r = api.client.post("/batch-jobs-status-request", headers=api.headers(c, machine=None),
                            json={"jobIds": job_ids, "ttl": 1500})
        answers[name] = (r.status_code, r.json, time.monotonic())

    started = time.monotonic()
    narrow = threading.Thread(target=poll, args=("narrow", ids[:1]))
    narrow.start()
    time.sleep(0.3)
    poll("wide", ids)  # a superset from another caller without x-machine-id
    narrow.join(timeout=5)
    assert answers["narrow"][0] == 200 and [r["status"] for r in answers["narrow"][1]] == ["pending"]
    assert answers["narrow"][2] - started > 1.2  # it waited its ttl out instead of answering [] at once


def test_a_poll_superseded_while_it_queues_for_a_read_slot_does_not_read(api, monkeypatch):
    """Under the SDK storm many polls queue for the status-read slots; the superseded ones must
    give up without reading all their ids."""
    from app.engine import jobs as engine_jobs, statements

    c = api.new_cluster()
    ids = [api.call(c) for _ in range(3)]
    reads = []
    real_read = statements.read_statuses
    monkeypatch.setattr(statements, "read_statuses", lambda cid, job_ids: reads.append(set(job_ids)) or real_read(cid, job_ids))
    answers = {}

    def poll(name, job_ids):
        r = api.client.post("/batch-jobs-status-request", headers=api.headers(c, "caller"),
                            json={"jobIds": job_ids, "ttl": 10000})
        answers[name] = (r.status_code, [row["id"] for row in r.json])

    slots = engine_jobs._status_slots
    held = 0
    while slots.acquire(blocking=False):  # every read slot taken, as in a storm
        held += 1
    try:
        first = threading.Thread(target=poll, args=("first", ids[:2]))
        first.start()
        time.sleep(0.3)  # parked, queued for a slot
        second = threading.Thread(target=poll, args=("second", ids))
        second.start()
        time.sleep(0.3)  # supersedes the first, queued too
        assert "first" not in answers
    finally:
        for _ in range(held):
            slots.release()
    first.join(timeout=5)
    assert answers["first"] == (200, [])
    assert set(ids[:2]) not in reads  # the superseded poll never read its ids
    api.claim(c, limit=3)
    api.result(c, ids[2])
    second.join(timeout=5)
    assert answers["second"] == (200, [ids[2]])


def test_begin_shutdown_answers_long_polls_at_once(api):
    c = api.new_cluster()
    job_id = api.call(c)
    answers = []
    poll = threading.Thread(target=lambda: answers.append(api.status(c, job_id, ttl=10000)))
    poll.start()
    time.sleep(0.3)  # parked
    started = time.monotonic()
    api.app.extensions["differential"].begin_shutdown()
    poll.join(timeout=5)
    assert [a["status"] for a in answers] == ["pending"] and time.monotonic() - started < 2


def test_cluster_details_cap_machines_and_definitions_newest_first_and_count_them(api):
    c = api.new_cluster()
    for n in range(5):
        api.claim(c, service=f"svc{n}", machine=f"m{n}")
    base = utcnow()
    for n in range(5):  # m4 spoke last, svc4 was polled last
        stamp = base - dt.timedelta(seconds=60 - n)
        db.unit_of_work(lambda n=n, stamp=stamp: Machine.update(last_ping_at=stamp)
                        .where((Machine.cluster_id == c["id"]) & (Machine.id == f"m{n}")).execute())
        db.unit_of_work(lambda n=n, stamp=stamp: Service.update(updated_at=stamp)
                        .where((Service.cluster_id == c["id"]) & (Service.name == f"svc{n}")).execute())
    r = api.client.get(f"/clusters/{c['id']}?limit=2", headers=api.mgmt)
    assert r.status_code == 200
    assert [m["id"] for m in r.json["machines"]] == ["m4", "m3"]
    assert [d["name"] for d in r.json["definitions"]] == ["svc4", "svc3"]
    assert (r.json["limit"], r.json["counts"]) == (2, {"machines": 5, "definitions": 5})
    everything = api.client.get(f"/clusters/{c['id']}", headers=api.mgmt).json
    assert len(everything["machines"]) == len(everything["definitions"]) == 5 and everything["limit"] == 100


def test_creates_with_execution_ids_share_the_group_commit_and_join_one_call(api):
    """Creates that carry an executionId (every Python SDK call) are batched like plain ones; those
    naming one executionId at once make one job, which exactly one of them created."""
    from app.engine import jobs

    c = api.new_cluster()
    items0 = jobs._creates.items
    answers = [None] * 40
    start = threading.Barrier(40)

    def create(i):
        start.wait(timeout=10)
        execution_id = "shared-call" if i % 4 == 0 else f"own-call-{i}"
        r = api.client.post("/jobs", headers=api.headers(c), json={
            "service": "svc", "targetFn": "fn", "targetArgs": "kA==", "callConfig": {"executionId": execution_id}})
        answers[i] = (r.status_code, r.json["id"])

    threads = [threading.Thread(target=create, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(a is not None and a[0] == 201 for a in answers), answers
    assert [a[1] for a in answers] == ["shared-call" if i % 4 == 0 else f"own-call-{i}" for i in range(40)]
    assert jobs._creates.items - items0 == 40  # every create went through the group commit
    claimed = sorted(j["id"] for j in api.claim(c, limit=100))
    assert claimed == sorted({"shared-call", *(f"own-call-{i}" for i in range(40) if i % 4)})
    created = [e for e in api.activity(c) if e.get("type") == "jobCreated" and e.get("jobId") == "shared-call"]
    joined = [e for e in api.activity(c) if e.get("type") == "jobJoined" and e.get("jobId") == "shared-call"]
    assert len(created) == 1 and len(joined) == 9, (created, joined)
