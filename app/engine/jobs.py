"""Creating jobs and reading their status, including the long-poll waits for results."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from .. import db
from ..errors import Conflict, NotFound
from ..models import Job, utcnow
from ..observability.events import events
from . import ids
from .signals import hub, job_topic, notifying, queue_topic, rows_changed

TERMINAL = ("success", "failure")
IN_FLIGHT = ("pending", "running", "stalled")
_ID_CHUNK = 5000  # ids per IN (...) list: well under both databases' parameter limits
# A batch poll over many calls lingers this long after the first result, so one answer carries
# the results that finish together instead of one request per result.
_BATCH_LINGER_SECONDS = 0.02
_BATCH_LINGER_MIN_IDS = 50


@dataclass(frozen=True)
class CallConfig:
    retry_count_on_stall: int = 3
    timeout_seconds: int = 300
    predictive_retries: bool = False
    cache_key: str | None = None
    cache_ttl_seconds: int = 0
    execution_id: str | None = None
    background: bool = False


def create_job(cluster_id: str, service: str, target_fn: str, target_args: str, config: CallConfig,
               *, machine_id: str | None = None, deployment_id: str | None = None) -> tuple[str, bool]:
    """Create a job, or find the one this call resolves to. Returns (job id, created)."""

    def tx() -> tuple[str, bool]:
        if config.execution_id:
            existing = _find(cluster_id, config.execution_id)
            if existing is not None:
                _check_same_call(existing, service, target_fn)
                return existing.id, False
        if config.cache_key and config.cache_ttl_seconds > 0:
            if db.is_postgres():  # concurrent misses of one key must not both create a job
                db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                           (f"{cluster_id}/{service}/{target_fn}/{config.cache_key}",))
            hit = _cache_hit(cluster_id, service, target_fn, config.cache_key, config.cache_ttl_seconds)
            if hit is not None:
                return hit, False
        job_id = config.execution_id or ids.job_id()
        insert = Job.insert(
            cluster_id=cluster_id, id=job_id, service=service, target_fn=target_fn, target_args=target_args,
            status="pending", cache_key=config.cache_key if config.cache_ttl_seconds > 0 else None,
            attempts_allowed=config.retry_count_on_stall + 1, timeout_seconds=config.timeout_seconds,
            created_at=utcnow(), deployment_id=deployment_id, predictive_retries=config.predictive_retries,
        ).on_conflict_ignore()
        result = notifying(insert, queue_topic(cluster_id, service)).execute()
        # SQLite's write lock makes the lookup above authoritative; PostgreSQL reports the rows.
        inserted = rows_changed(result) > 0 if db.is_postgres() else True
        if not inserted and config.execution_id:  # lost a race with the same executionId
            existing = _find(cluster_id, job_id)
            if existing is not None:
                _check_same_call(existing, service, target_fn)
                return job_id, False
        return job_id, True

    # A plain call is one INSERT (its NOTIFY rides along): no transaction round trips needed.
    plain = not config.execution_id and not (config.cache_key and config.cache_ttl_seconds > 0)
    job_id, created = db.unit_of_work(tx, transaction=not plain)
    if created:
        hub.wake([queue_topic(cluster_id, service)])
    events.record(cluster_id, "jobCreated" if created else "jobJoined", job_id=job_id, machine_id=machine_id,
                  service=service, targetFn=target_fn)
    return job_id, created


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
    fresh = (Job.status == "success") & (Job.result_type == "resolution") & (Job.resulted_at >= since)
    row = (
        Job.select(Job.id)
        .where((Job.cluster_id == cluster_id) & (Job.service == service) & (Job.target_fn == target_fn)
               & (Job.cache_key == key) & (fresh | Job.status.in_(IN_FLIGHT)))
        .order_by(Job.seq.desc())
        .first()
    )
    return row.id if row else None


# --- status -------------------------------------------------------------------------------------

def _status_row(job: Job) -> dict:
    return {"id": job.id, "status": job.status, "result": job.result, "resultType": job.result_type,
            "service": job.service}


def statuses(cluster_id: str, job_ids: list[str]) -> list[dict]:
    """Current status of the known ids of this cluster, in request order; unknown ids are absent."""
    found: dict[str, dict] = {}
    unique = list(dict.fromkeys(job_ids))

    def tx() -> None:
        for start in range(0, len(unique), _ID_CHUNK):
            chunk = unique[start:start + _ID_CHUNK]
            # Results are read only for finished jobs: pending rows need just their status.
            query = (Job.select(Job.id, Job.status, Job.result, Job.result_type, Job.service)
                     .where((Job.cluster_id == cluster_id) & Job.id.in_(chunk)))
            for job in query:
                found[job.id] = _status_row(job)

    db.unit_of_work(tx, transaction=False)  # reads; finished rows never change, so no snapshot needed
    return [found[i] for i in unique if i in found]


def job_status(cluster_id: str, job_id: str) -> dict:
    rows = statuses(cluster_id, [job_id])
    if not rows:
        raise NotFound(f"job {job_id!r} does not exist in this cluster", {"jobId": job_id}, code="job_not_found")
    return rows[0]


def wait_for_job(cluster_id: str, job_id: str, ttl_seconds: float, stopping=None) -> dict:
    """Long poll one job: return when it is finished, or its current status after ttl (or at shutdown)."""
    deadline = time.monotonic() + ttl_seconds
    with hub.subscribe([job_topic(cluster_id, job_id)]) as sub:
        while True:
            row = job_status(cluster_id, job_id)
            remaining = deadline - time.monotonic()
            if row["status"] in TERMINAL or remaining <= 0 or (stopping is not None and stopping.is_set()):
                return row
            sub.wait(remaining)


def wait_for_any(cluster_id: str, job_ids: list[str], ttl_seconds: float, stopping=None) -> list[dict]:
    """Long poll a batch: return the finished ones as soon as any is, else every status after ttl
    (or at once when the server is shutting down)."""
    if not job_ids:
        return []
    deadline = time.monotonic() + ttl_seconds
    with hub.subscribe(job_topic(cluster_id, i) for i in set(job_ids)) as sub:
        while True:
            rows = statuses(cluster_id, job_ids)
            finished = [r for r in rows if r["status"] in TERMINAL]
            remaining = deadline - time.monotonic()
            if finished:
                return finished
            if remaining <= 0 or (stopping is not None and stopping.is_set()):
                return rows
            sub.wait(remaining)
