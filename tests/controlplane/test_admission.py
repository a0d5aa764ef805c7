"""Admission of big request bodies (app/api/admission.py), alone and on the batch status route."""
from __future__ import annotations

import io
import json
import threading
import time

from app.api.admission import BigBodyAdmission
from app.api.routing import ROUTES
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
