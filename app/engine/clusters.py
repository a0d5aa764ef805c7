"""Clusters: creation, credentials (rotation with a grace), settings, service schemas, and the views
the management API shows. Deletion is engine/cluster_deletion.py.

A cluster's secret is cached per process (hash -> cluster id, `_SecretCache`) because every
worker and caller request authenticates by it. A rotation or a deletion must still take effect on
every process of every replica at once, so each one NOTIFYs CREDENTIALS_TOPIC (signals.py), on
which every process forgets every cached secret, as it does whenever its listener reconnects;
a process with no listener (SQLite, whose gunicorn workers share the file; PostgreSQL while
reconnecting) instead compares a credentials generation read from `clusters` at most every
GENERATION_CHECK_SECONDS. An entry for a previous secret expires with its grace.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import OrderedDict

import peewee

from .. import db, sealing
from ..errors import NotFound, ValidationFailed
from ..models import Cluster, Event, Job, Machine, Service, Worker, utcnow
from . import ids, machines as machines_
from .signals import CREDENTIALS_TOPIC, hub, notify_in_transaction


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
    """The cluster as listed: its current secret, and during a grace when the previous one stops
    (never the previous secret itself)."""
    shown = {"id": cluster.id, "apiSecret": _secret(cluster), "createdAt": iso(cluster.created_at),
             "description": cluster.description}
    if cluster.secret_rotated_at is not None:
        shown["secretRotatedAt"] = iso(cluster.secret_rotated_at)
    if cluster.previous_secret_expires_at is not None and cluster.previous_secret_expires_at > utcnow():
        shown["previousSecretExpiresAt"] = iso(cluster.previous_secret_expires_at)
    return shown


def create_cluster(description: str | None = None) -> dict:
    secret = ids.api_secret()
    token, key = _box.seal(secret)
    cluster = db.unit_of_work(lambda: Cluster.create(
        id=ids.cluster_id(), api_secret_sealed=token, api_secret_key=key, api_secret_hash=ids.secret_hash(secret),
        description=description, created_at=utcnow()))
    return _public(cluster)


def list_clusters() -> list[dict]:
    return db.unit_of_work(lambda: [_public(c) for c in Cluster.select().where(Cluster.deleted_at.is_null())
                                    .order_by(Cluster.created_at, Cluster.id)])


def describe_cluster(cluster_id: str) -> dict:
    """One live cluster as listed (NotFound if it does not exist or is being deleted)."""
    return db.unit_of_work(lambda: _public(get_cluster(cluster_id)), transaction=False, idempotent=True)


def get_cluster(cluster_id: str) -> Cluster:
    """The cluster, unless it does not exist or is being deleted (NotFound)."""
    cluster = Cluster.get_or_none((Cluster.id == cluster_id) & Cluster.deleted_at.is_null())
    if cluster is None:
        raise NotFound(f"cluster {cluster_id!r} does not exist", {"clusterId": cluster_id}, code="cluster_not_found")
    return cluster


class _SecretCache:
    """Secret hash -> cluster id, for a short while: authentication runs on every request.
    Bounded LRU (evicts, never refuses); entries are positive only, so a new cluster works at once.
    `clear()` starts a new epoch: a lookup that began before it does not put what it read."""

    def __init__(self, ttl: float = 30.0, size: int = 10_000):
        self._ttl, self._size = ttl, size
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.epoch = 0

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < time.monotonic():
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: str, value: str, ttl: float | None = None, epoch: int | None = None) -> None:
        """Keep for `ttl` seconds (at most the cache's own), unless cleared since `epoch`."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            self._items[key] = (time.monotonic() + min(self._ttl, self._ttl if ttl is None else ttl), value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.epoch += 1


_secrets = _SecretCache()
hub.on_topic(CREDENTIALS_TOPIC, _secrets.clear)  # another process rotated or deleted; or a listener reconnect

GENERATION_CHECK_SECONDS = 0.5


class _Generation:
    """Without a notification listener in this process: what changes whenever a secret is rotated
    or a cluster marked deleted or created, read at most every GENERATION_CHECK_SECONDS (one
    aggregate over `clusters`, a small table); a change clears the secret cache."""

    def __init__(self, interval: float = GENERATION_CHECK_SECONDS) -> None:
        self.interval = interval
        self._next = 0.0
        self._seen: tuple | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        if hub.listening or time.monotonic() < self._next or not self._lock.acquire(blocking=False):
            return
        try:
            hub.ensure_listening()  # PostgreSQL: from then on, notifications say it at once
            seen = db.unit_of_work(lambda: Cluster.select(
                peewee.fn.COUNT(Cluster.id), peewee.fn.COUNT(Cluster.deleted_at),
                peewee.fn.MAX(Cluster.secret_rotated_at)).tuples().first(), transaction=False, idempotent=True)
            if seen != self._seen:
                if self._seen is not None:
                    _secrets.clear()
                self._seen = seen
            self._next = time.monotonic() + self.interval
        finally:
            self._lock.release()


_generation = _Generation()


def forget_secrets() -> None:
    """This process: forget every cached secret (after a rotation or a deletion it made)."""
    _secrets.clear()


def credentials_changed() -> None:
    """In the transaction that rotates a secret or marks a cluster deleted: every other process
    forgets its cached secrets when it commits (PostgreSQL); the caller clears its own after."""
    notify_in_transaction([CREDENTIALS_TOPIC])


def cluster_for_secret(secret: str) -> str | None:
    """The id of the cluster this API secret belongs to (its current secret, or its previous one
    until the grace ends), or None; a cluster being deleted has none."""
    digest = ids.secret_hash(secret)
    _generation.check()
    cached = _secrets.get(digest)
    if cached is not None:
        return cached
    epoch, now = _secrets.epoch, utcnow()
    row = db.unit_of_work(lambda: Cluster.select(Cluster.id, Cluster.api_secret_hash, Cluster.previous_secret_expires_at)
                          .where(((Cluster.api_secret_hash == digest)
                                  | ((Cluster.previous_secret_hash == digest)
                                     & (Cluster.previous_secret_expires_at > now)))
                                 & Cluster.deleted_at.is_null()).first(),
                          transaction=False, idempotent=True)
    if row is None:
        return None
    ttl = None if row.api_secret_hash == digest else (row.previous_secret_expires_at - now).total_seconds()
    _secrets.put(digest, row.id, ttl=ttl, epoch=epoch)
    return row.id


# --- secret rotation ------------------------------------------------------------------------------

MAX_GRACE_SECONDS = 7 * 86400
DEFAULT_GRACE_SECONDS = 3600


def rotate_secret(cluster_id: str, grace_seconds: int = DEFAULT_GRACE_SECONDS) -> dict:
    """A new API secret for the cluster; the current one keeps working for `grace_seconds` (0:
    it stops at once). A previous secret still in its grace stops at once: only the secret being
    replaced gets a grace. Serialised per cluster, so two rotations at once chain."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ValueError(f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}")
    secret = ids.api_secret()
    token, key = _box.seal(secret)

    def tx() -> Cluster:
        db.dialect.lock_key(f"differential:cluster:{cluster_id}")
        cluster = get_cluster(cluster_id)
        now = utcnow()
        Cluster.update(api_secret=None, api_secret_sealed=token, api_secret_key=key,
                       api_secret_hash=ids.secret_hash(secret),
                       previous_secret_hash=cluster.api_secret_hash if grace_seconds else None,
                       previous_secret_expires_at=now + dt.timedelta(seconds=grace_seconds) if grace_seconds else None,
                       secret_rotated_at=now).where(Cluster.id == cluster_id).execute()
        credentials_changed()
        return Cluster.get(Cluster.id == cluster_id)

    cluster = db.unit_of_work(tx)
    forget_secrets()
    # When the replaced secret stops: the end of its grace, or now (grace 0).
    return {**_public(cluster), "graceSeconds": grace_seconds,
            "previousSecretExpiresAt": iso(cluster.previous_secret_expires_at or cluster.secret_rotated_at)}


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


# --- service schemas: what an operator puts (PUT .../schema), apart from the workers' definition ---

MAX_SCHEMA_BYTES = 64 * 1024


def schema_text(value) -> str:
    """The stored text of a schema given as JSON text or as a JSON object (or a boolean, which
    JSON Schema allows too); ValidationFailed naming `schema` otherwise, or when over the cap."""
    def refuse(message: str) -> ValidationFailed:
        return ValidationFailed(f"invalid body: schema {message}",
                                {"fields": [{"field": "schema", "message": message}]})

    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise refuse(f"must be valid JSON ({exc})") from None
    else:
        parsed = value
    if not isinstance(parsed, (dict, bool)):
        raise refuse("must be a JSON object (a JSON Schema), or true or false")
    text = json.dumps(parsed, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise refuse(f"must be at most {MAX_SCHEMA_BYTES} bytes as JSON")
    return text


def put_service_schema(cluster_id: str, service: str, schema) -> dict:
    """Store a service's schema, creating the service if no worker polled it yet (its definition
    then shows no functions). The definition workers send is left as it is, and a poll never
    touches the schema."""
    text = schema_text(schema)

    def tx() -> None:
        get_cluster(cluster_id)
        (Service.insert(cluster_id=cluster_id, name=service, definition=None, definition_hash=None,
                        json_schema=text, updated_at=utcnow())
         .on_conflict(conflict_target=[Service.cluster_id, Service.name], update={Service.json_schema: text})
         .execute())

    db.unit_of_work(tx)
    return {"service": service, "schema": json.loads(text)}


def get_service_schema(cluster_id: str, service: str) -> dict:
    """The service's schema, None if nobody put one; NotFound if the service was never seen."""
    def tx() -> dict:
        get_cluster(cluster_id)
        row = Service.get_or_none((Service.cluster_id == cluster_id) & (Service.name == service))
        if row is None:
            raise NotFound(f"service {service!r} has never been seen in cluster {cluster_id!r}",
                           {"clusterId": cluster_id, "serviceName": service}, code="service_not_found")
        return {"service": service, "schema": json.loads(row.json_schema) if row.json_schema else None}

    return db.unit_of_work(tx)


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
            "deployments": _deployments(cluster_id, limit),
            "limit": limit,
            "counts": {"machines": recent.count(), "definitions": known.count()},
        }

    return db.unit_of_work(tx)


