"""Admission of big request bodies (app/api/admission.py), alone and on the batch status route, and the
fair sharing between clusters under it (app/engine/fairness.py: poll budget, round-robin slots)."""
from __future__ import annotations

import contextlib
import io
import json
import threading
import time

import pytest

from app.api import jobs as jobs_api
from app.api.admission import BigBodyAdmission
from app.api.routing import ROUTES
from app.engine import jobs as engine_jobs, statements
from app.engine.fairness import PollBudget, PollLimits
from app.fair_slots import FairSlots
from cp_helpers import Api
from support.waiting import wait_until


def _enter_in_thread(adm, length, got, name):
    """Take a place in line now (in this thread, so the order is known), wait for the turn in another."""
    ticket = adm.enter(length)

    def wait():
        ticket.wait()
        got.append((name, ticket))

    t = threading.Thread(target=wait)
    t.start()
    return t


def test_small_bodies_pass_and_big_ones_take_turns_first_come_first_served():
    adm = BigBodyAdmission(threshold_bytes=100, slots=1, max_waiting=10, max_wait_seconds=10)
    small = adm.enter(99)
    assert not small.big  # a small body never takes a slot
    small.wait()
    first = adm.enter(100)
    first.wait()  # the free slot: no waiting
    got = []
    waiting = [_enter_in_thread(adm, 5000, got, name) for name in ("second", "third")]
    time.sleep(0.1)
    assert got == [] and adm.waiting == 2  # the only slot is taken
    small.release()
    first.release()
    first.release()  # a second release must not free a second slot
    waiting[0].join(timeout=5)
    assert [name for name, _ in got] == ["second"]
    # A newcomer cannot overtake "third", which waits for the slot "second" holds.
    late = []
    t_late = _enter_in_thread(adm, 5000, late, "late")
    got[0][1].release()
    waiting[1].join(timeout=5)
    assert [name for name, _ in got] == ["second", "third"] and late == []
    got[1][1].release()
    t_late.join(timeout=5)
    late[0][1].release()
    assert adm.free == 1 and adm.waiting == 0


def test_refused_when_too_many_wait():
    adm = BigBodyAdmission(threshold_bytes=1, slots=1, max_waiting=1, max_wait_seconds=10)
    held = adm.enter(10)
    waiter = adm.enter(10)
    assert adm.enter(10) is None  # one waits already: the route answers without parsing the body
    waiter.release()  # leaving the line before its turn frees the place, not a slot
    assert adm.waiting == 0 and adm.free == 0
    held.release()
    assert adm.free == 1


def test_a_request_that_cannot_get_a_slot_goes_ahead_after_the_wait():
    adm = BigBodyAdmission(threshold_bytes=1, slots=1, max_waiting=5, max_wait_seconds=0.2)
    held = adm.enter(10)
    ticket = adm.enter(10)
    started = time.monotonic()
    ticket.wait()
    assert 0.15 < time.monotonic() - started < 3
    assert not ticket.big and adm.waiting == 0  # it left the line: a release hands no slot to nobody
    ticket.release()
    held.release()
    assert adm.free == 1


def _big_poll_body(job_id):
    padding = [f"unknown-{i:04d}-{'x' * 20}" for i in range(100)]  # unknown ids are absent from answers
    return [job_id, *padding]


def test_a_parked_big_status_poll_gives_its_slot_back(api, monkeypatch):
    """With one slot, a second big poll is answered while the first is parked only if the first gave
    the slot back when it parked."""
    spec = next(r for r in ROUTES if r.path == "/batch-jobs-status-request")
    monkeypatch.setattr(spec, "admission", BigBodyAdmission(threshold_bytes=1000, slots=1, max_waiting=8,
                                                            max_wait_seconds=30))
    c = api.new_cluster()
    job = api.call(c)
    answers = {}

    def poll(machine, ttl):
        r = api.client.post("/batch-jobs-status-request", headers=api.headers(c, machine),
                            json={"jobIds": _big_poll_body(job), "ttl": ttl})
        answers[machine] = (r.status_code, [(row["id"], row["status"]) for row in r.json], time.monotonic())

    first = threading.Thread(target=poll, args=("m1", 15000))
    first.start()
    assert wait_until(lambda: spec.admission.free == 1)  # m1 parked and gave its slot back
    started = time.monotonic()
    poll("m2", 1000)  # admitted at once, parked, answered at its ttl
    assert answers["m2"][:2] == (200, [(job, "pending")])
    assert answers["m2"][2] - started < 4
    assert "m1" not in answers
    api.claim(c)
    api.result(c, job)
    first.join(timeout=10)
    assert answers["m1"][:2] == (200, [(job, "success")])
    assert spec.admission.free == 1


