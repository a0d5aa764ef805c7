"""Job admin: list a cluster's jobs, show one in full with its activity, re-run a failed or cancelled one.

The operator's view through the management API (the management secret sees every cluster; each
query is scoped by the cluster in its path, so one cluster's jobs never show under another's).

Lists are newest first and paged by keyset on `seq`, never by offset: the cursor is the last `seq`
a page showed, so jobs created while someone pages (they get higher seqs) neither repeat nor push
others onto the next page. Each filter combination walks an index backwards: with a status, the
(cluster_id, status, seq) index once per status asked for, merged here; with a service only,
(cluster_id, service, seq); else (cluster_id, seq). The other filters are checked on the rows the
walk meets.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import heapq

from .. import db
from ..errors import BadRequest, Conflict, NotFound
from ..models import Job
from ..observability.events import events
from . import clusters, rollups, statements
from .signals import hub, notify_in_transaction, queue_topic
from .states import RERUNNABLE, EventType, wire_status

MAX_LIMIT = 500
_CURSOR_PREFIX = "s1:"  # a version, so the token's form can change without misreading old ones


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> int:
    """The seq a `next` token stands for; BadRequest naming `cursor` for anything else."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        seq = int(text[len(_CURSOR_PREFIX):])
        if seq < 1:
            raise ValueError(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor is not a `next` token this server gave", {"field": "cursor"},
                         code="bad_cursor") from None
    return seq


def list_jobs(cluster_id: str, *, statuses: list[str] | None = None, service: str | None = None,
              function: str | None = None, created_after: dt.datetime | None = None,
              created_before: dt.datetime | None = None, limit: int = 50, cursor: str | None = None) -> dict:
    """{"jobs": [summary...], "next": token or None}: up to `limit` jobs, newest first, after `cursor`."""
    before = decode_cursor(cursor) if cursor else None
    filters = {"service": service, "function": function, "created_after": created_after,
               "created_before": created_before, "before": before, "limit": limit + 1}

    def read():
        clusters.get_cluster(cluster_id)
        if not statuses:
            return list(page_query(cluster_id, None, **filters))
        walks = [list(page_query(cluster_id, status, **filters)) for status in dict.fromkeys(statuses)]
        # A job whose status changed between two walks can be met by both: it is listed once.
        merged = {j.seq: j for j in heapq.merge(*walks, key=lambda j: -j.seq)}
        return list(merged.values())[:limit + 1]

    rows = db.unit_of_work(read, transaction=False, idempotent=True)
    page = rows[:limit]
    return {"jobs": [clusters.job_summary(j) for j in page],
            "next": encode_cursor(page[-1].seq) if len(rows) > limit else None}


def page_query(cluster_id: str, status: str | None, *, service: str | None, function: str | None,
               created_after: dt.datetime | None, created_before: dt.datetime | None, before: int | None,
               limit: int):
    """One walk down an index, newest first: the jobs of one status (or of any), below seq `before`."""
    q = Job.select(*clusters.SUMMARY_FIELDS).where(Job.cluster_id == cluster_id)
    if status is not None:
        q = q.where(Job.status == status)
    if service is not None:
        q = q.where(Job.service == service)
    if function is not None:
        q = q.where(Job.target_fn == function)
    if created_after is not None:
        q = q.where(Job.created_at >= created_after)
    if created_before is not None:
        q = q.where(Job.created_at < created_before)
    if before is not None:
        q = q.where(Job.seq < before)
    return q.order_by(Job.seq.desc()).limit(limit)


def _ms_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return clusters.iso(dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(ms)))


def _detail(job: Job) -> dict:
    backoff = None
    if job.backoff_attempts is not None:
        backoff = {"attempts": job.backoff_attempts, "initialMs": job.backoff_initial_ms,
                   "factor": job.backoff_factor, "maxMs": job.backoff_max_ms, "jitter": job.backoff_jitter}
    return {
        **clusters.job_summary(job),
        "wireStatus": wire_status(job.status, job.result_type),
        "targetArgs": job.target_args, "result": job.result,
        "timeoutSeconds": job.timeout_seconds, "cacheKey": job.cache_key, "deploymentId": job.deployment_id,
        "predictiveRetries": bool(job.predictive_retries),
        "claimedAt": clusters.iso(job.claimed_at), "attemptDeadline": _ms_iso(job.deadline_ms),
        "runAt": _ms_iso(job.run_at_ms), "queueDeadline": _ms_iso(job.queue_deadline_ms),
        "callDeadline": _ms_iso(job.call_deadline_ms), "backoff": backoff,
    }


def _not_found(cluster_id: str, job_id: str) -> NotFound:
    return NotFound(f"job {job_id!r} does not exist in cluster {cluster_id!r}",
                    {"clusterId": cluster_id, "jobId": job_id}, code="job_not_found")


def job_detail(cluster_id: str, job_id: str, event_limit: int = 100) -> dict:
    """The job in full, and its newest `event_limit` activity events (the activity route's shape,
    read by the events (cluster_id, job_id) index; `next` pages on through that route)."""

    def read():
        clusters.get_cluster(cluster_id)
        return _detail(_job(cluster_id, job_id))

    return _with_activity(cluster_id, db.unit_of_work(read, transaction=False, idempotent=True), event_limit)


def _job(cluster_id: str, job_id: str) -> Job:
    job = Job.get_or_none((Job.cluster_id == cluster_id) & (Job.id == job_id))
    if job is None:
        raise _not_found(cluster_id, job_id)
    return job


def _with_activity(cluster_id: str, detail: dict, event_limit: int = 100) -> dict:
    events.flush()  # its latest events are in the log before they are read
    return {**detail, "activity": clusters.activity(cluster_id, job_id=detail["id"], limit=event_limit)}


def rerun(cluster_id: str, job_id: str) -> dict:
    """failure | cancelled -> pending as a new attempt (statements.rerun_jobs); Conflict naming the
    status for any other state. Returns the job's detail as the re-run left it (a worker may have
    claimed it since)."""

    def status() -> str:
        return _job(cluster_id, job_id).status

    def tx():
        clusters.get_cluster(cluster_id)
        before = status()  # only a re-run leaves these states, and the UPDATE's fence catches a concurrent one
        rollups.count_before_rerun(cluster_id, job_id)  # rolled back with the re-run when it conflicts
        row = statements.rerun_jobs(cluster_id, job_id)
        if row is None:
            now = status()
            raise Conflict(f"job {job_id!r} is {now}: only a job in {' or '.join(RERUNNABLE)} can be re-run",
                           {"jobId": job_id, "status": now}, code="job_not_rerunnable")
        notify_in_transaction([queue_topic(cluster_id, row[0])])
        return before, _detail(_job(cluster_id, job_id))

    previous, detail = db.unit_of_work(tx)
    hub.wake([queue_topic(cluster_id, detail["service"])])
    events.record(cluster_id, EventType.JOB_RERUN, job_id=job_id, service=detail["service"], previousStatus=previous,
                  attempt=detail["attempt"], attemptsAllowed=detail["attemptsAllowed"])
    return _with_activity(cluster_id, detail)
