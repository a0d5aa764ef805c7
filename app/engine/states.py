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
    PENDING = "pending"  # created, or put back by maintenance; claimable
    RUNNING = "running"  # claimed: attempt += 1, machine_id and deadline_ms set
    SUCCESS = "success"  # a result from the attempt's holder (resultType resolution or rejection)
    FAILURE = "failure"  # maintenance gave up: the attempt stalled and none were left


TERMINAL = (JobStatus.SUCCESS, JobStatus.FAILURE)  # never left: a finished job's row no longer changes
IN_FLIGHT = (JobStatus.PENDING, JobStatus.RUNNING)
ALL = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCESS, JobStatus.FAILURE)


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
    Transition("claim_jobs", JobStatus.PENDING, JobStatus.RUNNING, "claim",
               "status = pending, repeated in the UPDATE (PostgreSQL picks with FOR UPDATE SKIP LOCKED)",
               (EventType.JOB_RECEIVED,)),
    Transition("store_results", JobStatus.RUNNING, JobStatus.SUCCESS, "result",
               "status = running AND machine_id = the attempt's holder",
               (EventType.JOB_RESULTED,)),
    Transition("requeue_stalled", JobStatus.RUNNING, JobStatus.PENDING, "maintenance: RecoverStalledJobs",
               "status = running on rows locked by the read; attempt < attempts_allowed",
               (EventType.JOB_STALLED, EventType.JOB_RECOVERED)),
    Transition("fail_stalled", JobStatus.RUNNING, JobStatus.FAILURE, "maintenance: RecoverStalledJobs",
               "status = running on rows locked by the read; attempt >= attempts_allowed",
               (EventType.JOB_STALLED, EventType.JOB_STALLED_TOO_MANY_TIMES)),
)


def allowed(source: str | None, target: str) -> bool:
    """Whether some transition moves a job from `source` to `target`."""
    return any(t.source == source and t.target == target for t in TRANSITIONS)
