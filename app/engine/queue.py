"""Claiming jobs for a machine, and fenced results coming back from it."""
from __future__ import annotations

import random
import time

from .. import db
from ..models import Job, utcnow
from ..observability import prometheus
from ..observability.events import events
from . import statements, steps
from .batching import GroupCommit
from .limits import Holders, Limits
from .limits import claim as claim_limited
from .signals import DUE_TOPIC, hub, job_topic, queue_topic
from .states import EventType, JobStatus


def claim(cluster_id: str, service: str, machine_id: str, limit: int, limits: Limits | None = None) -> list[dict]:
    """Move up to `limit` pending jobs to running for this machine; oldest first (and within the
    poll's concurrency `limits`, when it declared any: limits.py)."""
    return _claim(cluster_id, service, machine_id, limit, limits)[0]


def _claim(cluster_id: str, service: str, machine_id: str, limit: int,
           limits: Limits | None) -> tuple[list[dict], list[str]]:
    """The claimed jobs, and the running jobs to watch when a full limit claimed nothing."""
    if limit <= 0:
        return [], []
    if limits is None:
        # One statement, atomic by itself; its deadlines come from the database's clock (statements.py).
        rows, watch = sorted(db.unit_of_work(lambda: statements.claim_jobs(
            cluster_id=cluster_id, service=service, machine_id=machine_id, limit=limit), transaction=False)), []
    else:
        limited = claim_limited(cluster_id, service, machine_id, limit, limits)
        rows, watch = sorted(limited.rows), limited.watch
    claimed = [{"id": r[1], "targetFn": r[2], "targetArgs": r[3]} for r in rows]
    prometheus.claimed(cluster_id, service, rows)
    for _seq, job_id, target_fn, _args, attempt, _created_at in rows:
        events.record(cluster_id, EventType.JOB_RECEIVED, job_id=job_id, machine_id=machine_id, service=service,
                      targetFn=target_fn, attempt=attempt)
    return claimed, watch


def claim_steps(cluster_id: str, service: str, machine_id: str, limit: int, ttl_seconds: float,
                stopping=None, alive=None, heartbeat=None, heartbeat_every: float | None = None,
                limits: Limits | None = None) -> steps.Steps[list[dict]]:
    """Long poll: claim as soon as something is claimable, or return [] after ttl (steps.py).

    `alive()` is asked before every claim: a poll whose caller has gone (a killed worker) must
    not claim jobs that nobody will run. `heartbeat()` is called every `heartbeat_every` seconds
    while the poll is held: a machine parked here is not silent, and must not be declared stalled
    when the machine timeout is shorter than the poll. A poll whose concurrency limit is full also
    wakes when one of the running jobs holding it finishes (limits.Holders)."""
    start = last_beat = time.monotonic()
    deadline = start + ttl_seconds
    beat = heartbeat is not None and heartbeat_every is not None and heartbeat_every < ttl_seconds
    with hub.subscribe([queue_topic(cluster_id, service)]) as sub, Holders(cluster_id, sub) as holders:
        while True:
            if alive is not None and not alive():
                return []
            if beat and time.monotonic() - last_beat >= heartbeat_every:
                heartbeat()
                last_beat = time.monotonic()
            jobs, watch = _claim(cluster_id, service, machine_id, limit, limits)
            remaining = deadline - time.monotonic()
            if jobs or remaining <= 0 or (stopping is not None and stopping.is_set()):
                return jobs
            if holders.follow(watch):
                continue  # one finished before it was watched: its room is free now
            wait = min(remaining, max(0.0, last_beat + heartbeat_every - time.monotonic())) if beat else remaining
            yield steps.Wait(sub, holders.longest_wait(wait))


def _store_batch(results: list[statements.Result]) -> list[tuple[bool | statements.RetryScheduled, str | None]]:
    return db.unit_of_work(lambda: statements.store_results_with_services(results),
                           transaction=not db.dialect.batch_in_one_statement)


# Results share statements and commits; two results for one job never share a batch (the fence
# must see the first one's write).
_results = GroupCommit(_store_batch, max_batch=200, key=lambda r: (r.cluster_id, r.job_id),
                       isolate=db.is_data_error)


def persist_result(cluster_id: str, job_id: str, machine_id: str, result: str, result_type: str,
                   execution_time_ms: int | None, *, deployment_id: str | None = None) -> bool | statements.RetryScheduled:
    """Store a result if it comes from the machine holding the running attempt; else drop it.

    Returns whether it was stored (a RetryScheduled when a rejection scheduled another attempt).
    A dropped result is recorded in the activity log with why.
    """

    stored, service = _results.submit(statements.Result(
        cluster_id=cluster_id, job_id=job_id, machine_id=machine_id, result=result, result_type=result_type,
        execution_time_ms=execution_time_ms, resulted_at=utcnow(), draw=random.random()))
    if stored:
        hub.wake([job_topic(cluster_id, job_id)])
        retry = isinstance(stored, statements.RetryScheduled)  # a rejection with attempts left: due again later
        events.record(cluster_id, EventType.JOB_RESULTED, job_id=job_id, machine_id=machine_id, deployment_id=deployment_id,
                      service=service, resultType=result_type, functionExecutionTime=execution_time_ms,
                      **({"retryScheduled": True} if retry else {}))
        if retry:
            hub.wake([DUE_TOPIC])
            events.record(cluster_id, EventType.JOB_RETRY_SCHEDULED, job_id=job_id, machine_id=machine_id,
                          deployment_id=deployment_id, service=service, delayMs=stored.delay_ms,
                          runAtMs=stored.run_at_ms)
    else:
        events.record(cluster_id, EventType.JOB_RESULTED_BUT_NOT_PERSISTED, job_id=job_id, machine_id=machine_id,
                      deployment_id=deployment_id, resultType=result_type, reason=_why_fenced(cluster_id, job_id, machine_id))
    return stored


def _why_fenced(cluster_id: str, job_id: str, machine_id: str) -> str:
    job = db.unit_of_work(lambda: Job.select(Job.status, Job.machine_id)
                          .where((Job.cluster_id == cluster_id) & (Job.id == job_id)).first())
    if job is None:
        return "unknown job"
    if job.status != JobStatus.RUNNING:
        return f"job is {job.status}"
    return f"attempt is held by another machine ({job.machine_id})"
