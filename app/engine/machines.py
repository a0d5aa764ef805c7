"""Machines (who polls, and when it last spoke), workers (which machine polls which service) and
service definitions (what they offer).

A machine is what polls for jobs: a poll makes (or refreshes) its machine row and its worker row
for the service. Any other request with `x-machine-id` only refreshes a machine that exists (a
worker busy running a job still calls and posts results, and must not be taken for silent); a
caller that never polls never becomes a machine.
"""
from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import json
import threading
import time

import peewee

from .. import db
from ..models import Service, Worker, utcnow
from . import controls, heartbeats, statements
from .signals import SERVICES_TOPIC, notify_in_transaction


class _Throttle:
    """Remembers when this process last wrote something, to skip writes that change nothing.

    `take` claims the write: of many concurrent requests from one machine, only the first writes
    (checking and recording separately let every request in flight write the same ping)."""

    def __init__(self, max_entries: int = 50_000):
        self._seen: dict[tuple, tuple[float, object]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def take(self, key: tuple, value: object, interval: float) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and last[1] == value and now - last[0] < interval:
                return False
            if len(self._seen) >= self._max:
                self._seen.clear()  # bounded memory; the cost is one extra write per key
            self._seen[key] = (now, value)
            return True

    def value(self, key: tuple) -> object:
        """What was last written for this key (None: nothing this process remembers)."""
        with self._lock:
            last = self._seen.get(key)
            return None if last is None else last[1]

    def mark(self, key: tuple) -> None:
        """Record a write (or a finding) for this key now, whatever was recorded before."""
        with self._lock:
            if len(self._seen) >= self._max:
                self._seen.clear()
            self._seen[key] = (time.monotonic(), None)

    def recent(self, key: tuple, interval: float) -> bool:
        """Whether a write for this key was claimed less than `interval` seconds ago."""
        with self._lock:
            last = self._seen.get(key)
            return last is not None and time.monotonic() - last[0] < interval

    def forget(self, key: tuple) -> None:
        """The claimed write failed: let the next request try again."""
        with self._lock:
            self._seen.pop(key, None)


_pings = _Throttle()
_touches = _Throttle()
_callers = _Throttle()  # ids a touch found to be no machine: asked again only after a while
_workers = _Throttle()
_definitions = _Throttle()


def _interval(machine_timeout_seconds: float) -> float:
    """How often a machine's rows are written per process: four times a machine timeout or more,
    and no more than every 15 s (at the default 90 s timeout). At 5 s, a thousand tenants calling
    every 10 s wrote their machine and worker rows on nearly every poll and result: a fifth of
    the database work of a call (bench/README.md, "Many tenants")."""
    return min(15.0, machine_timeout_seconds / 4)


def ping(cluster_id: str, machine_id: str, *, ip: str | None, deployment_id: str | None,
         machine_timeout_seconds: float) -> None:
    """Record that a machine polled: makes it a machine if it was none. Written at most every
    `_interval` per machine and process, always well within the machine timeout, so a live machine
    is never declared stalled."""
    interval = _interval(machine_timeout_seconds)
    key = (cluster_id, machine_id)
    if not _pings.take(key, None, interval):
        return
    _callers.forget(key)  # a machine now: its other requests refresh it again
    _note(_pings, heartbeats.PING, key, (ip, deployment_id))


def touch(cluster_id: str, machine_id: str, *, ip: str | None, machine_timeout_seconds: float) -> None:
    """Record that a machine spoke (a request other than a poll): refreshes an existing machine,
    never makes one. Throttled as `ping`, and skipped while a ping of it is that fresh.

    A caller is no machine, yet the published SDK sends its x-machine-id on every call: an id the
    update found no machine for is not asked about again for half the machine timeout (a round
    trip per caller every few seconds, for nothing, took pooled connections from a thousand
    tenants' calls). A machine that began polling since then is still refreshed in time: its
    ping clears the mark in this process, and another process asks again before the timeout."""
    interval = _interval(machine_timeout_seconds)
    key = (cluster_id, machine_id)
    if (_pings.recent(key, interval) or _callers.recent(key, machine_timeout_seconds / 2)
            or not _touches.take(key, None, interval)):
        return
    _note(_touches, heartbeats.TOUCH, key, (ip,))  # an id found to be no machine gets the `_callers` mark


def worker_polled(cluster_id: str, service: str, machine_id: str, *, machine_timeout_seconds: float) -> None:
    """Record that this machine polls this service (the workers table), throttled as `ping`; on
    the database's clock, which the live-worker counts compare against."""
    key = (cluster_id, service, machine_id)
    if not _workers.take(key, None, _interval(machine_timeout_seconds)):
        return
    _note(_workers, heartbeats.POLL, key)


def _note(throttle: _Throttle, kind: str, key: tuple, values: tuple = ()) -> None:
    if not writer.note(kind, key, values):
        throttle.forget(key)  # too many pending: the next request of this key tries again


_THROTTLES = {heartbeats.PING: _pings, heartbeats.TOUCH: _touches, heartbeats.POLL: _workers}


def _lost(kind: str, keys: list[tuple]) -> None:
    for key in keys:
        _THROTTLES[kind].forget(key)


def _no_machines(keys: list[tuple]) -> None:
    for key in keys:
        _callers.mark(key)


# Pings, touches and workers' polls are written by a thread of their own (heartbeats.py).
writer = heartbeats.HeartbeatWriter(on_lost=_lost, on_unknown=_no_machines)
atexit.register(writer.close)


def flush() -> None:
    """Write this process's pending heartbeats: for readers that must see them."""
    writer.flush()


def live_workers(cluster_id: str, machine_timeout_seconds: float) -> list[dict]:
    """Per service of this cluster, the workers that polled it within the machine timeout:
    [{service, liveWorkers, lastPollAt}], by service name (services with none are left out).
    Served by the workers (cluster_id, service, machine_id) index; judged on the database's clock."""
    flush()
    cutoff = statements.database_now() - dt.timedelta(seconds=machine_timeout_seconds)

    def read():
        query = (Worker.select(Worker.service, peewee.fn.COUNT(Worker.pk).alias("live"),
                               peewee.fn.MAX(Worker.last_poll_at).alias("last"))
                 .where((Worker.cluster_id == cluster_id) & (Worker.last_poll_at >= cutoff))
                 .group_by(Worker.service).order_by(Worker.service))
        return [{"service": row.service, "liveWorkers": row.live, "lastPollAt": _iso(row.last)} for row in query]

    return db.unit_of_work(read, transaction=False, idempotent=True)


def service_liveness(cluster_id: str, service: str, machine_timeout_seconds: float) -> dict:
    """{service, liveWorkers, lastPollAt} of one service: how many machines polled it within the
    machine timeout, and when any last did (None: never, or long enough ago to be pruned)."""
    flush()
    cutoff = statements.database_now() - dt.timedelta(seconds=machine_timeout_seconds)
    live = peewee.fn.COALESCE(peewee.fn.SUM(peewee.Case(None, [(Worker.last_poll_at >= cutoff, 1)], 0)), 0)

    def read():
        return (Worker.select(live.alias("live"), peewee.fn.MAX(Worker.last_poll_at).alias("last"))
                .where((Worker.cluster_id == cluster_id) & (Worker.service == service)).tuples().first())

    count, last = db.unit_of_work(read, transaction=False, idempotent=True)
    return {"service": service, "liveWorkers": int(count or 0), "lastPollAt": _iso(last)}


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands MAX() of a DATETIME back as its text
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.timezone.utc).isoformat().replace("+00:00", "Z")