def _deployments(cluster_id: str, limit: int) -> list[dict]:
    from . import deployments  # it builds on this module

    return deployments.list_for_cluster(cluster_id, limit)


def service_details(cluster_id: str, service: str, job_limit: int = 100) -> dict:
    def tx():
        get_cluster(cluster_id)
        row = Service.get_or_none((Service.cluster_id == cluster_id) & (Service.name == service))
        if row is None:
            raise NotFound(f"service {service!r} has never been seen in cluster {cluster_id!r}",
                           {"clusterId": cluster_id, "serviceName": service}, code="service_not_found")
        jobs = (Job.select(*SUMMARY_FIELDS).where((Job.cluster_id == cluster_id) & (Job.service == service))
                .order_by(Job.seq.desc()).limit(job_limit))
        return {"definition": _definition(row), "jobs": [job_summary(j) for j in jobs],
                "schema": json.loads(row.json_schema) if row.json_schema else None}

    return db.unit_of_work(tx)


def _older_than(cluster_id: str, seq: int) -> peewee.Expression:
    """Events after the cursor's event in activity()'s order. A cursor whose event was pruned since
    (the oldest go first) goes on from its seq."""
    at = Event.select(Event.created_at).where((Event.cluster_id == cluster_id) & (Event.seq == seq)).scalar()
    if at is None:
        return Event.seq < seq
    # A row-value comparison, so both databases read it as a range of the index, not a filter.
    return (Event.created_at <= at) & (peewee.Tuple(Event.created_at, Event.seq) < peewee.Tuple(at, seq))


def activity(cluster_id: str, *, job_id: str | None = None, limit: int = 100, before: int | None = None) -> dict:
    """Newest events first, a page at a time (`before` is the `next` cursor of the previous page).

    "Newest" is when it happened (created_at, then seq), not when its row was written: each process
    buffers its events for up to half a second, so a job's jobCreated written by one process can land
    after the jobCancelled that another process wrote at once (observability/events.py)."""

    def tx():
        get_cluster(cluster_id)
        query = Event.select().where(Event.cluster_id == cluster_id)
        if job_id:
            query = query.where(Event.job_id == job_id)
        if before:
            query = query.where(_older_than(cluster_id, before))
        rows = list(query.order_by(Event.created_at.desc(), Event.seq.desc()).limit(limit + 1))
        page = rows[:limit]
        return {
            "events": [{"type": e.type, "jobId": e.job_id, "machineId": e.machine_id, "service": e.service,
                        "deploymentId": e.deployment_id, "timestamp": iso(e.created_at),
                        "meta": json.loads(e.meta) if e.meta else {}} for e in page],
            "next": page[-1].seq if len(rows) > limit else None,
        }

    return db.unit_of_work(tx)
