"""Maintenance tasks and their lease, driven by an injected clock (no sleeps), on both databases."""
from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
import types

import pytest

from app import db, models
from app.engine import machines, maintenance, statements
from app.engine.maintenance import (Lease, Maintainer, Prune, RecoverStalledJobs, StallSilentMachines,
                                    epoch_ms)
from app.engine.states import EventType, JobStatus, MachineStatus
from app.models import Event, Job, Machine, utcnow
from cp_helpers import Api
from support.waiting import wait_until


def at(start: dt.datetime, seconds: float) -> dt.datetime:
    return start + dt.timedelta(seconds=seconds)


def machine_row(cluster, machine_id):
    return db.unit_of_work(lambda: Machine.get((Machine.cluster_id == cluster["id"]) & (Machine.id == machine_id)))


def job_row(job_id):
    return db.unit_of_work(lambda: Job.get(Job.id == job_id))


class Counting:
    """A task that records the `now` of every run (and fails when told to)."""

    def __init__(self, name: str, every: float, fail: bool = False) -> None:
        self.name, self.every, self.fail = name, every, fail
        self.runs: list[dt.datetime] = []

    def run_once(self, now):
        self.runs.append(now)
        if self.fail:
            raise RuntimeError("task failed")
        return {"runs": len(self.runs)}


# --- the lease ------------------------------------------------------------------------------------

def test_a_second_holder_cannot_take_the_lease_before_it_expires_and_can_after(app):
    t0 = utcnow()
    first, second = Lease(seconds=3), Lease(seconds=3)
    assert first.take(t0)
    assert not second.take(at(t0, 2.9))
    assert second.take(at(t0, 3.1))  # the holder stopped renewing: expired
    assert not first.take(at(t0, 3.2))


def test_renewing_extends_the_lease_and_release_frees_it_at_once(app):
    t0 = utcnow()
    first, second = Lease(seconds=3), Lease(seconds=3)
    assert first.take(t0)
    assert first.renew(at(t0, 2))  # now held until t0 + 5
    assert not second.take(at(t0, 4))
    first.release()
    assert second.take(at(t0, 4))
    assert not first.renew(at(t0, 4.5))  # renewing is only for the holder


def test_a_tick_without_the_lease_runs_nothing(app):
    t0 = utcnow()
    holder = Maintainer(Lease(seconds=3), [Counting("a", every=0)], interval=1)
    other_task = Counting("a", every=0)
    other = Maintainer(Lease(seconds=3), [other_task], interval=1)
    assert holder.tick(now=t0) == {"a": {"runs": 1}}
    assert other.tick(now=at(t0, 1)) == {}
    assert other_task.runs == []


# --- the loop -------------------------------------------------------------------------------------

def test_a_task_not_due_is_skipped_and_every_task_gets_the_same_now(app):
    t0 = utcnow()
    each_tick, each_minute = Counting("each_tick", every=0), Counting("each_minute", every=60)
    m = Maintainer(Lease(seconds=3), [each_tick, each_minute], interval=1)
    assert m.tick(now=t0) == {"each_tick": {"runs": 1}, "each_minute": {"runs": 1}}
    assert m.tick(now=at(t0, 30)) == {"each_tick": {"runs": 2}}  # the minute task is not due
    assert m.tick(now=at(t0, 60)) == {"each_tick": {"runs": 3}, "each_minute": {"runs": 2}}
    assert each_tick.runs == [t0, at(t0, 30), at(t0, 60)]
    assert each_minute.runs == [t0, at(t0, 60)]


def test_a_failing_task_does_not_stop_the_others_and_runs_again_next_tick(app):
    t0 = utcnow()
    broken, fine = Counting("broken", every=60, fail=True), Counting("fine", every=0)
    m = Maintainer(Lease(seconds=3), [broken, fine], interval=1)
    assert m.tick(now=t0) == {"fine": {"runs": 1}}
    assert m.tick(now=at(t0, 1)) == {"fine": {"runs": 2}}
    assert broken.runs == [t0, at(t0, 1)]  # not marked as run, so not held back a minute


def test_the_standard_tasks_run_in_order_and_prune_every_ten_seconds(app):
    t0 = utcnow()
    m = Maintainer.for_settings(interval=0.5, machine_timeout=90, retention_days=7)
    first = m.tick(now=t0)
    assert list(first)[:4] == ["stall_silent_machines", "promote_due_jobs", "recover_stalled_jobs", "prune"]
    assert "prune" not in m.tick(now=at(t0, 9))
    assert "prune" in m.tick(now=at(t0, 10))


# --- the tasks ------------------------------------------------------------------------------------