def register_service(cluster_id: str, service: str, functions: list[dict] | None,
                     concurrency: int | None = None) -> None:
    """Store the service's definition as its workers send it, when it changed.

    A poll without a function list keeps the stored definition instead of wiping it. The
    definition shows the concurrency limits the poll declared (each poll's own are what its claim
    enforces: limits.py); the service's own limit rides beside its functions.
    """
    if functions is None:
        definition = None
    else:
        shown = {"name": service, "functions": functions}
        if concurrency is not None:
            shown["concurrency"] = concurrency
        definition = json.dumps(shown, sort_keys=True)
    digest = hashlib.sha256((definition or "").encode()).hexdigest()
    key = (cluster_id, service)
    # New to this process (its first sight, or another definition than it last wrote): it may
    # change what is stored, which every process's creates have cached (controls.py).
    new_here = definition is not None and _definitions.value(key) != digest
    if not _definitions.take(key, digest, 60.0):
        return
    now = utcnow()

    def tx():
        changed = new_here and Service.select(Service.definition_hash).where(
            (Service.cluster_id == cluster_id) & (Service.name == service)).scalar() != digest
        update = {Service.updated_at: now}
        if definition is not None:
            update.update({Service.definition: definition, Service.definition_hash: digest})
        (Service.insert(cluster_id=cluster_id, name=service, definition=definition,
                        definition_hash=digest if definition else None, updated_at=now)
         .on_conflict(conflict_target=[Service.cluster_id, Service.name], update=update)
         .execute())
        if changed:
            notify_in_transaction([SERVICES_TOPIC])

    # One statement, unless the definition may be new: then the read, the write and the NOTIFY
    # commit together (the NOTIFY reaches the others with the new row, never before it).
    _write_or_forget(_definitions, key, tx, transaction=new_here)
    if functions is not None:  # this process's creates see the functions' back-off defaults at once
        controls.function_defaults.put(cluster_id, service, controls.policies_of(functions))


def _write_or_forget(throttle: _Throttle, key: tuple, tx, transaction: bool = False):
    try:
        return db.unit_of_work(tx, transaction=transaction, idempotent=True)  # an upsert: running it twice is running it once
    except BaseException:
        throttle.forget(key)
        raise
