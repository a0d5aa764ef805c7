"""The job state machine and the activity log's vocabulary, in one place.

Every status a job or machine row can hold, which moves between them are allowed, who makes each
one and what fences it, and every event type the engine records. The SQL in statements.py and the
maintenance tasks are built from these names; docs/state-machine.md draws the same machine.

A function that throws ends `success` with resultType `rejection` (what the published SDK
expects); `failure` means the control-plane gave up: the attempts were spent.
"""
from __future__ import annotations

from dataclasses import dataclass


class JobStatus:
    SCHEDULED = "scheduled"  # not due yet (a delayed call, a back-off): run_at_ms says when; not claimable
    PENDING = "pending"  # created, put back by maintenance, or due; claimable
    RUNNING = "running"  # claimed: attempt += 1, machine_id and deadline_ms set
    SUCCESS = "success"  # a result from the attempt's holder (resultType resolution or rejection)
    FAILURE = "failure"  # the control-plane gave up: attempts spent, or a deadline passed (`reason`)
    CANCELLED = "cancelled"  # cancelled by a caller or an operator (`reason`)


# Terminal: only an operator's re-run (failure, cancelled -> pending) moves a job on from them.
TERMINAL = (JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELLED)
IN_FLIGHT = (JobStatus.SCHEDULED, JobStatus.PENDING, JobStatus.RUNNING)
ALL = (JobStatus.SCHEDULED, JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCESS, JobStatus.FAILURE,
       JobStatus.CANCELLED)
RERUNNABLE = (JobStatus.FAILURE, JobStatus.CANCELLED)


# What a status answer's `status` says, for clients that know only the original's four (the published
# SDK's caller ignores any other status and waits for ever). A scheduled job answers `pending`. A job
# that ended with a result the control-plane wrote itself (cancelled, a deadline passed: a packed
# rejection naming why) answers `success` with that rejection, which the published SDK's caller
# throws as an error with that message. Answers also carry `state` (the status here) and `reason`.
WIRE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCESS, JobStatus.FAILURE)


def wire_status(status: str, result_type: str | None) -> str:
    if status == JobStatus.SCHEDULED:
        return JobStatus.PENDING
    if status in TERMINAL and result_type is not None:
        return JobStatus.SUCCESS
    return status


class ResultType:
    RESOLUTION = "resolution"  # the function returned
    REJECTION = "rejection"  # the function threw: still `success` (the published SDK expects it)


class MachineStatus:
    ACTIVE = "active"  # spoke within the machine timeout (any request with x-machine-id)
    INACTIVE = "inactive"  # silent longer than that: maintenance recovers its running jobs


class EventType:
    """What the activity log records about jobs and machines (clients send their own types too)."""

    JOB_CREATED = "jobCreated"
    JOB_JOINED = "jobJoined"  # a call resolved to an existing job (executionId or cache)
    JOB_RECEIVED = "jobReceived"  # claimed by a machine
    JOB_RESULTED = "jobResulted"
    JOB_RESULTED_BUT_NOT_PERSISTED = "jobResultedButNotPersisted"  # fenced off, with the reason
    JOB_STALLED = "jobStalled"  # its attempt timed out or its machine went silent
    JOB_RECOVERED = "jobRecovered"  # put back to pending for another attempt
    JOB_STALLED_TOO_MANY_TIMES = "jobStalledTooManyTimes"  # failed: no attempts left
    MACHINE_STALLED = "machineStalled"
    JOB_CANCELLED = "jobCancelled"
    JOB_DEADLINE_EXCEEDED = "jobDeadlineExceeded"  # failed: a queue or call deadline passed
    JOB_RETRY_SCHEDULED = "jobRetryScheduled"  # rejected, attempts left: due again after a back-off
    JOB_DUE = "jobDue"  # scheduled -> pending
    JOB_RERUN = "jobRerun"  # an operator put a failed or cancelled job back
    SCHEDULE_FIRED = "scheduleFired"  # a schedule's tick made a call
    ACCESS_POINT_USED = "accessPointUsed"  # an access point made a call (execute); meta: its name, targetFn


@dataclass(frozen=True)
class Transition:
    name: str  # the function in statements.py that makes it
    source: str | None  # None: the row did not exist
    target: str
    by: str  # who calls it
    guard: str  # the fence in its WHERE clause
    events: tuple[str, ...]


