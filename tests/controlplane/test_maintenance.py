"""Maintenance tasks and their lease, driven by an injected clock (no sleeps), on both databases."""
from __future__ import annotations

import datetime as dt

from app import db
from app.engine.maintenance import (Lease, Maintainer, Prune, RecoverStalledJobs, StallSilentMachines,
                                    epoch_ms)
from app.engine.states import EventType, JobStatus, MachineStatus
from app.models import Event, Job, Machine, utcnow


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


def test_the_standard_tasks_run_in_order_and_prune_once_a_minute(app):
    t0 = utcnow()
    m = Maintainer.for_settings(interval=0.5, machine_timeout=90, retention_days=7)
    first = m.tick(now=t0)
    assert list(first)[:3] == ["stall_silent_machines", "recover_stalled_jobs", "prune"]
    assert "prune" not in m.tick(now=at(t0, 59))
    assert "prune" in m.tick(now=at(t0, 60))


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
    t0 = utcnow()
    # "gone", and "machine-a" that made the call (any request with x-machine-id is a ping)
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


def test_epoch_ms_reads_a_naive_utc_datetime():
    assert epoch_ms(dt.datetime(1970, 1, 1, 0, 0, 1, 500000)) == 1500
