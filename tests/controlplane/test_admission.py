"""Admission of big request bodies (app/api/admission.py), alone and on the batch status route."""
from __future__ import annotations

import threading
import time

import pytest

from app.api.admission import BigBodyAdmission
from app.api.routing import ROUTES


def test_small_bodies_pass_and_big_ones_wait_for_a_slot():
    adm = BigBodyAdmission(threshold_bytes=100, slots=1, max_wait_seconds=5)
    small = adm.enter(99)
    first = adm.enter(100)
    got = []
    t = threading.Thread(target=lambda: got.append(adm.enter(5000)))
    t.start()
    time.sleep(0.2)
    assert got == []  # waiting: the only slot is taken
    small()  # a small body never held one
    assert got == []
    first()
    first()  # a second release must not free a second slot
    t.join(timeout=5)
    assert len(got) == 1
    with pytest.raises(ValueError):  # exactly one slot exists, and it is held again
        adm._slots.release(), adm._slots.release()


def test_a_request_that_cannot_get_a_slot_goes_ahead_after_the_wait():
    adm = BigBodyAdmission(threshold_bytes=1, slots=1, max_wait_seconds=0.2)
    held = adm.enter(10)
    started = time.monotonic()
    adm.enter(10)()  # no slot: it goes ahead, and its release is a no-op
    assert 0.15 < time.monotonic() - started < 3
    held()


def test_a_parked_big_status_poll_gives_its_slot_back(api, monkeypatch):
    """With one slot, a second big poll is answered while the first is parked only if the first gave
    the slot back when it parked."""
    spec = next(r for r in ROUTES if r.path == "/batch-jobs-status-request")
    monkeypatch.setattr(spec, "admission", BigBodyAdmission(threshold_bytes=1000, slots=1, max_wait_seconds=30))
    c = api.new_cluster()
    job = api.call(c)
    padding = [f"unknown-{i:04d}-{'x' * 20}" for i in range(100)]  # makes the body big; unknown ids are absent
    answers = {}

    def poll(machine, ttl):
        r = api.client.post("/batch-jobs-status-request", headers=api.headers(c, machine),
                            json={"jobIds": [job, *padding], "ttl": ttl})
        answers[machine] = (r.status_code, [(row["id"], row["status"]) for row in r.json], time.monotonic())

    first = threading.Thread(target=poll, args=("m1", 15000))
    first.start()
    time.sleep(0.5)  # m1 is parked
    started = time.monotonic()
    poll("m2", 1000)  # admitted at once, parked, answered at its ttl
    assert answers["m2"][:2] == (200, [(job, "pending")])
    assert answers["m2"][2] - started < 4
    assert "m1" not in answers
    api.claim(c)
    api.result(c, job)
    first.join(timeout=10)
    assert answers["m1"][:2] == (200, [(job, "success")])