TRANSITIONS = (
    Transition("insert_jobs", None, JobStatus.PENDING, "create",
               "(cluster_id, id) is new: ON CONFLICT DO NOTHING / INSERT OR IGNORE",
               (EventType.JOB_CREATED,)),
    Transition("insert_jobs", None, JobStatus.SCHEDULED, "create with delaySeconds, or a runAt still ahead",
               "as above; due (runAt, or the database's clock + delaySeconds) > the database's clock",
               (EventType.JOB_CREATED,)),
    Transition("claim_jobs", JobStatus.PENDING, JobStatus.RUNNING, "claim",
               "status = pending, repeated in the UPDATE (PostgreSQL picks with FOR UPDATE SKIP LOCKED)",
               (EventType.JOB_RECEIVED,)),
    Transition("claim_jobs_limited", JobStatus.PENDING, JobStatus.RUNNING, "claim under concurrency limits (limits.py)",
               "as claim_jobs, inside the transaction holding the (cluster, service) limits lock that counted the"
               " running jobs: at most the room each limit has left",
               (EventType.JOB_RECEIVED,)),
    Transition("store_results", JobStatus.RUNNING, JobStatus.SUCCESS, "result",
               "status = running AND machine_id = the attempt's holder",
               (EventType.JOB_RESULTED,)),
    Transition("store_results", JobStatus.RUNNING, JobStatus.SCHEDULED, "result: a rejection with back-off attempts left",
               "as above, and resultType = rejection AND attempt < backoff_attempts (in the same statement)",
               (EventType.JOB_RESULTED, EventType.JOB_RETRY_SCHEDULED)),
    Transition("promote_due", JobStatus.SCHEDULED, JobStatus.PENDING, "maintenance: PromoteDueJobs",
               "status = scheduled AND run_at_ms <= now, on rows locked by the read",
               (EventType.JOB_DUE,)),
    Transition("requeue_stalled", JobStatus.RUNNING, JobStatus.PENDING, "maintenance: RecoverStalledJobs",
               "status = running on rows locked by the read; attempt < attempts_allowed",
               (EventType.JOB_STALLED, EventType.JOB_RECOVERED)),
    Transition("fail_stalled", JobStatus.RUNNING, JobStatus.FAILURE, "maintenance: RecoverStalledJobs",
               "status = running on rows locked by the read; attempt >= attempts_allowed, or the call "
               "deadline passed (then with a reason and a packed rejection)",
               (EventType.JOB_STALLED, EventType.JOB_STALLED_TOO_MANY_TIMES, EventType.JOB_DEADLINE_EXCEEDED)),
    # Cancel and deadlines: endings the control-plane writes itself, a reason and a packed rejection.
    *(Transition("cancel_jobs", source, JobStatus.CANCELLED, "cancel (caller or operator)",
                 "status = scheduled, pending or running (a job that finished first is left alone)",
                 (EventType.JOB_CANCELLED,))
      for source in (JobStatus.SCHEDULED, JobStatus.PENDING, JobStatus.RUNNING)),
    *(Transition("expire_waiting", source, JobStatus.FAILURE, "maintenance: ExpireDeadlines",
                 "status = pending or scheduled on rows locked by the read; queue_deadline_ms < now",
                 (EventType.JOB_DEADLINE_EXCEEDED,))
      for source in (JobStatus.SCHEDULED, JobStatus.PENDING)),
    # An operator's re-run (POST /clusters/:id/jobs/:jobId/rerun): the only way out of a terminal state.
    Transition("rerun_jobs", JobStatus.FAILURE, JobStatus.PENDING, "operator: job admin rerun",
               "status IN (failure, cancelled) in the UPDATE", (EventType.JOB_RERUN,)),
    Transition("rerun_jobs", JobStatus.CANCELLED, JobStatus.PENDING, "operator: job admin rerun",
               "status IN (failure, cancelled) in the UPDATE", (EventType.JOB_RERUN,)),
)


def allowed(source: str | None, target: str) -> bool:
    """Whether some transition moves a job from `source` to `target`."""
    return any(t.source == source and t.target == target for t in TRANSITIONS)


# --- deployments (issue 12): docs/state-machine.md "Deployments" draws the same machine ---------


class DeploymentStatus:
    UPLOADING = "uploading"  # created: its bundle is being uploaded; expires unless released in time
    DEPLOYING = "deploying"  # released: its stack is being created or updated
    ACTIVE = "active"  # its stack succeeded: the service's calls carry its id; at most one per service
    INACTIVE = "inactive"  # a newer deployment of the service turned active, or it was rolled back from
    FAILED = "failed"  # its stack failed, its upload expired, or its function never polled (`reason`)


DEPLOYMENT_STATUSES = (DeploymentStatus.UPLOADING, DeploymentStatus.DEPLOYING, DeploymentStatus.ACTIVE,
                       DeploymentStatus.INACTIVE, DeploymentStatus.FAILED)

# (source, target): every move a deployment may make. A failed stack update rolls back: the
# deployment that was released fails, the one active before stays active. A rollback releases an
# inactive deployment again (inactive -> deploying).
DEPLOYMENT_TRANSITIONS = (
    (None, DeploymentStatus.UPLOADING),
    (DeploymentStatus.UPLOADING, DeploymentStatus.DEPLOYING),
    (DeploymentStatus.UPLOADING, DeploymentStatus.FAILED),
    (DeploymentStatus.DEPLOYING, DeploymentStatus.ACTIVE),
    (DeploymentStatus.DEPLOYING, DeploymentStatus.FAILED),
    (DeploymentStatus.ACTIVE, DeploymentStatus.INACTIVE),
    (DeploymentStatus.ACTIVE, DeploymentStatus.FAILED),
    (DeploymentStatus.INACTIVE, DeploymentStatus.DEPLOYING),
)


def deployment_allowed(source: str | None, target: str) -> bool:
    return (source, target) in DEPLOYMENT_TRANSITIONS


class DeploymentEventType:
    """What the activity log records about deployments (the original's names where it had them)."""

    CREATED = "deploymentCreated"
    UPLOADED = "deploymentUploaded"  # its bundle was checked: size and digests recorded
    INITIATED = "deploymentInitiated"  # released: the stack create or update was sent
    RESULTED = "deploymentResulted"  # its stack succeeded or failed (meta: the stack status)
    INACTIVATED = "deploymentInactivated"
    NOTIFIED = "deploymentNotified"  # its function was invoked to pick up waiting calls
    STALLED = "deploymentStalled"  # woken too often with no machine polling: failed
    EXPIRED = "deploymentExpired"  # never released in time: failed
    DELETED = "deploymentDeleted"  # the service's stack, function and bundles were removed


class AssetStatus:
    """An asset (engine/assets.py): an upload URL was handed out; then the object was read back and counted."""

    PENDING = "pending"
    UPLOADED = "uploaded"


class ClientLibraryStatus:
    """A client-library version (engine/client_libraries.py): reserved by a publish, it counts once published."""

    RESERVED = "reserved"  # its number is taken until expires_at; its package is being uploaded
    PUBLISHED = "published"  # its package was read back and checked: npm and pip serve it
