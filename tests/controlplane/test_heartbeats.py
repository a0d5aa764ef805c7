"""Machines' pings and touches and workers' polls are noted by requests and written in batches by a
thread of their own (engine/heartbeats.py), on both databases."""
from __future__ import annotations

import peewee
import pytest

from app import db
from app.engine import heartbeats, machines
from app.engine.heartbeats import PING, POLL, TOUCH, HeartbeatWriter
from app.models import Machine, Worker

from cp_helpers import Api


class Recorder:
    def __init__(self):
        self.lost: list[tuple[str, list]] = []
        self.unknown: list[tuple] = []

    def writer(self, **kw) -> HeartbeatWriter:
        return HeartbeatWriter(on_lost=lambda kind, keys: self.lost.append((kind, keys)),
                               on_unknown=self.unknown.extend, interval=3600, **kw)  # flushed by hand


@pytest.fixture
def writer(monkeypatch) -> HeartbeatWriter:
    """machines.py's writer, with the process's own callbacks, flushed only by hand (its thread
    would otherwise write in the middle of a test)."""
    w = HeartbeatWriter(on_lost=machines._lost, on_unknown=machines._no_machines, interval=3600)
    monkeypatch.setattr(machines, "writer", w)
    return w


def machine_rows(cluster_id: str) -> dict[str, tuple]:
    return db.unit_of_work(lambda: {m.id: (m.ip, m.deployment_id, m.status) for m in
                                    Machine.select().where(Machine.cluster_id == cluster_id)})


def worker_rows(cluster_id: str) -> list[tuple]:
    return db.unit_of_work(lambda: sorted((w.service, w.machine_id) for w in
                                          Worker.select().where(Worker.cluster_id == cluster_id)))


def test_a_poll_is_written_by_the_writer_not_by_its_request(api, writer):
    c = api.new_cluster()
    r = api.client.post("/jobs-request", headers=api.headers(c, "m1"),
                        json={"service": "svc", "limit": 1, "ttl": 0, "functions": [{"name": "fn"}]})
    assert r.status_code == 200
    assert writer.pending() == 2 and machine_rows(c["id"]) == {}  # its machine and its worker row, noted
    machines.flush()
    assert writer.pending() == 0
    assert machine_rows(c["id"]) == {"m1": ("127.0.0.1", None, "active")}
    assert worker_rows(c["id"]) == [("svc", "m1")]


def test_a_batch_of_many_keys_is_written_in_chunks_the_latest_note_of_each_winning(api):
    cid = api.new_cluster()["id"]
    rec = Recorder()
    w = rec.writer()
    n = 1_200  # more than two chunks of each kind
    for i in range(n):
        w.note(PING, (cid, f"m{i:04}"), ("10.0.0.1", "dep-1"))
        w.note(POLL, (cid, "svc", f"m{i:04}"))
    w.note(PING, (cid, "m0000"), ("10.0.0.2", "dep-1"))  # a later ping of the same machine
    assert w.pending() == 2 * n
    assert w.flush()
    rows = machine_rows(cid)
    assert len(rows) == n and rows["m0000"] == ("10.0.0.2", "dep-1", "active") and rows["m1199"][0] == "10.0.0.1"
    assert len(worker_rows(cid)) == n
    for i in range(n):  # touches of the same machines, and of ids that are no machine
        w.note(TOUCH, (cid, f"m{i:04}"), ("10.0.0.3",))
        w.note(TOUCH, (cid, f"caller-{i:04}"), ("10.0.0.3",))
    assert w.flush()
    rows = machine_rows(cid)
    assert len(rows) == n and {ip for ip, _, _ in rows.values()} == {"10.0.0.3"}  # refreshed, none made
    assert sorted(rec.unknown) == [(cid, f"caller-{i:04}") for i in range(n)]
    assert rec.lost == []