def test_stall_silent_machines_counts_the_machines_it_stalled(api):
    c = api.new_cluster()
    api.claim(c, machine="quiet")
    api.claim(c, machine="chatty")
    task = StallSilentMachines(machine_timeout=30)
    t0 = utcnow()
    assert task.run_once(at(t0, 10)) == {"stalledMachines": 0}
    # chatty spoke again 39 s on (as a request then would have written); quiet never did.
    db.unit_of_work(lambda: Machine.update(last_ping_at=at(t0, 39)).where(Machine.id == "chatty").execute())
    assert task.run_once(at(t0, 40)) == {"stalledMachines": 1}
    assert machine_row(c, "quiet").status == MachineStatus.INACTIVE
    assert machine_row(c, "chatty").status == MachineStatus.ACTIVE
    assert task.run_once(at(t0, 40)) == {"stalledMachines": 0}  # already inactive
    assert [e["machineId"] for e in api.activity(c) if e["type"] == EventType.MACHINE_STALLED] == ["quiet"]


def test_recover_stalled_jobs_requeues_while_attempts_remain_and_fails_the_rest(api):
    c = api.new_cluster()
    again = api.call(c, retryCountOnStall=1, timeoutSeconds=5)
    spent = api.call(c, retryCountOnStall=0, timeoutSeconds=5)
    slow = api.call(c, retryCountOnStall=0, timeoutSeconds=60)
    api.claim(c, machine="m1")
    task = RecoverStalledJobs()
    t0 = utcnow()
    assert task.run_once(at(t0, 4)) == {"retried": 0, "failed": 0}
    assert task.run_once(at(t0, 6)) == {"retried": 1, "failed": 1}
    assert (job_row(again).status, job_row(again).machine_id) == (JobStatus.PENDING, None)
    failed = job_row(spent)
    assert (failed.status, failed.deadline_ms) == (JobStatus.FAILURE, None)
    assert failed.resulted_at == at(t0, 6)  # the time the task was given, not the clock's
    assert job_row(slow).status == JobStatus.RUNNING
    assert task.run_once(at(t0, 6)) == {"retried": 0, "failed": 0}
    events = api.activity(c)
    stalled = [e for e in events if e["type"] == EventType.JOB_STALLED]
    assert sorted(e["jobId"] for e in stalled) == sorted([again, spent])
    assert {e["meta"]["reason"] for e in stalled} == {"timeout"}
    assert [e["jobId"] for e in events if e["type"] == EventType.JOB_RECOVERED] == [again]
    assert [e["jobId"] for e in events if e["type"] == EventType.JOB_STALLED_TOO_MANY_TIMES] == [spent]


def test_recover_stalled_jobs_takes_the_jobs_of_an_inactive_machine_before_their_deadline(api):
    c = api.new_cluster()
    job_id = api.call(c, retryCountOnStall=1, timeoutSeconds=300)
    api.claim(c, machine="gone")
    api.claim(c, machine="machine-a")  # a worker too (callers are not machines); nothing left to claim
    t0 = utcnow()
    # "gone", and "machine-a" that made the call and polled
    assert StallSilentMachines(machine_timeout=30).run_once(at(t0, 31)) == {"stalledMachines": 2}
    assert RecoverStalledJobs().run_once(at(t0, 31)) == {"retried": 1, "failed": 0}
    assert [e["meta"]["reason"] for e in api.activity(c) if e["type"] == EventType.JOB_STALLED] == [
        "machine stalled"]
    assert job_row(job_id).status == JobStatus.PENDING


def test_prune_counts_old_finished_jobs_and_events_and_keeps_the_rest(api):
    c = api.new_cluster()
    done, running = api.call(c), api.call(c)
    api.claim(c)
    api.result(c, done)
    api.activity(c)  # flushes the events so far
    task = Prune(retention_days=1)
    t0 = utcnow()
    assert task.run_once(at(t0, 3600)) == {"pruned": 0}
    events_before = db.unit_of_work(lambda: Event.select().count())
    pruned = task.run_once(at(t0, 2 * 86400))["pruned"]
    assert pruned == 1 + events_before  # the finished job and every event; the running job stays
    assert db.unit_of_work(lambda: [j.id for j in Job.select(Job.id)]) == [running]
    assert task.run_once(at(t0, 2 * 86400)) == {"pruned": 0}


