"""Job admin (list, show, re-run) and machines as workers (issue 14), on SQLite and on PostgreSQL."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from app import db
from app.engine import admin, heartbeats, machines
from app.engine.maintenance import Prune, StallSilentMachines
from app.engine.states import EventType, JobStatus
from app.models import Event, Job, Machine, Worker, utcnow
from cp_helpers import Api


def jobs_page(api, cluster, expect=200, **query):
    r = api.client.get(f"/clusters/{cluster['id']}/jobs", headers=api.mgmt, query_string=query)
    assert r.status_code == expect, r.json
    return r.json


def listed(api, cluster, **query):
    return [j["id"] for j in jobs_page(api, cluster, **query)["jobs"]]


def set_job(job_id, **fields):
    db.unit_of_work(lambda: Job.update(**fields).where(Job.id == job_id).execute())


def fail(api, cluster, job_id, machine="machine-a"):
    """Claimed, then given up on (as the sweeper does when the attempts are spent)."""
    set_job(job_id, status=JobStatus.FAILURE, machine_id=machine, resulted_at=utcnow(), attempt=1,
            attempts_allowed=1, reason="stalled too many times")


# --- list -----------------------------------------------------------------------------------------

def test_list_filters_by_status_service_function_and_time(api):
    c = api.new_cluster()
    a1 = api.call(c, service="a", fn="f")
    a2 = api.call(c, service="a", fn="g")
    b1 = api.call(c, service="b", fn="f")
    [claimed] = api.claim(c, service="b", limit=1)
    assert claimed["id"] == b1
    b2 = api.call(c, service="b", fn="g")
    api.claim(c, service="b", limit=1)
    api.result(c, b2)
    fail(api, c, a2)
    cancelled = api.call(c, service="a", fn="f")
    set_job(cancelled, status=JobStatus.CANCELLED, reason="cancelled by test")

    assert listed(api, c) == [cancelled, b2, b1, a2, a1]  # newest first
    assert listed(api, c, status="pending") == [a1]
    assert listed(api, c, status="running") == [b1]
    assert listed(api, c, status="cancelled") == [cancelled]
    assert listed(api, c, status="failure,cancelled") == [cancelled, a2]  # a comma list...
    assert listed(api, c, status=["success", "pending"]) == [b2, a1]  # ...or repeated
    assert listed(api, c, service="a") == [cancelled, a2, a1]
    assert listed(api, c, service="a", function="f") == [cancelled, a1]
    assert listed(api, c, function="g") == [b2, a2]
    assert listed(api, c, status="pending", service="b") == []

    page = jobs_page(api, c, status="cancelled")
    assert page["next"] is None
    [row] = page["jobs"]
    assert (row["status"], row["reason"], row["service"], row["targetFn"]) == (
        "cancelled", "cancelled by test", "a", "f")

    old = utcnow() - dt.timedelta(hours=2)
    set_job(a1, created_at=old)
    set_job(a2, created_at=old + dt.timedelta(minutes=30))
    hour_ago = (utcnow() - dt.timedelta(hours=1)).isoformat() + "Z"
    assert listed(api, c, createdBefore=hour_ago) == [a2, a1]
    assert listed(api, c, createdAfter=hour_ago) == [cancelled, b2, b1]
    # An offset is honoured: the same instant written in another zone.
    in_tokyo = (utcnow() - dt.timedelta(hours=1)).replace(tzinfo=dt.timezone.utc).astimezone(
        dt.timezone(dt.timedelta(hours=9))).isoformat()
    assert listed(api, c, createdBefore=in_tokyo) == [a2, a1]
    between = (old + dt.timedelta(minutes=10)).isoformat()
    assert listed(api, c, createdAfter=between, createdBefore=hour_ago) == [a2]


def test_pages_follow_each_other_without_duplicates_or_gaps_while_jobs_are_created(api):
    c = api.new_cluster()
    first = [api.call(c) for _ in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = jobs_page(api, c, **query)
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        api.call(c)  # created between pages: newer than anything left to page through
        cursor = page["next"]
        if cursor is None:
            break
        assert not cursor.isdigit()  # an opaque token, not an offset or a raw seq
    assert seen == list(reversed(first)) and pages == 3
    # A fresh first page sees the jobs created meanwhile.
    assert len(listed(api, c, limit=500)) == 7 + pages


def test_pages_over_several_statuses_merge_in_order(api):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(6)]
    for job_id in ids[::2]:
        set_job(job_id, status=JobStatus.CANCELLED)
    fail(api, c, ids[1])
    wanted = [ids[4], ids[2], ids[1], ids[0]]
    got, cursor = [], None
    for _ in range(3):
        page = jobs_page(api, c, status="cancelled,failure", limit=3, **({"cursor": cursor} if cursor else {}))
        got += [j["id"] for j in page["jobs"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert got == wanted


def test_a_job_met_by_two_status_walks_is_listed_once(api, monkeypatch):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(3)]
    set_job(ids[1], status=JobStatus.CANCELLED)
    walk = admin.page_query

    def moved(cluster_id, status, **filters):  # ids[1] was still pending when the first walk passed it
        rows = list(walk(cluster_id, None, **filters))
        return rows if status == "pending" else [r for r in rows if r.id == ids[1]]

    monkeypatch.setattr(admin, "page_query", moved)
    assert listed(api, c, status="pending,cancelled") == list(reversed(ids))


@pytest.mark.parametrize("query, field", [
    ({"status": "done"}, "status"),
    ({"status": "pending,stalled"}, "status"),
    ({"cursor": "not-a-token"}, "cursor"),
    ({"cursor": admin.encode_cursor(5)[:-2] + "!!"}, "cursor"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"createdAfter": "yesterday"}, "createdAfter"),
    ({"createdBefore": "2026-13-01"}, "createdBefore"),
    ({"offset": "10"}, "offset"),
])
def test_bad_list_input_answers_400_naming_the_field(api, query, field):
    c = api.new_cluster()
    body = jobs_page(api, c, expect=400, **query)
    assert field in str(body["error"]), body


def test_cursor_tokens_round_trip_and_refuse_forgeries():
    assert admin.decode_cursor(admin.encode_cursor(12345)) == 12345
    for bad in ("", "MTIz", admin.encode_cursor(0)):  # "123" without the prefix; seq 0
        with pytest.raises(Exception) as info:
            admin.decode_cursor(bad)
        assert info.value.details == {"field": "cursor"}


def test_another_clusters_jobs_are_never_listed_or_shown_or_rerun(api):
    mine, theirs = api.new_cluster(), api.new_cluster()
    my_job = api.call(mine)
    their_job = api.call(theirs)
    fail(api, theirs, their_job)
    assert listed(api, mine) == [my_job]
    assert listed(api, mine, status="failure") == []
    for method, path in (("get", f"/clusters/{mine['id']}/jobs/{their_job}"),
                         ("post", f"/clusters/{mine['id']}/jobs/{their_job}/rerun")):
        r = getattr(api.client, method)(path, headers=api.mgmt)
        assert r.status_code == 404 and r.json["error"]["code"] == "job_not_found"
    assert api.client.get(f"/clusters/{theirs['id']}/jobs/{their_job}", headers=api.mgmt).status_code == 200
    assert jobs_page(api, {"id": "cluster-missing"}, expect=404)["error"]["code"] == "cluster_not_found"
    # The cluster secret is not the management secret.
    r = api.client.get(f"/clusters/{mine['id']}/jobs", headers=api.headers(mine))
    assert r.status_code == 401


# --- show -----------------------------------------------------------------------------------------

def test_show_has_the_whole_job_and_its_activity(api):
    c = api.new_cluster()
    job_id = api.call(c, service="s", fn="f", args="kgEC", timeoutSeconds=30, retryCountOnStall=2)
    api.claim(c, service="s", machine="m1")
    api.result(c, job_id, machine="m1", value="oA==")
    r = api.client.get(f"/clusters/{c['id']}/jobs/{job_id}", headers=api.mgmt)
    assert r.status_code == 200, r.json
    job = r.json
    assert (job["id"], job["service"], job["targetFn"], job["targetArgs"]) == (job_id, "s", "f", "kgEC")
    assert (job["status"], job["wireStatus"], job["resultType"], job["result"]) == (
        "success", "success", "resolution", "oA==")
    assert (job["attempt"], job["attemptsAllowed"], job["machineId"], job["timeoutSeconds"]) == (1, 3, "m1", 30)
    assert job["createdAt"] and job["claimedAt"] and job["resultedAt"] and job["reason"] is None
    assert job["runAt"] is None and job["queueDeadline"] is None and job["backoff"] is None
    types = [e["type"] for e in job["activity"]["events"]]
    assert types == [EventType.JOB_RESULTED, EventType.JOB_RECEIVED, EventType.JOB_CREATED]
    assert all(e["jobId"] == job_id for e in job["activity"]["events"])


def test_show_gives_deadlines_and_backoff_as_stored(api):
    c = api.new_cluster()
    job_id = api.call(c)
    at = dt.datetime(2030, 1, 2, 3, 4, 5)
    ms = int(at.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    set_job(job_id, status=JobStatus.SCHEDULED, run_at_ms=ms, queue_deadline_ms=ms + 1000, call_deadline_ms=ms + 2000,
            backoff_attempts=4, backoff_initial_ms=100, backoff_factor=2.0, backoff_max_ms=5000, backoff_jitter=0.1)
    job = api.client.get(f"/clusters/{c['id']}/jobs/{job_id}", headers=api.mgmt).json
    assert (job["status"], job["wireStatus"]) == ("scheduled", "pending")
    assert (job["runAt"], job["queueDeadline"], job["callDeadline"]) == (
        "2030-01-02T03:04:05Z", "2030-01-02T03:04:06Z", "2030-01-02T03:04:07Z")
    assert job["backoff"] == {"attempts": 4, "initialMs": 100, "factor": 2.0, "maxMs": 5000, "jitter": 0.1}


# --- re-run ---------------------------------------------------------------------------------------

def rerun(api, cluster, job_id, expect=200):
    r = api.client.post(f"/clusters/{cluster['id']}/jobs/{job_id}/rerun", headers=api.mgmt)
    assert r.status_code == expect, r.json
    return r.json


def test_a_failed_job_reruns_as_a_new_attempt_and_succeeds(api):
    c = api.new_cluster()
    job_id = api.call(c, retryCountOnStall=0)
    api.claim(c, machine="m1")
    fail(api, c, job_id, machine="m1")
    assert api.status(c, job_id)["status"] == "failure"
    job = rerun(api, c, job_id)
    assert (job["status"], job["attempt"], job["attemptsAllowed"], job["machineId"], job["reason"]) == (
        "pending", 1, 2, None, None)
    assert job["resultedAt"] is None and job["claimedAt"] is None and job["result"] is None
    assert api.status(c, job_id)["status"] == "pending"
    [claimed] = api.claim(c, machine="m2")
    assert claimed["id"] == job_id
    api.result(c, job_id, machine="m2", value="oQ==")
    done = api.status(c, job_id)
    assert (done["status"], done["result"]) == ("success", "oQ==")
    row = db.unit_of_work(lambda: Job.get(Job.id == job_id))
    assert (row.attempt, row.attempts_allowed) == (2, 2)
    [event] = [e for e in api.activity(c) if e["type"] == EventType.JOB_RERUN]
    assert event["jobId"] == job_id and event["meta"]["previousStatus"] == "failure"
    assert rerun(api, c, job_id, expect=409)["error"]["details"] == {"jobId": job_id, "status": "success"}


def test_a_cancelled_job_reruns_keeping_its_unused_attempts_and_loses_its_old_deadlines(api):
    c = api.new_cluster()
    job_id = api.call(c, retryCountOnStall=3)
    past = 1_000_000
    set_job(job_id, status=JobStatus.CANCELLED, reason="cancelled by a caller", result="packed", result_type="rejection",
            resulted_at=utcnow(), queue_deadline_ms=past, call_deadline_ms=past, run_at_ms=past)
    assert api.status(c, job_id)["state"] == "cancelled"
    job = rerun(api, c, job_id)
    assert (job["status"], job["attempt"], job["attemptsAllowed"], job["resultType"], job["reason"]) == (
        "pending", 0, 4, None, None)
    assert job["queueDeadline"] is None and job["callDeadline"] is None and job["runAt"] is None
    assert [j["id"] for j in api.claim(c)] == [job_id]
    api.result(c, job_id)
    assert api.status(c, job_id)["status"] == "success"


def test_an_operators_cancel_is_in_the_activity_before_the_answer_so_a_rerun_comes_after_it(api):
    """Events wait in a per-process buffer for up to half a second; an operator's cancel and the
    re-run that follows may be served by two processes, and whoever reads the activity after the
    answer must find the cancel there (the order shown is when each happened: test_activity_order)."""
    c = api.new_cluster()
    job_id = api.call(c)
    r = api.client.post(f"/clusters/{c['id']}/jobs/{job_id}/cancel", json={"reason": "not needed"}, headers=api.mgmt)
    assert r.status_code == 200, r.json
    logged = db.unit_of_work(lambda: [e.type for e in Event.select().where(Event.job_id == job_id).order_by(Event.seq)])
    assert logged == [EventType.JOB_CREATED, EventType.JOB_CANCELLED]  # written, not only buffered
    rerun(api, c, job_id)
    logged = db.unit_of_work(lambda: [e.type for e in Event.select().where(Event.job_id == job_id).order_by(Event.seq)])
    assert logged == [EventType.JOB_CREATED, EventType.JOB_CANCELLED, EventType.JOB_RERUN]


def test_a_rerun_wakes_a_parked_poll(api):
    import threading

    c = api.new_cluster()
    job_id = api.call(c)
    fail(api, c, job_id)
    got = []
    poller = threading.Thread(target=lambda: got.append(api.claim(c, machine="m2", ttl=10_000)))
    poller.start()
    import time

    time.sleep(0.5)  # parked (SQLite short-polls; PostgreSQL waits on NOTIFY, woken in-process too)
    started = time.monotonic()
    assert rerun(api, c, job_id)["status"] == "pending"  # as the re-run left it, though claimed at once
    poller.join(15)
    assert [j["id"] for j in got[0]] == [job_id] and time.monotonic() - started < 5


@pytest.mark.parametrize("status", ["pending", "running", "success", "scheduled"])
def test_rerun_of_a_job_in_any_other_state_is_409_with_its_status(api, status):
    c = api.new_cluster()
    job_id = api.call(c)
    if status == "running":
        api.claim(c)
    elif status == "success":
        api.claim(c)
        api.result(c, job_id)
    elif status == "scheduled":
        set_job(job_id, status=JobStatus.SCHEDULED)
    body = rerun(api, c, job_id, expect=409)
    assert body["error"]["code"] == "job_not_rerunnable"
    assert body["error"]["details"]["status"] == status
    assert api.status(c, job_id)["state"] == status  # untouched
    assert rerun(api, c, "no-such-job", expect=404)["error"]["code"] == "job_not_found"


# --- machines are workers -------------------------------------------------------------------------

def machine_ids(cluster):
    machines.flush()  # what this process noted is written before it is read
    return db.unit_of_work(lambda: sorted(m.id for m in Machine.select().where(Machine.cluster_id == cluster["id"])))


def details(api, cluster):
    r = api.client.get(f"/clusters/{cluster['id']}", headers=api.mgmt)
    assert r.status_code == 200, r.json
    return r.json


def test_callers_are_not_machines(api):
    c = api.new_cluster()
    for n in range(5):  # as the published SDK calls: every request carries its x-machine-id
        h = api.headers(c, f"caller-{n}")
        r = api.client.post("/jobs", headers=h, json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="})
        job_id = r.json["id"]
        assert api.client.get(f"/jobs/{job_id}?ttl=0", headers=h).status_code == 200
        assert api.client.post("/batch-jobs-status-request", headers=h,
                               json={"jobIds": [job_id], "ttl": 0}).status_code == 200
        assert api.client.get("/services/svc", headers=h).status_code == 200
    assert machine_ids(c) == []
    view = details(api, c)
    assert (view["machines"], view["workers"], view["counts"]["machines"]) == ([], [], 0)
    api.claim(c, machine="worker-1")
    assert machine_ids(c) == ["worker-1"]
    assert [m["id"] for m in details(api, c)["machines"]] == ["worker-1"]


def test_a_callers_id_is_not_looked_up_again_until_half_the_machine_timeout_has_passed(api, monkeypatch):
    c = api.new_cluster()
    updates = []  # the touches written to the database
    real = heartbeats._write
    monkeypatch.setattr(heartbeats, "_write", lambda batch: updates.extend(batch[heartbeats.TOUCH]) or real(batch))
    timeout = 4.0  # touches at most every 1 s; a caller is asked again after 2 s

    def touch(machine):
        machines.touch(c["id"], machine, ip="127.0.0.1", machine_timeout_seconds=timeout)
        machines.flush()

    touch("caller-x")
    assert len(updates) == 1  # it found no machine
    time.sleep(1.1)
    touch("caller-x")
    assert len(updates) == 1  # past the touch interval, but known to be no machine
    time.sleep(1.0)
    touch("caller-x")
    assert len(updates) == 2  # half the timeout passed: asked again
    machines.ping(c["id"], "caller-x", ip="127.0.0.1", deployment_id=None, machine_timeout_seconds=timeout)
    time.sleep(1.1)
    touch("caller-x")  # a machine now: refreshed at the touch interval again
    assert len(updates) == 3
    assert machine_ids(c) == ["caller-x"]


def test_a_machine_row_left_by_a_caller_is_not_listed(api):
    c = api.new_cluster()
    now = utcnow()  # as an older release wrote one for every caller
    db.unit_of_work(lambda: Machine.insert(cluster_id=c["id"], id="old-caller", status="active", first_seen_at=now,
                                           last_ping_at=now).execute())
    api.claim(c, machine="worker-1")
    view = details(api, c)
    assert [m["id"] for m in view["machines"]] == ["worker-1"] and view["counts"]["machines"] == 1


def test_the_cluster_view_shows_live_workers_per_service_and_drops_them_when_they_stop(make_app):
    api = Api(make_app(machine_timeout_seconds=30))
    c = api.new_cluster()
    for machine in ("m1", "m2"):
        api.claim(c, service="alpha", machine=machine)
    api.claim(c, service="beta", machine="m1")
    view = details(api, c)
    assert [(w["service"], w["liveWorkers"]) for w in view["workers"]] == [("alpha", 2), ("beta", 1)]
    assert all(w["lastPollAt"].endswith("Z") for w in view["workers"])
    assert sorted(m["id"] for m in view["machines"]) == ["m1", "m2"]
    r = api.client.get("/services/alpha", headers=api.headers(c, None))
    assert r.status_code == 200 and r.json["service"] == "alpha" and r.json["liveWorkers"] == 2

    # m2 stopped polling alpha 40 s ago (past the machine timeout); m1 polls on.
    db.unit_of_work(lambda: Worker.update(last_poll_at=utcnow() - dt.timedelta(seconds=40))
                    .where((Worker.machine_id == "m2") & (Worker.cluster_id == c["id"])).execute())
    assert [(w["service"], w["liveWorkers"]) for w in details(api, c)["workers"]] == [("alpha", 1), ("beta", 1)]
    db.unit_of_work(lambda: Worker.update(last_poll_at=utcnow() - dt.timedelta(seconds=40))
                    .where(Worker.cluster_id == c["id"]).execute())
    assert details(api, c)["workers"] == []
    gone = api.client.get("/services/alpha", headers=api.headers(c, None)).json
    assert gone["liveWorkers"] == 0 and gone["lastPollAt"] is not None
    never = api.client.get("/services/nobody", headers=api.headers(c, None)).json
    assert never == {"service": "nobody", "liveWorkers": 0, "lastPollAt": None}
    # Polling again makes it live again (this process's throttle lets the write through after it).
    machines._workers.forget((c["id"], "alpha", "m1"))
    api.claim(c, service="alpha", machine="m1")
    assert [(w["service"], w["liveWorkers"]) for w in details(api, c)["workers"]] == [("alpha", 1)]


def test_a_worker_that_stops_polling_is_stalled_even_while_callers_with_ids_keep_calling(make_app):
    api = Api(make_app(machine_timeout_seconds=30))
    c = api.new_cluster()
    job_id = api.call(c, retryCountOnStall=1, timeoutSeconds=300)
    api.claim(c, machine="w")
    db.unit_of_work(lambda: Machine.update(last_ping_at=utcnow() - dt.timedelta(seconds=60))
                    .where(Machine.id == "w").execute())
    api.status(c, job_id)  # a caller (machine-a) asks: it is not a machine, and "w" stays silent
    assert StallSilentMachines(machine_timeout=30).run_once(utcnow()) == {"stalledMachines": 1}
    assert machine_ids(c) == ["w"]


def test_prune_removes_workers_not_polled_for_the_retention_with_their_machine(api):
    c = api.new_cluster()
    for machine, service in (("m1", "old"), ("m1", "new"), ("m2", "old"), ("m3", "old")):
        api.claim(c, service=service, machine=machine)
    long_ago = utcnow() - dt.timedelta(days=2)
    db.unit_of_work(lambda: Worker.update(last_poll_at=long_ago).where(Worker.service == "old").execute())
    # m1 went silent, polled "new" a day ago (within the retention) and stays; m2 is gone for good;
    # m3 is alive: its stale row stays while the machine lives (it is not counted live).
    db.unit_of_work(lambda: Machine.update(status="inactive").where(Machine.id.in_(["m1", "m2"])).execute())
    db.unit_of_work(lambda: Machine.update(last_ping_at=long_ago).where(Machine.id == "m2").execute())
    Prune(retention_days=1).run_once(utcnow())
    left = db.unit_of_work(lambda: sorted((w.machine_id, w.service) for w in Worker.select().where(
        Worker.cluster_id == c["id"])))
    assert left == [("m1", "new"), ("m3", "old")]
    assert machine_ids(c) == ["m1", "m3"]  # m2 went too, after its worker rows


# --- served by indexes (PostgreSQL's planner) -----------------------------------------------------

@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("status, service, index", [
    ("failure", None, "jobs_cluster_status"),
    (None, "svc", "jobs_service_recent"),
    (None, None, "jobs_cluster_recent"),
])
def test_each_list_walk_is_an_index_scan(api, status, service, index):
    c = api.new_cluster()
    for _ in range(3):
        api.call(c)
    query = admin.page_query(c["id"], status, service=service, function=None, created_after=None,
                             created_before=None, before=10**9, limit=51)
    sql, params = query.sql()

    def plan():
        db.execute("SET LOCAL enable_seqscan = off")  # so a tiny table shows which index the query can use
        db.execute("SET LOCAL enable_bitmapscan = off")
        return "\n".join(row[0] for row in db.execute("EXPLAIN " + sql, params).fetchall())

    text = db.unit_of_work(plan)
    assert f"Index Scan Backward using {index}" in text, text
    assert "Sort" not in text, text
