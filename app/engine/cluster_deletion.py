"""Deleting a cluster: at once it authenticates nothing; then its rows go in bounded batches.

`mark` sets `deleted_at` and deletes the cluster's access points and registry tokens in one transaction
(neither kind of token is cached, so they stop at once) and tells every process to forget its cached
secrets (clusters.credentials_changed). `purge` then deletes everything else of it, table by table
in TABLES' order, BATCH rows a statement, each statement its own short transaction, so a cluster
of millions of jobs never makes one long transaction. The cluster row itself (a tombstone that
keeps the id refused and lets the work resume) goes last, by `drop_tombstone`, once nothing of the
cluster is left and it was marked at least SETTLE_SECONDS ago: what requests in flight at the mark
still wrote (an event flushed from a buffer, a long poll's last claim) goes in a later purge. If
the process dies mid-way, the maintenance leader's FinishClusterDeletions goes on where it stopped.
"""
from __future__ import annotations

import datetime as dt
import time

from .. import db
from ..errors import NotFound
from ..observability.events import events
from ..models import (AccessPoint, ClientLibrary, Cluster, Event, Job, Machine, MetricRollup, RegistryToken, Schedule,
                      Service, Worker, utcnow)
from . import clusters

TABLES = (Job, Event, Machine, Worker, Service, Schedule, AccessPoint, MetricRollup, ClientLibrary, RegistryToken)
BATCH = 1000
SETTLE_SECONDS = 60.0


def mark(cluster_id: str) -> dt.datetime:
    """Mark the cluster deleted (NotFound if there is no such live cluster); when it was."""

    def tx() -> dt.datetime:
        now = utcnow()
        marked = (Cluster.update(deleted_at=now)
                  .where((Cluster.id == cluster_id) & Cluster.deleted_at.is_null()).execute())
        if not marked:
            raise NotFound(f"cluster {cluster_id!r} does not exist", {"clusterId": cluster_id},
                           code="cluster_not_found")
        AccessPoint.delete().where(AccessPoint.cluster_id == cluster_id).execute()
        RegistryToken.delete().where(RegistryToken.cluster_id == cluster_id).execute()  # they read nothing more
        clusters.credentials_changed()
        return now

    deleted_at = db.unit_of_work(tx)
    clusters.forget_secrets()
    return deleted_at


def delete_batch(model, cluster_id: str, batch: int = BATCH) -> int:
    """Delete up to `batch` rows of the cluster from one table (one statement); how many went."""
    pk = model._meta.primary_key
    chosen = model.select(pk).where(model.cluster_id == cluster_id).limit(batch)
    return db.unit_of_work(lambda: model.delete().where(pk.in_(chosen)).execute())


def purge(cluster_id: str, *, batch: int = BATCH, budget_seconds: float | None = None) -> tuple[bool, int]:
    """Delete the cluster's rows, batch by batch, for at most `budget_seconds` (None: until done).
    (whether every table was emptied of it, rows deleted)."""
    stop = None if budget_seconds is None else time.monotonic() + budget_seconds
    total = 0
    for model in TABLES:
        while True:
            n = delete_batch(model, cluster_id, batch)
            total += n
            if n < batch:
                break
            if stop is not None and time.monotonic() >= stop:
                return False, total
    return True, total


def drop_tombstone(cluster_id: str, now: dt.datetime, settle_seconds: float = SETTLE_SECONDS) -> bool:
    """Delete the marked cluster's row if it was marked `settle_seconds` before `now` and nothing
    of it is left in any table (checked in the same transaction); whether it went."""

    def tx() -> bool:
        if any(m.select(1).where(m.cluster_id == cluster_id).exists() for m in TABLES):
            return False
        cutoff = now - dt.timedelta(seconds=settle_seconds)
        return bool(Cluster.delete().where((Cluster.id == cluster_id) & (Cluster.deleted_at <= cutoff)).execute())

    return db.unit_of_work(tx)


def marked(limit: int) -> list[str]:
    """Clusters being deleted, oldest mark first."""
    return db.unit_of_work(lambda: [c.id for c in Cluster.select(Cluster.id).where(Cluster.deleted_at.is_null(False))
                                    .order_by(Cluster.deleted_at).limit(limit)], transaction=False, idempotent=True)


REQUEST_BUDGET_SECONDS = 5.0


def delete_cluster(cluster_id: str, budget_seconds: float = REQUEST_BUDGET_SECONDS) -> dict:
    """DELETE /clusters/:id: mark it, then purge for up to `budget_seconds`; `finished` says whether
    every row but the tombstone went (else maintenance goes on)."""
    deleted_at = mark(cluster_id)
    events.flush()  # this process's buffered events of the cluster go now rather than after the purge
    finished, _ = purge(cluster_id, budget_seconds=budget_seconds)
    return {"id": cluster_id, "deletedAt": clusters.iso(deleted_at), "finished": finished}
