"""Cancelling a call: the caller's (cluster secret) or an operator's (management secret).

A job still in flight ends `cancelled` at once, with a reason saying who cancelled it and a packed
rejection naming the job, its function and that reason (payloads.py): the status answer says
`success` with that rejection, which the published SDK's caller throws as an error carrying the
message, while `state` and `reason` tell our SDK what happened. A running attempt's late result
is fenced (store_results needs status = running). Every waiting caller is woken at once through
the job's topic; a worker learns it from the status of its running jobs (our SDK asks).
"""
from __future__ import annotations

from .. import db
from ..errors import Conflict, NotFound
from ..models import Job, utcnow
from ..observability.events import events
from . import clusters, payloads, statements
from .jobs import job_status
from .signals import hub, job_topic, notify_in_transaction
from .states import TERMINAL, EventType, JobStatus

BY_CALLER = "by the caller"
BY_OPERATOR = "by an operator"
MAX_REASON = 500  # characters of the reason text a request may give (the schema says so too)


def reason_for(by: str, text: str | None) -> str:
    """What `reason` says: who cancelled it, and why if they said."""
    return f"cancelled {by}: {text}" if text else f"cancelled {by}"


def cancel_job(cluster_id: str, job_id: str, *, by: str, text: str | None = None) -> dict:
    """Cancel the job unless it finished; returns its status row (as GET /jobs/:id answers).

    Cancelling a cancelled job answers its row again (idempotent); a job that finished otherwise
    is a Conflict naming its status; an unknown id (or another cluster's) is NotFound."""
    reason = reason_for(by, text)

    def tx() -> tuple[Job, bool]:
        job = (Job.select(Job.seq, Job.status, Job.service, Job.target_fn, Job.machine_id)
               .where((Job.cluster_id == cluster_id) & (Job.id == job_id)).first())
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist in this cluster", {"jobId": job_id}, code="job_not_found")
        if job.status in TERMINAL:
            return job, False
        ending = statements.Ending(job.seq, reason, payloads.cancelled(job_id, job.service, job.target_fn, reason))
        if not statements.cancel_jobs([ending], resulted_at=utcnow()):
            # It finished between the read and the fenced update: answer what it became.
            job.status = Job.select(Job.status).where(Job.seq == job.seq).scalar()
            return job, False
        notify_in_transaction([job_topic(cluster_id, job_id)])
        return job, True

    # Idempotent: run again after a commit whose answer was lost, it finds the job cancelled.
    job, cancelled = db.unit_of_work(tx, idempotent=True)
    if cancelled:
        hub.wake([job_topic(cluster_id, job_id)])
        events.record(cluster_id, EventType.JOB_CANCELLED, job_id=job_id, machine_id=job.machine_id,
                      service=job.service, targetFn=job.target_fn, reason=reason, was=job.status)
        # In the log before the answer (events buffer up to half a second per process), so whoever
        # reads the job's activity next, maybe through another process, finds it there. Cancels are
        # rare: one INSERT on the request is cheap.
        events.flush()
    elif job.status != JobStatus.CANCELLED:
        raise Conflict(f"job {job_id!r} already finished ({job.status}); only a call in flight can be cancelled",
                       {"jobId": job_id, "status": job.status}, code="job_finished")
    return job_status(cluster_id, job_id)


def cancel_as_operator(cluster_id: str, job_id: str, text: str | None = None) -> dict:
    """cancel_job through the management API and the console: an unknown cluster is NotFound of
    its own."""
    db.unit_of_work(lambda: clusters.get_cluster(cluster_id))
    return cancel_job(cluster_id, job_id, by=BY_OPERATOR, text=text)
