"""Waking deployed functions, and failing deployments that never came to life (the leader only).

A Lambda function runs only when invoked; its SDK then long-polls for the service's calls and stops
when idle. So, each run, for every active deployment (a bounded batch, index deployments_status):

- a machine of the deployment polled its service lately (a worker row of the service, index
  workers_cluster_id_service_machine_id, whose machine carries the deployment's id): it is alive;
  its wake-up count resets and `polled_at` records that it has polled at least once;
- else, when calls of the service are pending (index jobs_claim) and the last wake-up is at
  least `interval` old: one asynchronous invoke (InvocationType=Event), counted in `wakeups`,
  with a deploymentNotified event; the count and time move in one conditional UPDATE first, so
  a lease handover cannot invoke twice for one interval;
- past `max_wakeups` with no machine of it ever polling: failed, deploymentStalled.

Uploading deployments past their `expires_at` fail too (deploymentExpired). The invoke happens
outside the transaction; a failed invoke is an event, and the next interval tries again.

SNS may lose a notification (an endpoint down during a delivery), so a deployment still
`deploying` STACK_CHECK_SECONDS after its release has its stack read (DescribeStacks, at most once
per STACK_CHECK_SECONDS each): a finished stack is applied as its event would have been, with the
failed resource's reason from DescribeStackEvents; a stack gone (a create deleted on failure) fails it.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Callable

import peewee

from .. import db
from ..cloud import cloudformation, lambda_functions, sns
from ..models import Deployment, Job, Machine, Worker
from ..observability.events import events
from ..settings import Settings
from . import machines
from .deployments import forget_active, on_stack_event
from .signals import SERVICES_TOPIC, notify_in_transaction
from .states import DeploymentEventType as E, DeploymentStatus as S, JobStatus

log = logging.getLogger(__name__)

BATCH = 100
STACK_CHECK_SECONDS = 120.0
STACK_CHECK_BATCH = 10
# A machine counts as live for this long after its last poll began: a long poll lasts up to 20 s
# and refreshes its worker row when it starts (writes are throttled to one per 5 s), so a machine
# parked in a poll must not look gone, which would start a second instance of the function.
MIN_LIVE_SECONDS = 30.0


def expire_uploads(now: dt.datetime, batch: int = BATCH) -> int:
    def tx() -> list[Deployment]:
        late = list(Deployment.select(Deployment.id, Deployment.cluster_id, Deployment.service, Deployment.expires_at)
                    .where((Deployment.status == S.UPLOADING) & (Deployment.expires_at < now)).limit(batch))
        done = []
        for row in late:
            moved = (Deployment.update(status=S.FAILED, updated_at=now,
                                       reason="it was not released before it expired; create a new deployment")
                     .where((Deployment.id == row.id) & (Deployment.status == S.UPLOADING)).execute())
            if moved:
                done.append(row)
        return done

    expired = db.unit_of_work(tx)
    for row in expired:
        events.record(row.cluster_id, E.EXPIRED, deployment_id=row.id, service=row.service,
                      expiresAt=row.expires_at.isoformat())
    return len(expired)


def _live(row: Deployment, since: dt.datetime) -> bool:
    polled = (Worker.select(Worker.pk)
              .join(Machine, on=((Machine.cluster_id == Worker.cluster_id) & (Machine.id == Worker.machine_id)))
              .where((Worker.cluster_id == row.cluster_id) & (Worker.service == row.service)
                     & (Worker.last_poll_at >= since) & (Machine.deployment_id == row.id)))
    return polled.exists()


def _pending(row: Deployment) -> int:
    return (Job.select(Job.seq).where((Job.cluster_id == row.cluster_id) & (Job.service == row.service)
                                      & (Job.status == JobStatus.PENDING)).limit(1000).count())  # bounded


def _function_state(settings: Settings, function_name: str,
                    describe: Callable[[Settings, str], dict | None]) -> str:
    """What Lambda says about a function that never polled (GetFunction), for the reason."""
    try:
        config = describe(settings, function_name)
    except Exception as exc:
        return f"; its state could not be read ({type(exc).__name__})"
    if config is None:
        return "; the function does not exist"
    reason = config.get("StateReason") or config.get("LastUpdateStatusReason")
    return f"; Lambda says it is {config.get('State', 'unknown')}" + (f" ({reason})" if reason else "")


def wake(now: dt.datetime, settings: Settings, *, interval: float, max_wakeups: int, batch: int = BATCH,
         invoke: Callable[[Settings, str], int] = lambda_functions.wake,
         describe: Callable[[Settings, str], dict | None] = lambda_functions.describe) -> dict[str, int]:
    since = now - dt.timedelta(seconds=max(interval, MIN_LIVE_SECONDS))
    machines.flush()  # a poll this process still holds keeps its deployment alive
    due_before = now - dt.timedelta(seconds=interval)

    def tx(after: str):
        rows = list(Deployment.select().where((Deployment.status == S.ACTIVE) & (Deployment.id > after))
                    .order_by(Deployment.id).limit(batch))
        to_wake, stalled, alive = [], [], 0
        for row in rows:
            if _live(row, since):
                alive += 1
                if row.wakeups or row.polled_at is None:
                    (Deployment.update(wakeups=0, polled_at=peewee.fn.COALESCE(Deployment.polled_at, now))
                     .where(Deployment.id == row.id).execute())
                continue
            pending = _pending(row)
            if not pending or (row.last_woken_at is not None and row.last_woken_at > due_before):
                continue
            if row.wakeups >= max_wakeups and row.polled_at is None:
                moved = (Deployment.update(status=S.FAILED, updated_at=now, token_hash=None,
                                           reason=f"its function was woken {row.wakeups} times and no machine of it "
                                                  "ever polled: check its logs (GET .../logs)")
                         .where((Deployment.id == row.id) & (Deployment.status == S.ACTIVE)).execute())
                if moved:
                    notify_in_transaction([SERVICES_TOPIC])  # no longer its service's active one (active_for)
                    stalled.append(row)
                continue
            last = Deployment.last_woken_at.is_null() if row.last_woken_at is None \
                else (Deployment.last_woken_at == row.last_woken_at)
            moved = (Deployment.update(wakeups=Deployment.wakeups + 1, last_woken_at=now)
                     .where((Deployment.id == row.id) & (Deployment.status == S.ACTIVE) & last).execute())
            if moved:
                to_wake.append((row, pending))
        return to_wake, stalled, alive, (rows[-1].id if len(rows) == batch else None)

    # Every active deployment of every cluster, a page (one short transaction) at a time.
    to_wake, stalled, alive, after = [], [], 0, ""
    while after is not None:
        woken, failed_now, live, after = db.unit_of_work(lambda after=after: tx(after))
        to_wake, stalled, alive = to_wake + woken, stalled + failed_now, alive + live
    for row in stalled:
        forget_active(row.cluster_id, row.service)
        state = _function_state(settings, row.function_name, describe)
        db.unit_of_work(lambda row=row, state=state: Deployment.update(
            reason=peewee.fn.SUBSTR(Deployment.reason.concat(state), 1, 1024)).where(Deployment.id == row.id).execute())
        events.record(row.cluster_id, E.STALLED, deployment_id=row.id, service=row.service, wakeups=row.wakeups,
                      function=state.removeprefix("; "))
    failed = 0
    for row, pending in to_wake:
        try:
            status = invoke(settings, row.function_name)
            events.record(row.cluster_id, E.NOTIFIED, deployment_id=row.id, service=row.service,
                          pendingJobs=pending, wakeups=row.wakeups + 1, statusCode=status, wokenAt=now.isoformat())
        except Exception as exc:
            failed += 1
            log.warning("waking %s failed: %s", row.function_name, type(exc).__name__)
            events.record(row.cluster_id, E.NOTIFIED, deployment_id=row.id, service=row.service,
                          pendingJobs=pending, wakeups=row.wakeups + 1, error=str(exc)[:500], wokenAt=now.isoformat())
    return {"woken": len(to_wake) - failed, "wakeFailed": failed, "stalledDeployments": len(stalled), "alive": alive}


def check_stacks(now: dt.datetime, settings: Settings, *, after_seconds: float = STACK_CHECK_SECONDS,
                 batch: int = STACK_CHECK_BATCH) -> dict[str, int]:
    """Deployments still deploying long after their release: read their stacks (see the docstring)."""
    cutoff = now - dt.timedelta(seconds=after_seconds)

    def tx() -> list[Deployment]:
        rows = list(Deployment.select().where((Deployment.status == S.DEPLOYING) & (Deployment.released_at < cutoff)
                                              & (Deployment.last_woken_at.is_null()
                                                 | (Deployment.last_woken_at < cutoff)))
                    .order_by(Deployment.released_at).limit(batch))
        if rows:  # last_woken_at: when its stack was last read, while it deploys (a release clears it)
            Deployment.update(last_woken_at=now).where(Deployment.id.in_([r.id for r in rows])).execute()
        return rows

    applied = 0
    for row in db.unit_of_work(tx):
        try:
            stack = cloudformation.describe(settings, row.stack_name)
            token = json.loads(row.meta or "{}").get("requestToken", "None")
            if stack is None:
                fields = {"StackName": row.stack_name, "ResourceType": "AWS::CloudFormation::Stack",
                          "ResourceStatus": "DELETE_COMPLETE", "ClientRequestToken": token,
                          "ResourceStatusReason": "the stack no longer exists (a failed create is deleted)"}
            else:
                fields = {"StackName": row.stack_name, "ResourceType": "AWS::CloudFormation::Stack",
                          "ResourceStatus": stack.get("StackStatus", ""), "ClientRequestToken": token,
                          "ResourceStatusReason": str(stack.get("StackStatusReason") or "")}
                if sns.stack_outcome(fields) == "failed":
                    fields["ResourceStatusReason"] = (cloudformation.failure_reason(settings, row.stack_name)
                                                      or fields["ResourceStatusReason"])
            if on_stack_event(fields, sns.stack_outcome(fields))["result"] in ("activated", "failed"):
                applied += 1
        except Exception as exc:  # AWS unreachable: the next check retries
            log.warning("reading the stack %s failed: %s", row.stack_name, type(exc).__name__)
    return {"stacksApplied": applied}