def test_a_refused_big_status_poll_is_answered_empty_at_once(api, monkeypatch):
    spec = next(r for r in ROUTES if r.path == "/batch-jobs-status-request")
    # No slot and no room to wait: every big poll is refused; small ones are not affected.
    monkeypatch.setattr(spec, "admission", BigBodyAdmission(threshold_bytes=1000, slots=0, max_waiting=0))
    c = api.new_cluster()
    job = api.call(c)
    api.claim(c)
    api.result(c, job)
    started = time.monotonic()
    body = json.dumps({"jobIds": _big_poll_body(job) * 40}).encode()  # > gunicorn's 64 KiB drain
    stream = io.BytesIO(body)
    r = api.client.post("/batch-jobs-status-request", headers={**api.headers(c), "Content-Type": "application/json",
                                                               "Content-Length": str(len(body))},
                        input_stream=stream)
    assert (r.status_code, r.json) == (200, [])  # the SDK asks again for ids missing from an answer
    assert time.monotonic() - started < 2
    # The body was read to its end all the same: gunicorn closes a kept-alive connection whose
    # unread body is over 64 KiB, and the published SDK dies on that.
    assert stream.tell() == len(body)
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(c), json={"jobIds": [job]})
    assert r.status_code == 200 and [row["status"] for row in r.json] == ["success"]
    # Credentials are still checked first.
    r = api.client.post("/batch-jobs-status-request", headers={"Authorization": "Basic nope"},
                        json={"jobIds": _big_poll_body(job)})
    assert r.status_code == 401


def test_a_big_poll_reads_its_body_while_it_waits_its_turn(api, monkeypatch):
    """A client sending slowly must not hold a slot: the body is read in line, parsed in turn."""
    spec = next(r for r in ROUTES if r.path == "/batch-jobs-status-request")
    adm = BigBodyAdmission(threshold_bytes=1000, slots=1, max_waiting=8, max_wait_seconds=30)
    monkeypatch.setattr(spec, "admission", adm)
    c = api.new_cluster()
    job = api.call(c)
    api.claim(c)
    api.result(c, job)
    held = adm.enter(5000)  # someone else's turn
    body = json.dumps({"jobIds": _big_poll_body(job)}).encode()
    stream = io.BytesIO(body)
    answers = []

    def poll():
        r = api.client.post("/batch-jobs-status-request", input_stream=stream,
                            headers={**api.headers(c), "Content-Type": "application/json",
                                     "Content-Length": str(len(body))})
        answers.append((r.status_code, [row["status"] for row in r.json]))

    t = threading.Thread(target=poll)
    t.start()
    assert wait_until(lambda: stream.tell() == len(body))  # read while it waits
    time.sleep(0.2)
    assert answers == [] and adm.waiting == 1
    held.release()
    t.join(timeout=10)
    assert answers == [(200, ["success"])]
    assert adm.free == 1


# --- fairness between clusters (audit H3, M5) -------------------------------------------------

def _waiters(slots, names_and_keys):
    """Queue one waiter per (name, key), in order; each records its name when granted, then holds
    its slot until `go[name]` is set."""
    order, go, threads = [], {}, []
    for name, key in names_and_keys:
        turn = slots.enter(key)
        assert turn is not None
        go[name] = threading.Event()

        def run(turn=turn, name=name):
            turn.wait()
            order.append(name)
            go[name].wait(10)
            turn.release()

        t = threading.Thread(target=run)
        t.start()
        threads.append(t)
    return order, go, threads


