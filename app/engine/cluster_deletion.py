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
Its deployments' stacks (hence their functions) are deleted next, then the deployment rows, and its
stored objects (bundles, packages: the assets table) go last, each object before its row, once the
process knows the settings and the asset store (`configure`, at start-up); AWS or a store that fails
leaves the rest for the next purge, and the tombstone waits for them.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from .. import db
from ..errors import NotFound
from ..observability.events import events
from ..cloud.assets import StoreError
from ..models import (AccessPoint, Asset, ClientLibrary, Cluster, Deployment, Event, Job, Machine, MetricRollup,
                      RegistryToken, Schedule, Service, Worker, utcnow)
from . import clusters, deployments, machines

TABLES = (Job, Event, Machine, Worker, Service, Schedule, AccessPoint, MetricRollup, ClientLibrary, RegistryToken)
BATCH = 1000
ASSET_BATCH = 100  # objects deleted one request each (S3): a smaller batch between budget checks
SETTLE_SECONDS = 60.0

log = logging.getLogger(__name__)
_store = None  # the asset store (cloud/assets.py), set by configure() at start-up
_settings = None  # the settings (the cloud ones reach the stacks), set by configure() too


def configure(store, settings) -> None:
    global _store, _settings
    _store, _settings = store, settings


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
    if _store is None or _settings is None:  # not known yet (maintenance may start first): the rows wait, so
        return not (_has(Deployment, cluster_id) or _has(Asset, cluster_id)), total  # no stack or object is orphaned
    if not deployments.delete_stacks_of_deleted_cluster(cluster_id, _settings):
        return False, total
    while True:
        n = delete_batch(Deployment, cluster_id, batch)
        total += n
        if n < batch:
            break
    while True:
        try:
            n = delete_assets_batch(cluster_id, _store)
        except StoreError as exc:
            log.warning("deleting the stored objects of deleted cluster %s failed (retried later): %s", cluster_id, exc)
            return False, total
        total += n
        if n < ASSET_BATCH:
            return True, total
        if stop is not None and time.monotonic() >= stop:
            return False, total


def _has(model, cluster_id: str) -> bool:
    return db.unit_of_work(lambda: model.select(1).where(model.cluster_id == cluster_id).exists(), transaction=False,
                           idempotent=True)


def delete_assets_batch(cluster_id: str, store, batch: int = ASSET_BATCH) -> int:
    """Delete up to `batch` of the cluster's stored objects, each before its row; how many went."""
    rows = db.unit_of_work(lambda: list(Asset.select(Asset.id, Asset.key).where(Asset.cluster_id == cluster_id)
                                        .limit(batch)), transaction=False, idempotent=True)
    for row in rows:
        store.delete(row.key)
        db.unit_of_work(lambda row=row: Asset.delete().where((Asset.id == row.id)
                                                             & (Asset.cluster_id == cluster_id)).execute())
    return len(rows)


def drop_tombstone(cluster_id: str, now: dt.datetime, settle_seconds: float = SETTLE_SECONDS) -> bool:
    """Delete the marked cluster's row if it was marked `settle_seconds` before `now` and nothing
    of it is left in any table (checked in the same transaction); whether it went."""

    def tx() -> bool:
        if any(m.select(1).where(m.cluster_id == cluster_id).exists() for m in TABLES + (Deployment, Asset)):
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
    machines.flush()  # and its machines' heartbeats, which would make rows again after it
    finished, _ = purge(cluster_id, budget_seconds=budget_seconds)
    return {"id": cluster_id, "deletedAt": clusters.iso(deleted_at), "finished": finished}
