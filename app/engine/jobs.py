"""Creating jobs and reading their status, including the long-poll waits for results."""
from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

from .. import db
from ..errors import Conflict, NotFound
from ..fair_slots import FairSlots
from ..models import Job, utcnow
from ..observability.events import events
from . import controls, deployments, ids, statements, steps
from .batch_poll import BatchPolls
from .batching import GroupCommit
from .signals import DUE_TOPIC, hub, job_topic, queue_topic
from .states import IN_FLIGHT, TERMINAL, EventType, JobStatus, ResultType, wire_status

_ID_CHUNK = 5000  # ids per IN (...) list: well under both databases' parameter limits


@dataclass(frozen=True)
class CallConfig:
    retry_count_on_stall: int = 3
    timeout_seconds: int = 300
    predictive_retries: bool = False
    cache_key: str | None = None
    cache_ttl_seconds: int = 0
    execution_id: str | None = None
    # Call controls (issue 14): a due time in epoch ms, or a delay after the database's clock
    # (never both); a back-off policy for rejections (None: the function's default, if any).
    run_at_ms: int | None = None
    delay_ms: int | None = None
    retry: statements.Backoff | None = None
    queue_deadline_seconds: float | None = None  # must be claimed within this, from the create
    call_deadline_seconds: float | None = None  # must finish within this, across attempts

    @property
    def has_deadline(self) -> bool:
        return self.queue_deadline_seconds is not None or self.call_deadline_seconds is not None


def create_job(cluster_id: str, service: str, target_fn: str, target_args: str, config: CallConfig,
               *, machine_id: str | None = None, deployment_id: str | None = None) -> tuple[str, bool]:
    """Create a job, or find the one this call resolves to. Returns (job id, created).

    A service with an active cloud deployment gets calls that carry that deployment's id (whatever
    the caller's x-deployment-id said): its function is woken for them (engine/deployment_wakeups.py)."""
    deployment_id = deployments.active_for(cluster_id, service) or deployment_id

    def tx() -> tuple[str, bool]:
        if config.execution_id:
            existing = _find(cluster_id, config.execution_id)
            if existing is not None:
                _check_same_call(existing, service, target_fn)
                return existing.id, False
        if config.cache_key and config.cache_ttl_seconds > 0:
            # Concurrent misses of one key must not both create a job.
            db.dialect.lock_key(f"{cluster_id}/{service}/{target_fn}/{config.cache_key}")
            hit = _cache_hit(cluster_id, service, target_fn, config.cache_key, config.cache_ttl_seconds)
            if hit is not None:
                return hit, False
        job_id = config.execution_id or ids.job_id()
        inserted = statements.insert_jobs([new_job(job_id)])[0]
        if inserted and config.has_deadline:  # same transaction: no claim sees the row without them
            statements.set_deadlines(cluster_id, job_id, _queue_ms(), _ms(config.call_deadline_seconds))
        if not inserted and config.execution_id:  # lost a race with the same executionId
            existing = _find(cluster_id, job_id)
            if existing is not None:
                _check_same_call(existing, service, target_fn)
                return job_id, False
        return job_id, True

    retry = config.retry or controls.default_backoff(cluster_id, service, target_fn)
    # A delay of 0 is no delay; a runAt already past inserts pending (the statement compares it
    # with the database's clock); this process's guess only picks which waiters to wake.
    delay_ms = config.delay_ms or None
    delayed = delay_ms is not None or (config.run_at_ms is not None and config.run_at_ms > _epoch_ms_now())

    def _queue_ms() -> int | None:
        # A delayed call cannot be claimed before it is due: its queue deadline counts from then.
        queue_ms = _ms(config.queue_deadline_seconds)
        if queue_ms is None or not delayed:
            return queue_ms
        return queue_ms + (delay_ms or max(0, config.run_at_ms - _epoch_ms_now()))

    def new_job(job_id: str) -> statements.NewJob:
        return statements.NewJob(
            cluster_id=cluster_id, job_id=job_id, service=service, target_fn=target_fn, target_args=target_args,
            cache_key=config.cache_key if config.cache_ttl_seconds > 0 else None,
            attempts_allowed=config.retry_count_on_stall + 1, timeout_seconds=config.timeout_seconds,
            created_at=utcnow(), deployment_id=deployment_id, predictive_retries=config.predictive_retries,
            run_at_ms=config.run_at_ms, delay_ms=delay_ms, backoff=retry)

    job_id = created = None
    if not (config.cache_key and config.cache_ttl_seconds > 0) and not config.has_deadline:
        # One row, written in a batch with the other calls arriving now. An executionId is the
        # job's id: a create that finds its row already there joins that call instead.
        job_id = config.execution_id or ids.job_id()
        created = _creates.submit(new_job(job_id))
        if not created:
            if not config.execution_id:
                raise RuntimeError(f"job id {job_id!r} was generated twice")
            existing = db.unit_of_work(lambda: _find(cluster_id, job_id), transaction=False, idempotent=True)
            if existing is not None:
                _check_same_call(existing, service, target_fn)
            else:  # pruned between the insert and the read: create it after all
                job_id = created = None
    if job_id is None:
        # Reads, then writes: one transaction. Run again after a commit whose answer was lost, it
        # finds the job the first run made (by executionId, or in flight under its cache key). A
        # call with a deadline comes here too: its insert and deadlines commit together.
        job_id, created = db.unit_of_work(tx, idempotent=True)
    if created:
        hub.wake([DUE_TOPIC] if delayed else [queue_topic(cluster_id, service)])
    events.record(cluster_id, EventType.JOB_CREATED if created else EventType.JOB_JOINED, job_id=job_id, machine_id=machine_id,
                  service=service, targetFn=target_fn)
    return job_id, created