def test_fair_slots_serve_the_clusters_lines_in_turn():
    slots = FairSlots(1)
    assert slots.acquire(blocking=False)  # someone holds the only slot
    order, go, threads = _waiters(slots, [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("a4", "A"),
                                          ("c1", "C")])
    assert slots.waiting == 6
    slots.release()
    for i in range(6):  # one holder at a time: each is let go once it has the slot
        assert wait_until(lambda i=i: len(order) > i, timeout=5)
        go[order[i]].set()
    for t in threads:
        t.join(timeout=5)
    # A came first, so it goes first; B's and C's one waiter each wait one turn of A, not all four.
    assert order == ["a1", "b1", "c1", "a2", "a3", "a4"]
    assert slots.free == 1 and slots.waiting == 0


def test_fair_slots_bound_each_line_and_all_lines():
    slots = FairSlots(1, max_waiting=3, max_waiting_per_key=2)
    held = slots.enter("A")
    assert held.granted
    a = [slots.enter("A"), slots.enter("A")]
    assert slots.enter("A") is None  # A's line is full
    b = slots.enter("B")
    assert b is not None and slots.enter("C") is None  # all lines together are full
    a[0].release()  # leaving a line frees its place, not a slot
    assert slots.waiting == 2 and slots.free == 0
    assert not b.wait(0.05) and slots.waiting == 1  # gave up: out of the line
    held.release()
    assert a[1].wait(1)
    a[1].release()
    a[1].release()  # a second release must not free a second slot
    assert slots.free == 1 and slots.waiting == 0


def test_big_body_admission_takes_turns_between_clusters():
    """Audit H3: B's big poll waited 18.5 s behind A's 40 in one shared line."""
    current = {"cluster": "A"}
    adm = BigBodyAdmission(threshold_bytes=10, slots=1, max_waiting=64, max_waiting_per_cluster=3,
                           cluster=lambda: current["cluster"])
    held = adm.enter(100)
    a = [adm.enter(100) for _ in range(3)]
    assert adm.enter(100) is None  # A's own line is full: refused, though the process has room
    current["cluster"] = "B"
    b = adm.enter(100)
    assert b is not None and adm.waiting == 4
    held.release()
    assert a[0]._turn.granted and not b._turn.granted
    a[0].release()
    assert b._turn.granted and not a[1]._turn.granted  # B's turn comes before A's next two
    for ticket in (b, a[1], a[2]):
        ticket.release()
    assert adm.free == 1 and adm.waiting == 0


def test_status_read_slots_take_turns_between_clusters(api, monkeypatch):
    """A storm of one cluster's status reads must not hold up another cluster's read."""
    monkeypatch.setattr(engine_jobs, "_status_slots", FairSlots(1))
    a, b = api.new_cluster(), api.new_cluster()
    reads = []
    real_read = statements.read_statuses
    monkeypatch.setattr(statements, "read_statuses",
                        lambda cid, job_ids: reads.append(cid) or real_read(cid, job_ids))
    assert engine_jobs._status_slots.acquire(blocking=False)
    threads = []
    for cluster in [a] * 5 + [b]:
        t = threading.Thread(target=engine_jobs.statuses, args=(cluster["id"], ["x"]))
        t.start()
        threads.append(t)
        queued = len(threads)
        assert wait_until(lambda queued=queued: engine_jobs._status_slots.waiting == queued, timeout=5)
    engine_jobs._status_slots.release()
    for t in threads:
        t.join(timeout=10)
    assert reads == [a["id"], b["id"]] + [a["id"]] * 4


def _limits(**changes):
    base = dict(per_cluster=2, per_machine=1, total=4, pause_seconds=0.5, pauses_per_cluster=1)
    return PollLimits(**{**base, **changes})


def test_poll_budget_per_machine_per_cluster_and_in_all():
    budget, limits = PollBudget(), _limits(total=5, pauses_per_cluster=2)
    with contextlib.ExitStack() as stack:
        enter = lambda c, m, wait=20.0: stack.enter_context(budget.admit(c, m, wait, limits))  # noqa: E731
        assert enter("A", "m1") == 20.0
        assert enter("A", "m1") == 0.5  # m1's share is taken: a pause, from A's pool of two
        assert enter("A", "m1", wait=0.2) == 0.2  # never longer than asked
        assert enter("A", "m2") == 20.0
        assert enter("A", None) == 0.0  # A's share is taken, its pauses too
        assert enter("B", "m1") == 20.0  # another cluster is not affected
        assert budget.counts()["total"] == 5
        assert enter("C", "m1") == 0.0  # the process's share of threads is taken
    assert budget.counts() == {"total": 0, "clusters": {}, "machines": {}, "pausing": {}}


