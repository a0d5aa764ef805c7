"""Maintenance: small periodic tasks that exactly one process runs, under one lease.

Shaped after River's maintenance services (internal/maintenance/job_rescuer.go): each task is a
small class with a name, how often it runs, and `run_once(now)` returning what it did as counts.
Every process runs the loop, but only the holder of the `sweeper` lease row runs the tasks: the
lease is taken with one conditional UPDATE (free, expired, or already ours) and renewed every
tick, so exactly one process maintains at a time and another takes over within one lease period
when the holder dies. Each task handles a bounded batch, so a backlog never makes one huge
transaction.

Time is injected (huey's `loop(now=None)`): `tick(now)` hands one `now` to the lease and to every
task, and none of them reads the clock, so tests move time forward instead of sleeping. Left to
itself, a tick reads `now` from the database (one query), the clock that claims stamp deadlines
and pings stamp machines with: replicas whose own clocks disagree still judge the lease, the
deadlines and the silences alike (audit L4). A tick that runs long renews the lease before its
next task, and stops if another process holds it by then.

The tasks, in the order `for_settings` runs them: stall silent machines, promote due jobs, recover
stalled jobs, prune, expire deadlines, fire schedules, finish cluster deletions, roll up metrics,
wake cloud deployments (and expire their uploads), and (PostgreSQL) refresh statistics.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from typing import Protocol

from .. import db, models
from ..models import Event, Job, Machine
from ..observability.events import events
from . import cluster_deletion, deployment_wakeups, machines, payloads, rollups, schedules, statements
from .signals import DUE_TOPIC, hub, job_topic, notify_in_transaction, queue_topic
from .states import TERMINAL, EventType, MachineStatus

log = logging.getLogger(__name__)

LEASE_NAME = "sweeper"
_BATCH = 500
MIN_WAKE = 0.05  # seconds: the loop's shortest sleep when it wakes early for a due job


def epoch_ms(now: dt.datetime) -> int:
    """A naive UTC datetime (as `models.utcnow()` gives) in epoch milliseconds, as `deadline_ms` is."""
    return int(now.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


class Lease:
    """A named lease row: who may run the maintenance tasks until when."""

    def __init__(self, *, seconds: float, name: str = LEASE_NAME, holder: str | None = None) -> None:
        self.name = name
        self.seconds = seconds
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def take(self, now: dt.datetime) -> bool:
        """Hold the lease until now + seconds if it is free, expired or already ours."""

        def tx() -> bool:
            models.Lease.insert(name=self.name).on_conflict_ignore().execute()
            taken = (
                models.Lease.update(holder=self.holder, expires_at=now + dt.timedelta(seconds=self.seconds),
                                    acquired_at=now)
                .where((models.Lease.name == self.name)
                       & ((models.Lease.holder == self.holder) | models.Lease.expires_at.is_null()
                          | (models.Lease.expires_at < now)))
                .execute()
            )
            return taken == 1

        return db.unit_of_work(tx)

    renew = take  # renewing is taking again: the UPDATE's guard lets the holder through

    def release(self) -> None:
        """Let go at once (at shutdown), so another process need not wait for the expiry."""
        db.unit_of_work(lambda: models.Lease.update(expires_at=None, holder=None)
                        .where((models.Lease.name == self.name) & (models.Lease.holder == self.holder)).execute())


class Task(Protocol):
    name: str
    every: float  # seconds between runs, measured against `now`; 0 runs it every tick

    def run_once(self, now: dt.datetime) -> dict[str, int]: ...


class StallSilentMachines:
    """active -> inactive: machines that said nothing for longer than the machine timeout."""

    name = "stall_silent_machines"
    every = 0.0

    def __init__(self, machine_timeout: float, batch: int = _BATCH) -> None:
        self.machine_timeout = machine_timeout
        self.batch = batch

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        cutoff = now - dt.timedelta(seconds=self.machine_timeout)
        machines.flush()  # a ping this process still holds is no silence

        def tx() -> list[Machine]:
            silent = list(Machine.select(Machine.pk, Machine.cluster_id, Machine.id)
                          .where((Machine.status == MachineStatus.ACTIVE) & (Machine.last_ping_at < cutoff))
                          .limit(self.batch))
            if silent:
                (Machine.update(status=MachineStatus.INACTIVE)
                 .where(Machine.pk.in_([m.pk for m in silent]) & (Machine.last_ping_at < cutoff)).execute())
            return silent

        silent = db.unit_of_work(tx)
        for m in silent:
            events.record(m.cluster_id, EventType.MACHINE_STALLED, machine_id=m.id)
        return {"stalledMachines": len(silent)}


class PromoteDueJobs:
    """scheduled -> pending: delayed calls and back-offs whose time has come (index
    jobs_scheduled_due), a bounded batch a run, waking the queue topics so parked polls claim them
    at once. Each run also reads the earliest due time still ahead (`next_due_ms`, with the
    database's clock then), so the loop can wake for it before its next tick."""

    name = "promote_due_jobs"
    every = 0.0

    def __init__(self, batch: int = _BATCH) -> None:
        self.batch = batch
        self.next_due_ms: int | None = None  # the earliest run_at_ms still scheduled, at the last read
        self.clock_ms: int | None = None  # the database's clock at that read
        self._read_at = 0.0  # time.monotonic() at that read

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        now_ms = epoch_ms(now)

        def tx():
            due = statements.promote_due(now_ms, self.batch)
            topics = sorted({queue_topic(j.cluster_id, j.service) for j in due})
            notify_in_transaction(topics)
            return due, topics

        due, topics = db.unit_of_work(tx)
        if topics:
            hub.wake(topics)
        for j in due:
            events.record(j.cluster_id, EventType.JOB_DUE, job_id=j.id, service=j.service)
        self.refresh()
        if len(due) == self.batch:  # more may be due already: the next wake comes at once
            self.next_due_ms = self.clock_ms
        return {"promoted": len(due)}

    def refresh(self) -> None:
        """Read the earliest due time still ahead (one index-only query)."""
        self.next_due_ms, self.clock_ms = db.unit_of_work(statements.next_due, transaction=False, idempotent=True)
        self._read_at = time.monotonic()

    def seconds_until_due(self) -> float | None:
        """From the last read: how long from now until the earliest scheduled job falls due, or None."""
        if self.next_due_ms is None or self.clock_ms is None:
            return None
        return max(0.0, (self.next_due_ms - self.clock_ms) / 1000 - (time.monotonic() - self._read_at))


class RecoverStalledJobs:
    """running -> pending while attempts remain, else -> failure: for jobs whose attempt timed out
    or whose machine is inactive. Runs after StallSilentMachines, so a machine stalled in this
    tick has its jobs recovered in the same tick."""

    name = "recover_stalled_jobs"
    every = 0.0

    def __init__(self, batch: int = _BATCH) -> None:
        self.batch = batch

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        now_ms = epoch_ms(now)

        def tx():
            stalled = statements.find_stalled(now_ms, self.batch)
            # Past the call deadline the call ends whatever attempts remain (the claim ended the
            # attempt there), with a reason and a packed rejection; stall failures stay without.
            late = [j for j in stalled if j.call_deadline_ms is not None and j.call_deadline_ms < now_ms]
            late_seqs = {j.seq for j in late}
            rest = [j for j in stalled if j.seq not in late_seqs]
            retry = [j for j in rest if j.attempt < j.attempts_allowed]
            give_up = [j for j in rest if j.attempt >= j.attempts_allowed]
            statements.requeue_stalled([j.seq for j in retry])
            statements.fail_stalled([j.seq for j in give_up], resulted_at=now,
                                    endings=[_call_deadline_ending(j.seq, j.id) for j in late])
            topics = {queue_topic(j.cluster_id, j.service) for j in retry}
            topics.update(job_topic(j.cluster_id, j.id) for j in give_up + late)
            notify_in_transaction(sorted(topics))
            return stalled, retry, give_up, late, topics

        stalled, retry, give_up, late, topics = db.unit_of_work(tx)
        if topics:
            hub.wake(topics)
        for j in stalled:
            reason = "timeout" if j.deadline_ms is not None and j.deadline_ms < now_ms else "machine stalled"
            events.record(j.cluster_id, EventType.JOB_STALLED, job_id=j.id, machine_id=j.machine_id,
                          service=j.service, reason=reason, attempt=j.attempt, attemptsAllowed=j.attempts_allowed)
        for j in retry:
            events.record(j.cluster_id, EventType.JOB_RECOVERED, job_id=j.id, service=j.service)
        for j in give_up:
            events.record(j.cluster_id, EventType.JOB_STALLED_TOO_MANY_TIMES, job_id=j.id, service=j.service)
        for j in late:
            events.record(j.cluster_id, EventType.JOB_DEADLINE_EXCEEDED, job_id=j.id, machine_id=j.machine_id,
                          service=j.service, reason=CALL_DEADLINE_REASON, code=payloads.CALL_DEADLINE)
        return {"retried": len(retry), "failed": len(give_up) + len(late)}  # `late`: jobDeadlineExceeded events


CALL_DEADLINE_REASON = "the call's deadline passed before it finished"


def _call_deadline_ending(seq: int, job_id: str) -> statements.Ending:
    return statements.Ending(seq, CALL_DEADLINE_REASON,
                             payloads.deadline_exceeded(job_id, payloads.CALL_DEADLINE, CALL_DEADLINE_REASON))


def _seconds(ms: int) -> str:
    return f"{round(max(ms, 0) / 1000, 1):g} s"


class ExpireDeadlines:
    """pending | scheduled -> failure: calls not claimed within their queue deadline (or whose call
    deadline passed while they waited), with a reason naming the service and a packed rejection,
    so every waiting caller learns why at once. Runs every tick; the read uses the partial index
    jobs_waiting_deadline, so a tick without expired calls costs one index probe."""

    name = "expire_deadlines"
    every = 0.0

    def __init__(self, batch: int = _BATCH) -> None:
        self.batch = batch

    @staticmethod
    def ending(job: statements.ExpiredJob) -> tuple[statements.Ending, str]:
        """The job's ending and its code (QUEUE_DEADLINE, or CALL_DEADLINE when that came first)."""
        if job.call_deadline_ms is not None and job.queue_deadline_ms >= job.call_deadline_ms:
            code, reason = payloads.CALL_DEADLINE, CALL_DEADLINE_REASON
        else:
            code = payloads.QUEUE_DEADLINE
            allowed = _seconds(job.queue_deadline_ms - epoch_ms(job.created_at))
            reason = (f"no machine of service {job.service!r} claimed this call within its {allowed} "
                      "queue deadline")
        return statements.Ending(job.seq, reason, payloads.deadline_exceeded(job.id, code, reason)), code

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        now_ms = epoch_ms(now)

        def tx():
            expired = statements.find_expired(now_ms, self.batch)
            endings = {j.seq: self.ending(j) for j in expired}
            failed = statements.expire_waiting([e for e, _ in endings.values()], resulted_at=now)
            done = [(j, *endings[j.seq]) for j in expired if j.seq in failed]
            notify_in_transaction(sorted(job_topic(j.cluster_id, j.id) for j, _, _ in done))
            return done

        done = db.unit_of_work(tx)
        if done:
            hub.wake([job_topic(j.cluster_id, j.id) for j, _, _ in done])
        for j, ending, code in done:
            events.record(j.cluster_id, EventType.JOB_DEADLINE_EXCEEDED, job_id=j.id, service=j.service,
                          reason=ending.reason, code=code)
        return {"expired": len(done)}


class RollUpMetrics:
    """Finished jobs -> metric rollups (engine/rollups.py says how: exactly once, up to now minus
    a lag of seconds), a bounded number of chunks a run; rollups older than their own retention
    go, once a minute. Prune keeps finished jobs for days, so each is folded in long before it is
    pruned (whatever the order within a tick); it runs after the tasks that finish jobs."""

    name = "roll_up_metrics"
    every = 5.0  # the metrics read adds the jobs finished since the mark, so this is not freshness
    prune_every = 60.0

    def __init__(self, retention_days: float, max_chunks: int = 12) -> None:
        self.retention_days = retention_days
        self.max_chunks = max_chunks
        self._pruned_at: dt.datetime | None = None

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        done = rollups.fold(now, max_chunks=self.max_chunks)
        if self._pruned_at is None or not 0 <= (now - self._pruned_at).total_seconds() < self.prune_every:
            cutoff = now - dt.timedelta(days=self.retention_days)
            done["rollupsPruned"] = rollups.prune(rollups.epoch_ms(cutoff))
            self._pruned_at = now
        return done


class Prune:
    """Delete finished jobs and events older than the retention, and workers, machines and services
    unheard of for that long (statements.py says which), in bounded batches, every 10 s, until
    nothing is left to prune or the run's time budget is spent (the next run continues).

    A fixed number of batches a minute could not keep up: 20 batches of 500 are 10,000 jobs and
    10,000 events a minute, while 200 calls/s finish 12,000 jobs and write 36,000 events a
    minute, and a drained backlog of 1,000,000 jobs took 100 minutes (bench/backlog.py). Each batch
    takes the oldest rows through the index that orders them (jobs_finished, events_created_at):
    with a LIMIT and no order, the planner may read the table from its start instead, past every
    pending job of a backlog, to find the finished ones."""

    name = "prune"
    every = 10.0

    def __init__(self, retention_days: float, batch: int = _BATCH, budget_seconds: float = 1.0,
                 clock=time.monotonic) -> None:
        self.retention_days = retention_days
        self.batch = batch
        self.budget_seconds = budget_seconds
        self.clock = clock

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        cutoff = now - dt.timedelta(days=self.retention_days)

        def tx() -> int:
            old_jobs = (Job.select(Job.seq).where(Job.status.in_(TERMINAL) & (Job.resulted_at < cutoff))
                        .order_by(Job.resulted_at).limit(self.batch))
            n = Job.delete().where(Job.seq.in_(old_jobs)).execute()
            old_events = Event.select(Event.seq).where(Event.created_at < cutoff).order_by(Event.created_at) \
                .limit(self.batch)
            n += Event.delete().where(Event.seq.in_(old_events)).execute()
            # After the jobs: a service whose last jobs went in this batch goes with them.
            n += statements.prune_workers(cutoff, self.batch)
            return n + statements.prune_machines(cutoff, self.batch) + statements.prune_services(cutoff, self.batch)

        total = 0
        stop = self.clock() + self.budget_seconds
        while True:  # at least one batch; bounded by the budget (and by the rows there are)
            n = db.unit_of_work(tx)
            total += n
            if n == 0 or self.clock() >= stop:
                break
        return {"pruned": total}


class RefreshStatistics:
    """ANALYZE the hot tables when they changed a lot since their last analyze (PostgreSQL only:
    the dialect says whether it applies).

    Autovacuum looks at most once a minute. Until then a table that grew from empty keeps the
    planner's empty-table estimate, and the status read picked the (cluster_id, seq) index and
    filtered every job of the cluster, about 3 ms per read at 10,000 jobs instead of an index
    lookup per id (EXPLAIN ANALYZE, bench burst on a fresh database)."""

    name = "refresh_statistics"
    every = 0.0
    tables = ("jobs", "events", "machines")
    min_changes = 1000
    fraction = 0.2

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        return {"analyzed": len(self.analyze_stale())}

    def analyze_stale(self) -> list[str]:
        """ANALYZE the tables that need it; returns their names."""
        rows = db.unit_of_work(lambda: db.execute(
            "SELECT relname, n_mod_since_analyze, n_live_tup FROM pg_stat_user_tables WHERE relname IN %s",
            (self.tables,)).fetchall(), transaction=False, idempotent=True)
        stale = [name for name, changed, live in rows if changed >= max(self.min_changes, self.fraction * live)]
        for name in stale:  # SKIP_LOCKED: if autovacuum is analyzing it right now, that will do
            db.unit_of_work(lambda name=name: db.execute(f"ANALYZE (SKIP_LOCKED) {name}"), transaction=False,
                            idempotent=True)
        return stale


class FireSchedules:
    """Cron schedules' due ticks -> calls, each tick once (engine/schedules.py says how, and how
    ticks missed during downtime are caught up). A tick up to `on_time_seconds` late is on time."""

    name = "fire_schedules"
    every = 0.0

    def __init__(self, on_time_seconds: float = 60.0, batch: int = 100) -> None:
        self.on_time_seconds = on_time_seconds
        self.batch = batch

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        return schedules.fire_due(now, batch=self.batch, on_time_seconds=self.on_time_seconds)


class FinishClusterDeletions:
    """Clusters marked deleted (DELETE /clusters/:id) -> gone: their rows in batches, for at most
    `budget_seconds` a run, then the cluster row once it settled (engine/cluster_deletion.py).
    Finishes a deletion whose request's process died, or ran out of its time, part-way."""

    name = "finish_cluster_deletions"
    every = 1.0

    def __init__(self, budget_seconds: float = 1.0, clusters_per_run: int = 10,
                 settle_seconds: float = cluster_deletion.SETTLE_SECONDS) -> None:
        self.budget_seconds = budget_seconds
        self.clusters_per_run = clusters_per_run
        self.settle_seconds = settle_seconds

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        stop = time.monotonic() + self.budget_seconds
        rows = dropped = 0
        for cluster_id in cluster_deletion.marked(self.clusters_per_run):
            left = stop - time.monotonic()
            if left <= 0:
                break
            finished, n = cluster_deletion.purge(cluster_id, budget_seconds=left)
            rows += n
            if finished and cluster_deletion.drop_tombstone(cluster_id, now, self.settle_seconds):
                dropped += 1
        return {"deletedRows": rows, "deletedClusters": dropped}


class WakeDeployments:
    """Cloud deployments: wake the functions of active deployments whose service has waiting calls
    and no live machine of theirs, at most once per interval each, and fail the ones never woken
    into life; uploads never released fail at their expiry (engine/deployment_wakeups.py)."""

    name = "wake_deployments"

    def __init__(self, settings) -> None:
        self.settings = settings
        self.interval = settings.deployment_wake_interval_seconds
        self.every = min(1.0, self.interval)  # each deployment's own interval is kept on its row

    def run_once(self, now: dt.datetime) -> dict[str, int]:
        done = {"expired": deployment_wakeups.expire_uploads(now)}
        done.update(deployment_wakeups.wake(now, self.settings, interval=self.interval,
                                            max_wakeups=self.settings.deployment_max_wakeups))
        if self.settings.deployment_template_bucket:  # stacks exist only with the cloud settings
            done.update(deployment_wakeups.check_stacks(now, self.settings))
        return done


class Maintainer:
    """The lease and the loop: every `interval` seconds, take the lease and run the tasks due."""

    def __init__(self, lease: Lease, tasks: list[Task], interval: float) -> None:
        self.lease = lease
        self.tasks = tasks
        self.interval = interval
        self._last_run: dict[str, dt.datetime] = {}
        self._holding = False  # whether the last tick held the lease (only the holder wakes early)
        self._hints = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_settings(cls, *, interval: float, machine_timeout: float, retention_days: float,
                     metrics_retention_days: float = 30.0, deployments=None) -> Maintainer:
        """The standard tasks, in the order they run, on the bound database (`deployments`: the
        Settings the deployment wake-ups read, which adds them)."""
        lease = Lease(seconds=max(3 * interval, 3.0))
        # A tick is late by up to an interval, plus a lease's expiry when the leader died.
        on_time = max(60.0, lease.seconds + 2 * interval)
        tasks: list[Task] = [StallSilentMachines(machine_timeout), PromoteDueJobs(), RecoverStalledJobs(),
                             Prune(retention_days), ExpireDeadlines(), FireSchedules(on_time),
                             FinishClusterDeletions(), RollUpMetrics(metrics_retention_days)]
        if deployments is not None:
            tasks.append(WakeDeployments(deployments))
        if db.dialect.refreshes_statistics:
            tasks.append(RefreshStatistics())
        return cls(lease, tasks, interval)

    def due(self, now: dt.datetime) -> list[Task]:
        def is_due(task: Task) -> bool:
            last = self._last_run.get(task.name)
            if last is None:
                return True
            elapsed = (now - last).total_seconds()
            return elapsed >= task.every or elapsed < 0  # a clock stepped back does not stall a task

        return [task for task in self.tasks if is_due(task)]

    def tick(self, now: dt.datetime | None = None, only: tuple[str, ...] | None = None) -> dict[str, dict[str, int]]:
        """Take the lease and run the due tasks (of those named in `only`, if given); per task
        run, its counts ({} without the lease).

        `now` defaults to the database's clock. A task that fails is logged and tried again next
        tick; the others still run."""
        now = now or statements.database_now()
        started = time.monotonic()
        if not self.lease.take(now):
            return {}
        done = {}
        for task in self.due(now):
            if only is not None and task.name not in only:
                continue
            elapsed = time.monotonic() - started
            # Past a third of the lease, renew it (at `now` moved on by the steady clock) before
            # going on, so a slow tick never overlaps another process's.
            if elapsed > self.lease.seconds / 3 and not self.lease.renew(now + dt.timedelta(seconds=elapsed)):
                log.warning("the maintenance lease was taken over during a slow tick; stopping it here")
                break
            try:
                done[task.name] = task.run_once(now)
            except Exception:  # a database outage must not stop the loop; the next tick retries
                log.warning("maintenance task %s failed", task.name, exc_info=True)
                continue
            self._last_run[task.name] = now
        return done

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="differential-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        hints = self._hints
        if hints is not None:
            hints.wake()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            self.lease.release()
        except Exception:
            log.debug("could not release the maintenance lease", exc_info=True)

    def _run(self) -> None:
        # Between ticks the lease holder also wakes when a scheduled job falls due before the next
        # tick (the promoter's report) and promotes it then; it re-reads that earliest due time
        # whenever a job became scheduled (DUE_TOPIC; on SQLite, whose other processes cannot
        # notify, at every fallback wake-up, 0.25 s). So a delay or back-off shorter than a tick is
        # promoted within about MIN_WAKE of its time on the holder, not at the next tick.
        promoter = next((t for t in self.tasks if isinstance(t, PromoteDueJobs)), None)
        next_tick = time.monotonic() + self.interval
        with hub.subscribe([DUE_TOPIC]) as hints:
            self._hints = hints
            while not self._stop.is_set():
                wait = next_tick - time.monotonic()
                due_in = promoter.seconds_until_due() if promoter is not None and self._holding else None
                if due_in is not None:
                    wait = min(wait, due_in)
                fired = hints.wait(wait) if wait > 0 else set()
                if self._stop.is_set():
                    break
                try:
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self.interval  # a failed tick too waits a tick
                        self._holding = bool(self.tick())
                    elif promoter is not None and self._holding:
                        try:
                            if fired is None or fired:  # a job became scheduled: when is the earliest due now?
                                promoter.refresh()
                            due_in = promoter.seconds_until_due()
                            if due_in is not None and due_in <= MIN_WAKE / 2:
                                self.tick(only=(promoter.name,))
                        finally:
                            self._stop.wait(MIN_WAKE)  # a storm of hints or of due times costs at most this rate
                except Exception:  # taking the lease failed (database outage): the next tick retries
                    self._holding = False
                    log.warning("maintenance tick failed", exc_info=True)
        self._hints = None