def test_prune_goes_on_in_batches_until_done_or_its_budget_is_spent(api):
    c = api.new_cluster()
    calls = [api.call(c) for _ in range(5)]
    api.claim(c)
    for job_id in calls:
        api.result(c, job_id)
    api.activity(c)  # flushes the events so far
    events = db.unit_of_work(lambda: Event.select().count())
    later = at(utcnow(), 2 * 86400)
    # A clock that has spent the budget after the first batch: one batch now, the rest next run.
    ticks = iter([0.0, 5.0, 10.0, 10.0, 10.0, 10.0])
    task = Prune(retention_days=1, batch=2, budget_seconds=1.0, clock=lambda: next(ticks))
    first = task.run_once(later)["pruned"]
    assert first == 2 + min(2, events)  # one batch: two jobs, two events
    assert db.unit_of_work(lambda: Job.select().count()) == 3
    # With the budget left, batch after batch until nothing is left (more batches than before).
    assert Prune(retention_days=1, batch=1, budget_seconds=60.0).run_once(later)["pruned"] >= 3 + events - 2
    assert db.unit_of_work(lambda: (Job.select().count(), Event.select().count())) == (0, 0)


def test_epoch_ms_reads_a_naive_utc_datetime():
    assert epoch_ms(dt.datetime(1970, 1, 1, 0, 0, 1, 500000)) == 1500


# --- one clock: the database's (audit L4) ---------------------------------------------------------

@contextlib.contextmanager
def process_clock_off_by(seconds: float):
    """This process's wall clock (time.time and every `utcnow`) `seconds` off, as on a replica whose
    clock is skewed or stepped; the database's clock is left alone."""
    real_time, real_utcnow = time.time, models.utcnow
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time", lambda: real_time() + seconds)
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("app") and getattr(module, "utcnow", None) is real_utcnow:
                patch.setattr(module, "utcnow", lambda: real_utcnow() + dt.timedelta(seconds=seconds))
        yield


def standard_maintainer(machine_timeout=90.0):
    return Maintainer.for_settings(interval=1, machine_timeout=machine_timeout, retention_days=7)


def test_the_database_clock_is_read_not_the_processes(app):
    with process_clock_off_by(30):
        now = statements.database_now()
    assert abs((now - utcnow()).total_seconds()) < 5  # the test database runs on this host


def test_a_healthy_attempt_is_not_timed_out_by_replicas_whose_clocks_disagree(api):
    c = api.new_cluster()
    job_id = api.call(c, retryCountOnStall=1, timeoutSeconds=20)
    with process_clock_off_by(-30):  # the replica that hands the job out is behind...
        assert [j["id"] for j in api.claim(c, machine="m1")] == [job_id]
    with process_clock_off_by(30):  # ...the one that sweeps is ahead
        outcome = standard_maintainer().tick()
    assert outcome["recover_stalled_jobs"] == {"retried": 0, "failed": 0}
    row = job_row(job_id)
    assert row.status == JobStatus.RUNNING
    now_ms = epoch_ms(statements.database_now())
    assert now_ms + 10_000 < row.deadline_ms <= now_ms + 20_000  # claimed at the database's now, + 20 s


def test_an_attempt_past_its_deadline_on_the_database_clock_is_timed_out_whatever_the_replica_says(api):
    c = api.new_cluster()
    job_id = api.call(c, retryCountOnStall=1, timeoutSeconds=1)
    with process_clock_off_by(30):  # a claiming replica ahead would have given it 31 s
        api.claim(c, machine="m1")
    m = standard_maintainer()
    with process_clock_off_by(-30):  # a sweeping replica behind would wait 30 s more
        wait_until(lambda: m.tick().get("recover_stalled_jobs", {}).get("retried"), timeout=10,
                   interval=0.2, what="the timed-out attempt to be retried")
    assert job_row(job_id).status == JobStatus.PENDING


def test_a_machine_is_judged_silent_on_the_database_clock(make_app):
    api = Api(make_app(machine_timeout_seconds=20))
    c = api.new_cluster()
    with process_clock_off_by(-30):  # its ping goes through a replica that is behind
        api.claim(c, machine="behind")
    m = standard_maintainer(machine_timeout=20)
    with process_clock_off_by(30):  # and a sweeper ahead looks at it
        outcome = m.tick()
    assert outcome["stall_silent_machines"] == {"stalledMachines": 0}
    assert machine_row(c, "behind").status == MachineStatus.ACTIVE
    db.unit_of_work(lambda: Machine.update(last_ping_at=utcnow() - dt.timedelta(seconds=25))
                    .where(Machine.id == "behind").execute())  # really silent for 25 s
    assert m.tick()["stall_silent_machines"] == {"stalledMachines": 1}


