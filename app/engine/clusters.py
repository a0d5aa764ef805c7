"""Clusters: creation, credentials, settings, and the views the management API shows."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import OrderedDict

import peewee

from .. import db, sealing
from ..errors import NotFound
from ..models import Cluster, Event, Job, Machine, Service, Worker, utcnow
from . import ids, machines as machines_


def iso(value: dt.datetime | None) -> str | None:
    return value.replace(tzinfo=dt.timezone.utc).isoformat().replace("+00:00", "Z") if value else None


# --- secrets at rest: sealed by app/sealing.py, looked up by hash -------------------------------

_box: sealing.Box | None = None  # set by configure_sealing() at start-up


def configure_sealing(box: sealing.Box) -> None:
    global _box
    _box = box


def _secret(cluster: Cluster) -> str:
    if cluster.api_secret_sealed is None:  # in clear: written by an older release; sealed at the next start
        return cluster.api_secret
    return _box.unseal(cluster.api_secret_sealed, cluster.api_secret_key)


def seal_stored_secrets() -> dict[str, int]:
    """Seal secrets still in clear, and seal again by the newest key those sealed by an older one;
    refuse (SealingError) if a row's key is not in SECRETS_KEY. Once per start, under a lock, so
    replicas starting together do it once; a row is rewritten only if it still needs it."""
    box = _box

    def tx() -> dict[str, int]:
        db.dialect.lock_key("differential:seal-secrets")
        unknown = [k for (k,) in Cluster.select(Cluster.api_secret_key).distinct().tuples()
                   if k is not None and k not in box.key_ids]
        if unknown:
            raise sealing.SealingError(
                f"cluster secrets in this database are sealed with key(s) {', '.join(unknown)}, which SECRETS_KEY "
                f"does not hold (it holds {', '.join(box.key_ids)}): start with the key(s) that sealed them, "
                "after the newest")
        counts = {"sealed": 0, "resealed": 0}
        stale = list(Cluster.select(Cluster.id, Cluster.api_secret, Cluster.api_secret_sealed, Cluster.api_secret_key)
                     .where(Cluster.api_secret.is_null(False) | Cluster.api_secret_sealed.is_null()
                            | (Cluster.api_secret_key != box.primary_id)))
        for row in stale:
            token, key = box.seal(_secret(row))
            Cluster.update(api_secret=None, api_secret_sealed=token, api_secret_key=key).where(
                Cluster.id == row.id).execute()
            counts["sealed" if row.api_secret_sealed is None else "resealed"] += 1
        return counts

    return db.unit_of_work(tx)


def _public(cluster: Cluster) -> dict:
    return {"id": cluster.id, "apiSecret": _secret(cluster), "createdAt": iso(cluster.created_at),
            "description": cluster.description}


def create_cluster(description: str | None = None) -> dict:
    secret = ids.api_secret()
    token, key = _box.seal(secret)
    cluster = db.unit_of_work(lambda: Cluster.create(
        id=ids.cluster_id(), api_secret_sealed=token, api_secret_key=key, api_secret_hash=ids.secret_hash(secret),
        description=description, created_at=utcnow()))
    return _public(cluster)


def list_clusters() -> list[dict]:
    return db.unit_of_work(lambda: [_public(c) for c in Cluster.select().order_by(Cluster.created_at, Cluster.id)])


def get_cluster(cluster_id: str) -> Cluster:
    cluster = Cluster.get_or_none(Cluster.id == cluster_id)
    if cluster is None:
        raise NotFound(f"cluster {cluster_id!r} does not exist", {"clusterId": cluster_id}, code="cluster_not_found")
    return cluster


class _SecretCache:
    """Secret hash -> cluster id, for a short while: authentication runs on every request.
    Bounded LRU (evicts, never refuses); entries are positive only, so a new cluster works at once."""

    def __init__(self, ttl: float = 30.0, size: int = 10_000):
        self._ttl, self._size = ttl, size
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < time.monotonic():
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + self._ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_secrets = _SecretCache()


def cluster_for_secret(secret: str) -> str | None:
    """The id of the cluster this API secret belongs to, or None."""
    digest = ids.secret_hash(secret)
    cached = _secrets.get(digest)
    if cached is not None:
        return cached
    row = db.unit_of_work(lambda: Cluster.select(Cluster.id).where(Cluster.api_secret_hash == digest).first(),
                         transaction=False, idempotent=True)
    if row is None:
        return None
    _secrets.put(digest, row.id)
    return row.id


def get_settings(cluster_id: str) -> dict:
    cluster = db.unit_of_work(lambda: get_cluster(cluster_id))
    return {"predictiveRetriesEnabled": bool(cluster.predictive_retries_enabled),
            "cloudEnabled": bool(cluster.cloud_enabled)}


def put_settings(cluster_id: str, changes: dict) -> dict:
    fields = {"predictiveRetriesEnabled": Cluster.predictive_retries_enabled, "cloudEnabled": Cluster.cloud_enabled}

    def tx():
        get_cluster(cluster_id)
        update = {fields[k]: bool(v) for k, v in changes.items() if k in fields}
        if update:
            Cluster.update(update).where(Cluster.id == cluster_id).execute()

    db.unit_of_work(tx)
    return get_settings(cluster_id)


def _definition(service: Service) -> dict:
    if not service.definition:
        return {"name": service.name, "functions": []}
    return json.loads(service.definition)


def job_summary(job: Job) -> dict:
    """A job in a list (the cluster view, a service's jobs, job admin's list): `status` is its state."""
    return {"id": job.id, "service": job.service, "targetFn": job.target_fn, "status": job.status,
            "resultType": job.result_type, "attempt": job.attempt, "attemptsAllowed": job.attempts_allowed,
            "createdAt": iso(job.created_at), "resultedAt": iso(job.resulted_at),
            "functionExecutionTime": job.execution_time_ms, "machineId": job.machine_id, "reason": job.reason}


SUMMARY_FIELDS = (Job.seq, Job.id, Job.service, Job.target_fn, Job.status, Job.result_type, Job.attempt,
                  Job.attempts_allowed, Job.created_at, Job.resulted_at, Job.execution_time_ms, Job.machine_id,
                  Job.reason)


def cluster_details(cluster_id: str, limit: int = 100, machine_timeout_seconds: float = 90.0) -> dict:
    """The cluster, and at most `limit` of each list, newest first: machines (workers: machines
    that polled for jobs; callers are none) heard from in the last hour, jobs, service definitions
    (most recently polled first). `counts` says how many machines and definitions there are in all
    (a cluster may have many: the lists must stay small). `workers`: per service, the machines that
    polled it within the machine timeout."""
    workers = machines_.live_workers(cluster_id, machine_timeout_seconds)

    def tx():
        cluster = get_cluster(cluster_id)
        since = utcnow() - dt.timedelta(hours=1)
        # A machine row made by an older release for a caller stays out: only workers are listed.
        polled = Worker.select(Worker.pk).where((Worker.cluster_id == Machine.cluster_id)
                                                & (Worker.machine_id == Machine.id))
        recent = Machine.select().where((Machine.cluster_id == cluster_id) & (Machine.last_ping_at >= since)
                                        & peewee.fn.EXISTS(polled))
        machines = recent.order_by(Machine.last_ping_at.desc(), Machine.id).limit(limit)
        jobs = (Job.select(*SUMMARY_FIELDS).where(Job.cluster_id == cluster_id)
                .order_by(Job.seq.desc()).limit(limit))
        known = Service.select().where(Service.cluster_id == cluster_id)
        services = known.order_by(Service.updated_at.desc(), Service.name).limit(limit)
        return {
            **_public(cluster),
            "machines": [{"id": m.id, "ip": m.ip, "status": m.status, "deploymentId": m.deployment_id,
                          "lastPingAt": iso(m.last_ping_at)} for m in machines],
            "jobs": [job_summary(j) for j in jobs],
            "definitions": [_definition(s) for s in services],
            "workers": workers,
            "limit": limit,
            "counts": {"machines": recent.count(), "definitions": known.count()},
        }

    return db.unit_of_work(tx)


def service_details(cluster_id: str, service: str, job_limit: int = 100) -> dict:
    def tx():
        get_cluster(cluster_id)
        row = Service.get_or_none((Service.cluster_id == cluster_id) & (Service.name == service))
        if row is None:
            raise NotFound(f"service {service!r} has never been seen in cluster {cluster_id!r}",
                           {"clusterId": cluster_id, "serviceName": service}, code="service_not_found")
        jobs = (Job.select(*SUMMARY_FIELDS).where((Job.cluster_id == cluster_id) & (Job.service == service))
                .order_by(Job.seq.desc()).limit(job_limit))
        return {"definition": _definition(row), "jobs": [job_summary(j) for j in jobs]}

    return db.unit_of_work(tx)


def activity(cluster_id: str, *, job_id: str | None = None, limit: int = 100, before: int | None = None) -> dict:
    """Newest events first, a page at a time (`before` is the `next` cursor of the previous page)."""

    def tx():
        get_cluster(cluster_id)
        query = Event.select().where(Event.cluster_id == cluster_id)
        if job_id:
            query = query.where(Event.job_id == job_id)
        if before:
            query = query.where(Event.seq < before)
        rows = list(query.order_by(Event.seq.desc()).limit(limit + 1))
        page = rows[:limit]
        return {
            "events": [{"type": e.type, "jobId": e.job_id, "machineId": e.machine_id, "service": e.service,
                        "deploymentId": e.deployment_id, "timestamp": iso(e.created_at),
                        "meta": json.loads(e.meta) if e.meta else {}} for e in page],
            "next": page[-1].seq if len(rows) > limit else None,
        }

    return db.unit_of_work(tx)