def test_poll_limits_keep_threads_for_short_requests():
    limits = PollLimits.for_threads(256, per_cluster=64, per_machine=16, reserve=32, pause_seconds=1.0)
    assert (limits.total, limits.pauses_per_cluster) == (224, 16)
    assert PollLimits.for_threads(8, per_cluster=64, per_machine=16, reserve=32, pause_seconds=1.0).total == 4


@pytest.fixture
def tight(make_app):
    """An app whose clusters may each hold one long poll, one per machine, with a 0.3 s pause."""
    return Api(make_app(long_polls_per_cluster=1, long_polls_per_machine=1, long_poll_pause_seconds=0.3))


def _in_thread(fn, *args):
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    return t, out


def _parked(cluster_id, n=1):
    return wait_until(lambda: jobs_api._POLLS.counts()["clusters"].get(cluster_id, 0) == n, timeout=5)


def test_a_poll_past_its_clusters_budget_answers_with_what_it_has(tight):
    api = tight
    a, b = api.new_cluster(), api.new_cluster()
    t, out = _in_thread(api.claim, a, "other", "m1", 10, 15000)  # A's one long poll
    assert _parked(a["id"])
    job = api.call(a)
    # Past A's budget: claims what there is without waiting...
    started = time.monotonic()
    assert [j["id"] for j in api.claim(a, machine="m2", ttl=15000)] == [job]
    # ...and with nothing to claim, answers [] after the pause, not the ttl.
    assert api.claim(a, machine="m2", ttl=15000) == []
    assert time.monotonic() - started < 3
    # The status of a job, and a batch poll: what they are now.
    assert api.status(a, job, ttl=15000)["status"] == "running"
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(a, "m3"), json={"jobIds": [job], "ttl": 15000})
    assert r.status_code == 200 and [row["status"] for row in r.json] == ["running"]
    assert time.monotonic() - started < 5
    # B's polls still wait their ttl (here: until B's job comes).
    tb, outb = _in_thread(api.claim, b, "svc", "m1", 10, 15000)
    assert _parked(b["id"])
    job_b = api.call(b)
    tb.join(timeout=5)
    assert [j["id"] for j in outb[0]] == [job_b]
    api.app.extensions["differential"].begin_shutdown()
    t.join(timeout=5)
    assert out == [[]]


def test_a_pause_past_the_budget_still_wakes_on_change(tight):
    """The pause is a short long poll: a job created during it is claimed at once."""
    api = tight
    a = api.new_cluster()
    t, out = _in_thread(api.claim, a, "other", "m1", 10, 15000)
    assert _parked(a["id"])
    started = time.monotonic()
    t2, out2 = _in_thread(api.claim, a, "svc", "m2", 10, 15000)
    assert wait_until(lambda: jobs_api._POLLS.counts()["pausing"].get(a["id"]) == 1, timeout=5)
    job = api.call(a)
    t2.join(timeout=5)
    assert [j["id"] for j in out2[0]] == [job] and time.monotonic() - started < 3
    api.app.extensions["differential"].begin_shutdown()
    t.join(timeout=5)


def test_a_machine_past_its_budget_does_not_take_its_clusters(make_app):
    api = Api(make_app(long_polls_per_cluster=4, long_polls_per_machine=1, long_poll_pause_seconds=0.2))
    a = api.new_cluster()
    t, out = _in_thread(api.claim, a, "svc", "m1", 10, 15000)
    assert _parked(a["id"])
    started = time.monotonic()
    assert api.claim(a, machine="m1", ttl=15000) == []  # m1's second poll: answered after the pause
    assert time.monotonic() - started < 3
    t2, out2 = _in_thread(api.claim, a, "svc", "m2", 10, 15000)  # m2 still parks
    assert _parked(a["id"], 2)
    job = api.call(a)
    assert wait_until(lambda: out or out2, timeout=5)
    api.app.extensions["differential"].begin_shutdown()
    t.join(timeout=5)
    t2.join(timeout=5)
    assert sorted(j["id"] for o in out + out2 for j in o) == [job]


def _big_body(job_ids):
    return json.dumps({"jobIds": job_ids + [f"unknown-{i:05d}-{'y' * 40}" for i in range(1500)],
                       "ttl": 15000}).encode()