def test_replicas_whose_clocks_disagree_never_hold_the_lease_together(app):
    a_task, b_task = Counting("a", every=0), Counting("b", every=0)
    a = Maintainer(Lease(seconds=3), [a_task], interval=1)
    b = Maintainer(Lease(seconds=3), [b_task], interval=1)
    assert a.tick() == {"a": {"runs": 1}}
    with process_clock_off_by(30):  # b's clock says a's lease ran out long ago
        assert b.tick() == {}
    a.lease.release()
    with process_clock_off_by(-30):  # now b holds it, on a clock that is behind
        assert b.tick() == {"b": {"runs": 1}}
    assert a.tick() == {}
    assert (len(a_task.runs), len(b_task.runs)) == (1, 1)


class SteadyClock:
    """Stands in for the `time` module in maintenance.py: a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_slow_tick_renews_the_lease_before_its_next_task(app, monkeypatch):
    clock = SteadyClock()
    monkeypatch.setattr(maintenance, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    t0 = utcnow()

    class Slow(Counting):
        def run_once(self, now):
            clock.now += 2.5  # this task took 2.5 s of a 3 s lease
            return super().run_once(now)

    after = Counting("after", every=0)
    a = Maintainer(Lease(seconds=3), [Slow("slow", every=0), after], interval=1)
    assert a.tick(now=t0) == {"slow": {"runs": 1}, "after": {"runs": 1}}
    # Renewed at t0 + 2.5 before "after" ran: held until t0 + 5.5, not t0 + 3.
    assert not Lease(seconds=3).take(at(t0, 4))


def test_a_tick_whose_lease_was_taken_over_meanwhile_stops(app, monkeypatch):
    clock = SteadyClock()
    monkeypatch.setattr(maintenance, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    t0 = utcnow()
    other = Lease(seconds=3)

    class Stuck(Counting):
        def run_once(self, now):
            clock.now += 4  # longer than the lease: another process takes it meanwhile
            assert other.take(at(t0, 3.5))
            return super().run_once(now)

    after = Counting("after", every=0)
    a = Maintainer(Lease(seconds=3), [Stuck("stuck", every=0), after], interval=1)
    assert a.tick(now=t0) == {"stuck": {"runs": 1}}
    assert after.runs == []


# --- bounded growth: machines and services go too (audit L5) -------------------------------------

def test_prune_removes_machines_inactive_past_the_retention_unless_they_hold_a_running_attempt(api):
    c = api.new_cluster()
    for machine in ("gone", "fresh", "machine-a"):  # machine-a also makes the call below
        api.claim(c, machine=machine)  # nothing to do yet
    api.call(c, timeoutSeconds=300)
    api.claim(c, machine="busy")  # holds a running attempt
    long_ago = utcnow() - dt.timedelta(days=2)
    db.unit_of_work(lambda: Machine.update(status=MachineStatus.INACTIVE, last_ping_at=long_ago)
                    .where(Machine.id.in_(["gone", "busy"])).execute())
    db.unit_of_work(lambda: Machine.update(status=MachineStatus.INACTIVE).where(Machine.id == "fresh").execute())
    pruned = Prune(retention_days=1).run_once(utcnow())["pruned"]
    left = db.unit_of_work(lambda: sorted(m.id for m in Machine.select(Machine.id).where(Machine.cluster_id == c["id"])))
    assert left == ["busy", "fresh", "machine-a"]
    assert pruned == 1  # nothing else was old


def test_prune_removes_services_no_worker_polled_for_past_the_retention_once_no_job_is_left(api):
    c = api.new_cluster()
    for service in ("gone", "queued", "live", "finished"):
        api.claim(c, service=service, machine="m1")  # each poll registers its service
    api.call(c, service="queued")
    done = api.call(c, service="finished")
    api.claim(c, service="finished", machine="m1")
    api.result(c, done, machine="m1")
    long_ago = utcnow() - dt.timedelta(days=2)
    db.unit_of_work(lambda: models.Service.update(updated_at=long_ago)
                    .where(models.Service.name.in_(["gone", "queued", "finished"])).execute())
    db.unit_of_work(lambda: Job.update(resulted_at=long_ago).where(Job.id == done).execute())
    Prune(retention_days=1).run_once(utcnow())
    left = db.unit_of_work(lambda: sorted(s.name for s in models.Service.select().where(
        models.Service.cluster_id == c["id"])))
    assert left == ["live", "queued"]  # "finished" went with its last job, in the same run
    machines._definitions.forget((c["id"], "gone"))  # its last poll was days ago, not seconds
    api.claim(c, service="gone", machine="m1")  # a worker that comes back registers it again
    assert "gone" in db.unit_of_work(lambda: [s.name for s in models.Service.select()])