def _epoch_ms_now() -> int:
    return int(time.time() * 1000)


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, round(seconds * 1000))


def _insert_batch(new_jobs: list[statements.NewJob]) -> list[bool]:
    # Idempotent: run again after a commit whose answer was lost, the insert skips the rows the
    # first run wrote, and _written_before counts them as created.
    return db.unit_of_work(lambda: _written_before(new_jobs, statements.insert_jobs(new_jobs)),
                           transaction=not db.dialect.batch_in_one_statement, idempotent=True)


# What a create writes and nothing later changes: a row equal in all of them is that create's own.
_CREATED_AS = (Job.cluster_id, Job.id, Job.service, Job.target_fn, Job.target_args, Job.cache_key,
               Job.attempts_allowed, Job.timeout_seconds, Job.created_at, Job.deployment_id, Job.predictive_retries)


def _written_before(new_jobs: list[statements.NewJob], inserted: list[bool]) -> list[bool]:
    """`inserted`, where a job that was not inserted counts as created if its row is already there
    with exactly its content (the same create, committed by an earlier attempt)."""
    out = list(inserted)
    for i, job in enumerate(new_jobs):
        if out[i]:
            continue
        row = Job.select(*_CREATED_AS).where((Job.cluster_id == job.cluster_id) & (Job.id == job.job_id)).first()
        out[i] = row is not None and tuple(getattr(row, f.name) for f in _CREATED_AS) == (
            job.cluster_id, job.job_id, job.service, job.target_fn, job.target_args, job.cache_key,
            job.attempts_allowed, job.timeout_seconds, job.created_at, job.deployment_id, job.predictive_retries)
    return out


# Creates without a cache key or deadline share statements and commits (on PostgreSQL one
# multi-row INSERT per batch). Two creates of one executionId never share a batch: the statement
# would skip the second row and answer both as inserted.
_creates = GroupCommit(_insert_batch, max_batch=200, isolate=db.is_data_error,
                       key=lambda job: (job.cluster_id, job.job_id))


def _find(cluster_id: str, job_id: str) -> Job | None:
    return (Job.select(Job.id, Job.service, Job.target_fn)
            .where((Job.cluster_id == cluster_id) & (Job.id == job_id)).first())


def _check_same_call(existing: Job, service: str, target_fn: str) -> None:
    if existing.service != service or existing.target_fn != target_fn:
        raise Conflict(
            f"executionId {existing.id!r} already names a call of {existing.service}.{existing.target_fn}; "
            f"use a new executionId for {service}.{target_fn}",
            {"executionId": existing.id, "service": existing.service, "targetFn": existing.target_fn},
            code="execution_id_conflict",
        )