def _post_big(api, cluster, machine, job_ids):
    body = _big_body(job_ids)
    assert len(body) >= jobs_api._BIG_STATUS_POLLS.threshold_bytes
    r = api.client.post("/batch-jobs-status-request", data=body,
                        headers={**api.headers(cluster, machine), "Content-Type": "application/json"})
    return r.status_code, [(row["id"], row["status"]) for row in r.json]


def test_parked_big_polls_are_counted_per_cluster(make_app):
    """Audit M5: a parked big poll holds its ids; a cluster parks a bounded number of them."""
    api = Api(make_app(big_polls_per_cluster=1))
    a, b = api.new_cluster(), api.new_cluster()
    job_a, job_b = api.call(a), api.call(b)
    t, out = _in_thread(_post_big, api, a, "m1", [job_a])
    polls = engine_jobs._batch_polls._parked
    assert wait_until(lambda: polls.big_polls(a["id"]) == 1, timeout=5)
    started = time.monotonic()
    assert _post_big(api, a, "m2", [job_a]) == (200, [])  # refused at once: the SDKs ask again
    assert time.monotonic() - started < 3
    # A newer poll of the same machine that covers the parked one takes its place, not refused.
    t2, out2 = _in_thread(_post_big, api, a, "m1", [job_a, "another"])
    t.join(timeout=5)
    assert out == [(200, [])]  # superseded
    assert wait_until(lambda: polls.big_polls(a["id"]) == 1, timeout=5)
    # Another cluster's big poll parks (and answers when its job finishes).
    tb, outb = _in_thread(_post_big, api, b, "m1", [job_b])
    assert wait_until(lambda: polls.big_polls(b["id"]) == 1, timeout=5)
    api.claim(b)
    api.result(b, job_b)
    tb.join(timeout=5)
    assert outb == [(200, [(job_b, "success")])]
    api.claim(a)
    api.result(a, job_a)
    t2.join(timeout=5)
    assert out2 == [(200, [(job_a, "success")])]
    assert polls.big_polls(a["id"]) == 0 and polls.big_polls(b["id"]) == 0


def test_a_batch_poll_answered_at_once_reads_its_ids_once(api, monkeypatch):
    """A poll past its budget has ttl 0: its first read is the answer, not a second read of all."""
    c = api.new_cluster()
    job = api.call(c)
    reads = []
    real_read = statements.read_statuses
    monkeypatch.setattr(statements, "read_statuses", lambda cid, job_ids: reads.append(list(job_ids)) or real_read(cid, job_ids))
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(c), json={"jobIds": [job, "nope"], "ttl": 0})
    assert r.status_code == 200 and [(row["id"], row["status"]) for row in r.json] == [(job, "pending")]
    assert reads == [[job, "nope"]]


def test_a_cluster_past_its_poll_budget_is_logged_once_a_minute(caplog):
    budget, limits = PollBudget(), _limits(per_cluster=1, pauses_per_cluster=1)
    with caplog.at_level("WARNING", logger="app.engine.fairness"), budget.admit("A", "m1", 20.0, limits):
        for _ in range(3):
            with budget.admit("A", "m2", 20.0, limits) as wait:
                assert wait == 0.5
        with budget.admit("B", "m1", 20.0, limits) as wait:
            assert wait == 20.0
    assert [r.getMessage().split(" is past")[0] for r in caplog.records] == ["cluster A"]


def test_a_full_process_is_logged_as_the_process_once_a_minute_not_per_cluster(caplog):
    """Past the process's places every tenant's poll answers at once: the line names the process's
    limit and the setting to raise, once, not one line per cluster (1,000 tenants would be 1,000)."""
    budget, limits = PollBudget(), _limits(total=2)
    with caplog.at_level("WARNING", logger="app.engine.fairness"), contextlib.ExitStack() as stack:
        stack.enter_context(budget.admit("A", "m1", 20.0, limits))
        stack.enter_context(budget.admit("B", "m1", 20.0, limits))
        for cluster in ("C", "D", "E"):
            with budget.admit(cluster, "m1", 20.0, limits) as wait:
                assert wait == 0.0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "2 long-poll places are all taken" in messages[0], messages
    assert "GUNICORN_THREADS" in messages[0] and "past its long-poll budget" not in messages[0]