def test_a_touch_refreshes_an_inactive_machine_and_a_ping_brings_it_back(api):
    c = api.new_cluster()
    cid = c["id"]
    rec = Recorder()
    w = rec.writer()
    w.note(PING, (cid, "m1"), (None, None))
    assert w.flush()
    db.unit_of_work(lambda: Machine.update(status="inactive").where(Machine.cluster_id == cid).execute())
    w.note(TOUCH, (cid, "m1"), ("10.1.1.1",))
    assert w.flush()
    assert machine_rows(cid) == {"m1": ("10.1.1.1", None, "active")} and rec.unknown == []


def test_a_failed_write_hands_every_key_back_and_the_next_request_notes_it_again(api, writer, monkeypatch, caplog):
    cid = api.new_cluster()["id"]
    real = db.execute

    def failing(sql, params=()):
        if "machines" in sql or "workers" in sql:
            raise peewee.OperationalError("deadlock detected")
        return real(sql, params)

    monkeypatch.setattr(db, "execute", failing)
    machines.ping(cid, "m1", ip="127.0.0.1", deployment_id=None, machine_timeout_seconds=90)
    machines.worker_polled(cid, "svc", "m1", machine_timeout_seconds=90)
    assert writer.flush() is False  # logged, not raised
    machines.ping(cid, "m1", ip="127.0.0.1", deployment_id=None, machine_timeout_seconds=90)
    assert writer.flush() is False  # a database that is down: logged once a minute, not every batch
    assert [r.message.split(" (")[0] for r in caplog.records if r.name == "app.engine.heartbeats"] == [
        "writing 2 machine heartbeats failed"]
    monkeypatch.setattr(db, "execute", real)
    assert machine_rows(cid) == {}
    # The throttles let the next ping through at once, though it is well within their interval.
    machines.ping(cid, "m1", ip="127.0.0.1", deployment_id=None, machine_timeout_seconds=90)
    machines.worker_polled(cid, "svc", "m1", machine_timeout_seconds=90)
    assert writer.pending() == 2
    machines.flush()
    assert list(machine_rows(cid)) == ["m1"] and worker_rows(cid) == [("svc", "m1")]


def test_the_pending_are_bounded_and_a_note_past_the_bound_is_tried_again(api, monkeypatch):
    cid = api.new_cluster()["id"]
    w = Recorder().writer(max_keys=3)
    assert all(w.note(PING, (cid, f"m{i}"), (None, None)) for i in range(3))
    assert w.note(PING, (cid, "m1"), ("10.0.0.9", None))  # a key already pending is updated
    assert not w.note(PING, (cid, "m3"), (None, None))
    assert w.note(POLL, (cid, "svc", "m0"))  # each kind has its bound
    monkeypatch.setattr(machines, "writer", w)
    machines.ping(cid, "m3", ip=None, deployment_id=None, machine_timeout_seconds=90)  # refused: full
    assert w.pending() == 4 and not machines._pings.recent((cid, "m3"), 60)  # its throttle let go
    assert w.flush()
    machines.ping(cid, "m3", ip=None, deployment_id=None, machine_timeout_seconds=90)  # room again
    assert w.pending() == 1 and w.flush()
    rows = machine_rows(cid)
    assert sorted(rows) == ["m0", "m1", "m2", "m3"] and rows["m1"][0] == "10.0.0.9"


def test_shutting_down_writes_what_is_pending(make_app, writer):
    app = make_app()
    c = Api(app).new_cluster()
    machines.ping(c["id"], "m-last", ip=None, deployment_id=None, machine_timeout_seconds=90)
    assert writer.pending() == 1
    app.extensions["differential"].shutdown()
    assert writer.pending() == 0
    assert list(machine_rows(c["id"])) == ["m-last"]


def test_the_interval_stays_well_inside_a_short_machine_timeout():
    w = Recorder().writer()
    w.configure(machine_timeout_seconds=90)
    assert w.interval == 0.25
    w.configure(machine_timeout_seconds=0.8)
    assert w.interval == 0.1
    assert heartbeats._CHUNK * 4 < 32_766  # SQLite's limit of parameters a statement