def _cache_hit(cluster_id: str, service: str, target_fn: str, key: str, ttl_seconds: int) -> str | None:
    """Newest fresh successful resolution with this key, else a call with it still in flight."""
    since = utcnow() - dt.timedelta(seconds=ttl_seconds)
    fresh = (Job.status == JobStatus.SUCCESS) & (Job.result_type == ResultType.RESOLUTION) & (Job.resulted_at >= since)
    row = (
        Job.select(Job.id)
        .where((Job.cluster_id == cluster_id) & (Job.service == service) & (Job.target_fn == target_fn)
               & (Job.cache_key == key) & (fresh | Job.status.in_(IN_FLIGHT)))
        .order_by(Job.seq.desc())
        .first()
    )
    return row.id if row else None


# --- status -------------------------------------------------------------------------------------

# Status reads of big batches must never take every pooled connection from creates and results
# (the published SDK can send thousands of overlapping batch polls); they queue for these slots,
# one line per cluster, the lines taking turns: one cluster's storm cannot hold up another's reads.
_status_slots = FairSlots(8)


def statuses(cluster_id: str, job_ids: list[str], cancelled: threading.Event | None = None, *,
             result_bytes: int | None = None, at_least_one: bool = True) -> list[dict] | None:
    """Current status of the known ids of this cluster, in request order; unknown ids are absent.

    None if `cancelled` was set by the time a read slot came free: under the published SDK's storm
    many superseded polls queue for a slot, and each would otherwise still read all its ids.

    `result_bytes` bounds the result bytes of the answer: finished rows whose results would go past
    it are left out (both SDKs ask again for ids missing from an answer), except the first one when
    `at_least_one` (so a single job's status always answers). Only the results kept are read."""
    found: dict[str, dict] = {}
    unique = list(dict.fromkeys(job_ids))

    def read() -> None:
        sizes: dict[str, int] = {}
        for start in range(0, len(unique), _ID_CHUNK):
            for job_id, status, size, result_type, service, reason in statements.read_statuses(
                    cluster_id, unique[start:start + _ID_CHUNK]):
                # A job not finished answers no result, not even a rejection that will be retried.
                final = status in TERMINAL
                found[job_id] = {"id": job_id, "status": wire_status(status, result_type), "result": None,
                                 "resultType": result_type if final else None, "service": service, "state": status,
                                 "reason": reason}
                if size is not None and final:
                    sizes[job_id] = size
        wanted = _within(unique, sizes, result_bytes, at_least_one)
        for job_id in sizes.keys() - set(wanted):
            del found[job_id]
        for start in range(0, len(wanted), _ID_CHUNK):
            for job_id, result in statements.read_results(cluster_id, wanted[start:start + _ID_CHUNK]):
                found[job_id]["result"] = result

    with _status_slots.hold(cluster_id):
        if cancelled is not None and cancelled.is_set():
            return None
        db.unit_of_work(read, transaction=False, idempotent=True)  # reads; finished rows never change, so no snapshot needed
    return [found[i] for i in unique if i in found]


def _within(job_ids: list[str], sizes: dict[str, int], budget: int | None, at_least_one: bool) -> list[str]:
    """The ids with a result, in order, whose results fit in `budget` bytes together."""
    wanted, spent = [], 0
    for job_id in job_ids:
        size = sizes.get(job_id)
        if size is None:
            continue
        if budget is not None and spent + size > budget and (wanted or not at_least_one):
            continue  # a smaller one further on may still fit
        wanted.append(job_id)
        spent += size
    return wanted


def job_status(cluster_id: str, job_id: str) -> dict:
    rows = statuses(cluster_id, [job_id])
    if not rows:
        raise NotFound(f"job {job_id!r} does not exist in this cluster", {"jobId": job_id}, code="job_not_found")
    return rows[0]


def job_status_steps(cluster_id: str, job_id: str, ttl_seconds: float, stopping=None) -> steps.Steps[dict]:
    """Long poll one job: its status once it is finished, or after ttl (or at shutdown); steps.py."""
    deadline = time.monotonic() + ttl_seconds
    with hub.subscribe([job_topic(cluster_id, job_id)]) as sub:
        while True:
            row = job_status(cluster_id, job_id)
            remaining = deadline - time.monotonic()
            if row["state"] in TERMINAL or remaining <= 0 or (stopping is not None and stopping.is_set()):
                return row
            yield steps.Wait(sub, remaining)


# Batch polls (the published SDK's storm of overlapping status polls): see batch_poll.py.
_batch_polls = BatchPolls(statuses)
batch_status_steps = _batch_polls.poll_steps
