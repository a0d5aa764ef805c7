"""The sweeper: retries jobs whose attempt timed out or whose machine went silent, and prunes.

Every process runs the loop, but only the holder of the `sweeper` lease row sweeps: the lease is
taken with one conditional UPDATE (free, expired, or already ours) and renewed every tick, so
exactly one process sweeps at a time and another takes over within one lease period when the
holder dies. Each tick handles a bounded batch, so a backlog never makes one huge transaction.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time

from .. import db
from ..models import Event, Job, Lease, Machine, utcnow
from ..observability.events import events
from .signals import hub, job_topic, notify_in_transaction, queue_topic

log = logging.getLogger(__name__)

LEASE_NAME = "sweeper"
_BATCH = 500
_PRUNE_EVERY_SECONDS = 60.0


class Sweeper:
    def __init__(self, *, interval: float, machine_timeout: float, retention_days: float):
        self.interval = interval
        self.machine_timeout = machine_timeout
        self.retention_days = retention_days
        self.lease_seconds = max(3 * interval, 3.0)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    # -- lease ---------------------------------------------------------------------------------
    def try_lease(self) -> bool:
        now = utcnow()

        def tx() -> bool:
            Lease.insert(name=LEASE_NAME).on_conflict_ignore().execute()
            taken = (
                Lease.update(holder=self.holder, expires_at=now + dt.timedelta(seconds=self.lease_seconds),
                             acquired_at=now)
                .where((Lease.name == LEASE_NAME)
                       & ((Lease.holder == self.holder) | Lease.expires_at.is_null() | (Lease.expires_at < now)))
                .execute()
            )
            return taken == 1

        return db.unit_of_work(tx)

    def release(self) -> None:
        db.unit_of_work(lambda: Lease.update(expires_at=None, holder=None)
                        .where((Lease.name == LEASE_NAME) & (Lease.holder == self.holder)).execute())

    # -- one sweep -----------------------------------------------------------------------------
    def sweep_once(self) -> dict:
        stalled_machines = self._stall_silent_machines()
        retried, failed = self._recover_stalled_jobs()
        pruned = 0
        if time.monotonic() - self._last_prune > _PRUNE_EVERY_SECONDS:
            pruned = self.prune()
            self._last_prune = time.monotonic()
        analyzed = refresh_statistics()
        return {"stalledMachines": stalled_machines, "retried": retried, "failed": failed, "pruned": pruned,
                "analyzed": analyzed}

    def _stall_silent_machines(self) -> int:
        cutoff = utcnow() - dt.timedelta(seconds=self.machine_timeout)

        def tx():
            silent = list(Machine.select(Machine.pk, Machine.cluster_id, Machine.id)
                          .where((Machine.status == "active") & (Machine.last_ping_at < cutoff)).limit(_BATCH))
            if silent:
                Machine.update(status="inactive").where(Machine.pk.in_([m.pk for m in silent])
                                                        & (Machine.last_ping_at < cutoff)).execute()
            return silent

        silent = db.unit_of_work(tx)
        for m in silent:
            events.record(m.cluster_id, "machineStalled", machine_id=m.id)
        return len(silent)

    def _recover_stalled_jobs(self) -> tuple[int, int]:
        now_ms = int(time.time() * 1000)
        silent_machine = Machine.select(Machine.pk).where(
            (Machine.cluster_id == Job.cluster_id) & (Machine.id == Job.machine_id) & (Machine.status == "inactive"))

        def tx():
            query = (Job.select(Job.seq, Job.cluster_id, Job.id, Job.service, Job.attempt, Job.attempts_allowed,
                                Job.machine_id, Job.deadline_ms)
                     .where((Job.status == "running") & ((Job.deadline_ms < now_ms) | fn_exists(silent_machine)))
                     .order_by(Job.seq).limit(_BATCH))
            if db.is_postgres():
                query = query.for_update("FOR UPDATE SKIP LOCKED")
            stalled = list(query)
            retry = [j for j in stalled if j.attempt < j.attempts_allowed]
            give_up = [j for j in stalled if j.attempt >= j.attempts_allowed]
            if retry:
                (Job.update(status="pending", machine_id=None, deadline_ms=None, claimed_at=None)
                 .where(Job.seq.in_([j.seq for j in retry]) & (Job.status == "running")).execute())
            if give_up:
                (Job.update(status="failure", deadline_ms=None, resulted_at=utcnow())
                 .where(Job.seq.in_([j.seq for j in give_up]) & (Job.status == "running")).execute())
            topics = {queue_topic(j.cluster_id, j.service) for j in retry}
            topics.update(job_topic(j.cluster_id, j.id) for j in give_up)
            notify_in_transaction(sorted(topics))
            return stalled, retry, give_up, topics

        stalled, retry, give_up, topics = db.unit_of_work(tx)
        if topics:
            hub.wake(topics)
        for j in stalled:
            reason = "timeout" if j.deadline_ms is not None and j.deadline_ms < now_ms else "machine stalled"
            events.record(j.cluster_id, "jobStalled", job_id=j.id, machine_id=j.machine_id, service=j.service,
                          reason=reason, attempt=j.attempt, attemptsAllowed=j.attempts_allowed)
        for j in retry:
            events.record(j.cluster_id, "jobRecovered", job_id=j.id, service=j.service)
        for j in give_up:
            events.record(j.cluster_id, "jobStalledTooManyTimes", job_id=j.id, service=j.service)
        return len(retry), len(give_up)

    def prune(self) -> int:
        """Delete finished jobs and events older than the retention, a batch at a time."""
        cutoff = utcnow() - dt.timedelta(days=self.retention_days)
        total = 0
        for _ in range(20):  # bounded work per tick; the next tick continues
            def tx():
                old_jobs = (Job.select(Job.seq).where(Job.status.in_(("success", "failure"))
                                                      & (Job.resulted_at < cutoff)).limit(_BATCH))
                n = Job.delete().where(Job.seq.in_(old_jobs)).execute()
                old_events = Event.select(Event.seq).where(Event.created_at < cutoff).limit(_BATCH)
                return n + Event.delete().where(Event.seq.in_(old_events)).execute()

            n = db.unit_of_work(tx)
            total += n
            if n == 0:
                break
        return total

    # -- the loop ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="differential-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            self.release()
        except Exception:
            log.debug("could not release the sweeper lease", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.try_lease():
                    self.sweep_once()
            except Exception:  # a database outage must not kill the loop; the next tick retries
                log.warning("sweep failed", exc_info=True)


def refresh_statistics() -> list[str]:
    """ANALYZE the hot tables when they changed a lot since their last analyze (PostgreSQL).

    Autovacuum looks at most once a minute. Until then a table that grew from empty keeps the
    planner's empty-table estimate, and the status read picked the (cluster_id, seq) index and
    filtered every job of the cluster, about 3 ms per read at 10,000 jobs instead of an index
    lookup per id (EXPLAIN ANALYZE, bench burst on a fresh database)."""
    if not db.is_postgres():
        return []
    rows = db.unit_of_work(lambda: db.execute(
        "SELECT relname, n_mod_since_analyze, n_live_tup FROM pg_stat_user_tables WHERE relname IN %s",
        (_ANALYZED_TABLES,)).fetchall(), transaction=False)
    stale = [name for name, changed, live in rows
             if changed >= max(_ANALYZE_MIN_CHANGES, _ANALYZE_FRACTION * live)]
    for name in stale:  # SKIP_LOCKED: if autovacuum is analyzing it right now, that will do
        db.unit_of_work(lambda: db.execute(f"ANALYZE (SKIP_LOCKED) {name}"), transaction=False)
    return stale


_ANALYZED_TABLES = ("jobs", "events", "machines")
_ANALYZE_MIN_CHANGES = 1000
_ANALYZE_FRACTION = 0.2


def fn_exists(subquery):
    import peewee

    return peewee.fn.EXISTS(subquery)
